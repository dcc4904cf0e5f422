"""Datasets for vjax: the embedded procedural motion dataset (``motion``, ``motion_builder``)."""
