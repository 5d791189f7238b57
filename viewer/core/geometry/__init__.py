"""Patient-space geometry of stacks and planes (Qt-free): affines, orientation letters, planes, reslicing.

Coordinates are DICOM patient coordinates (LPS, mm). Voxel coordinates are ``(k, j, i)`` = (slice,
row, column) indices into a ``(slices, rows, columns)`` volume, matching ``StackVolume.load_all``.
"""
