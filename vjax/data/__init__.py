"""Datasets and the input pipeline.

* ``motion`` / ``motion_builder``: the embedded procedural motion dataset (``vjax_motion``)
  and its audio-visual variant (``vjax_av_motion``: a motion and a tone pattern per clip).
* ``audio``: sound tracks (PyAV decoding and resampling), the audio window a clip covers,
  log-mel spectrograms, SpecAugment (``config.input.audio``).
* ``video_io``: PyAV decoding (target fps, short side, bad-file reasons) and encoding.
* ``manifests`` / ``annotations``: which videos a folder, CSV/JSON manifest or official
  annotation files (Kinetics, SSv2, UCF101, HMDB51, Epic-Kitchens-100, Charades) list.
* ``video_prepare`` / ``video_builder``: parallel decoding into TFDS ArrayRecord builders of
  JPEG frames (``video_folder``, ``vjax_kinetics``, ``vjax_ssv2``, ``vjax_ucf101``,
  ``vjax_hmdb51``, ``vjax_epic_kitchens``, ``vjax_charades``, ``vjax_vggsound``,
  ``vjax_kinetics_sounds``), optionally with each video's sound, and a report of skipped files;
  ``prepare``: ``vjax prepare``.
* ``sampling`` / ``augment`` / ``transforms``: clips and augmentation from ``config.input``.
* ``pipeline``: step-indexed, resumable batches; ``loaders``: this process's input by step,
  batch or video (the multi-view test's views), here or in loader processes.
* ``datasets``: ``config.dataset.name`` -> a prepared builder.
"""
