"""Slicewise training package: synthetic head-CT studies, CNN-GRU training and ONNX export (PyTorch)."""

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
