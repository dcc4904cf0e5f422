"""What vjax's TFDS builders do to the ``DatasetInfo`` they describe themselves with."""

from __future__ import annotations

import tensorflow_datasets as tfds


def local_only(info: tfds.core.DatasetInfo) -> tfds.core.DatasetInfo:
    """``info`` without TFDS's look-up of a new dataset's statistics on its GCS bucket, which
    a builder does when its folder holds no prepared data yet: vjax's datasets are never
    there, and TFDS 4.9 makes a temporary folder before it asks (``tempfile.mkdtemp("tfds")``)
    and never removes it, so every fresh ``vjax prepare`` (and every test that prepared data)
    left an empty ``/tmp/tmpXXXXXXXXtfds`` behind.

    >>> return local_only(self.dataset_info_from_configs(...))   # in a builder's _info
    """
    info.initialize_from_bucket = lambda: None  # the instance's, not the class's
    return info
