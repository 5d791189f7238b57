"""The Qt layer: PySide6 widgets and pyqtgraph items over :mod:`viewer.core`."""
