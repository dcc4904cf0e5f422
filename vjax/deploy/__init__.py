"""Deployment: a trained model out of vjax, smaller and in other runtimes.

* :mod:`vjax.deploy.export`: the inference function (uint8 clip in, logits and probabilities
  out, normalisation inside) as StableHLO, ONNX, TF SavedModel and TFLite (``vjax export``).
* :mod:`vjax.deploy.tf_stablehlo`: the SavedModel/TFLite StableHLO in a version the installed
  TensorFlow reads (newer jax writes newer StableHLO than TensorFlow knows).
* :mod:`vjax.deploy.signature`: ``signature.json``, how to feed an exported model.
* :mod:`vjax.deploy.runtime`: runs an exported folder in its own runtime (``vjax predict``).
* :mod:`vjax.deploy.quantize`: int8 post-training quantization and QAT with qwix
  (``vjax quantize``, ``train.quantization``).
* :mod:`vjax.deploy.onnx_int8`: the ONNX file of an int8 folder, in onnxruntime's int8 ops.

>>> from vjax.deploy.export import export_model
>>> export_model("runs/demo/vivit", "exported/vivit", ["stablehlo", "onnx"])
>>> from vjax.deploy.runtime import load_exported
>>> logits, probs = load_exported("exported/vivit")(video_uint8)
"""
