"""DICOM scanning, grouping, slice sorting and lazy pixel decoding (no Qt)."""
