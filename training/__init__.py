"""Slicewise training package: synthetic head-CT studies, CNN-GRU training and ONNX export (PyTorch)."""
