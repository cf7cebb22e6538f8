"""Pretrained weights: how much of a model a checkpoint filled (``coverage``)."""
