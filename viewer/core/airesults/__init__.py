"""AI results as standard DICOM objects (IHE AI Results): the AI Result SR and the Key Object Selection.

Qt-free: ``slicewise predict --dicom-out`` and the viewer's Analyze use the same builders.
"""
