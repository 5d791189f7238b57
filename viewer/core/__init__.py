"""Qt-free core: DICOM scanning and decoding, windowing, preprocessing, inference and review storage.

Nothing under ``viewer.core`` may import Qt, pyqtgraph, superqt or torch (enforced by import-linter).
"""
