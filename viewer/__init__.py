"""Slicewise: a desktop DICOM viewer with per-slice CNN-GRU predictions.

Research use only. Not a medical device. Not for diagnostic use.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
