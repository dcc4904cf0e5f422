"""Every metric and every evaluation, in one place that ``train.py``, ``vjax eval``, the demo
and ``vjax predict`` share.

* ``metrics``: NumPy metrics of scores against labels: top-k, per-class precision / recall /
  F1 with macro and weighted averages, confusion matrix and most confused pairs, calibration
  (ECE and reliability bins), mAP for multi-label data (video- and frame-level), multi-task.
* ``scoring``: scoring a split, one view per example or the multi-view test
  (clips x crops pooled per video), multi-host aware; then the metrics.
* ``report``: per-class values by class name, the printed table, TensorBoard scalars, the
  ``eval_<split>_step<N>.json`` file.
* ``plots``: confusion matrix, per-class F1, reliability diagram, PR curves (PNGs).
* ``compare``: ``vjax compare RUN_A RUN_B``.

>>> from vjax.evaluate.metrics import classification_metrics
>>> classification_metrics(scores, labels)["macro"]["f1"]
"""
