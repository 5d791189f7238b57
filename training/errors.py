"""Errors of the training package (all subclass :class:`viewer.core.errors.SlicewiseError`)."""

from __future__ import annotations

from viewer.core.errors import SlicewiseError


class TrainingError(SlicewiseError):
    """Base of the errors the training package raises on purpose."""


class NoDicomFoundError(TrainingError):
    """The data folder holds no readable greyscale DICOM series."""


class LabelFormatError(TrainingError):
    """The label CSV is not in the RSNA 2019 format (``ID,Label`` with ``ID_<id>_<subtype>`` rows)."""


class LabelMatchError(TrainingError):
    """The labels match no slice of the DICOM data (wrong folder or wrong CSV)."""


class CheckpointError(TrainingError):
    """A checkpoint is missing, unreadable or lacks its config."""


class ExportParityError(TrainingError):
    """The exported ONNX model disagrees with PyTorch, or its GRU nodes are not exported as expected."""


class DecoderMismatchError(TrainingError):
    """A map decoder was trained on another CNN than the model it is to be attached to (its fingerprint or
    its maps differ)."""
