"""DICOM scanning, grouping, slice sorting and lazy pixel decoding (no Qt).

Public API (import from the modules; this package imports nothing heavy):

- :func:`viewer.core.dicom.loader.load_paths` ``(paths, *, progress=None, cancel=None, whole_volume=False,
  on_provisional=None) -> LoadReport`` (``whole_volume``: plain slices are read during the scan,
  ``report.preread``)
- :class:`viewer.core.dicom.volume.StackVolume` ``(stack, *, cache_bytes=SLICE_CACHE_BYTES, preread=None)``:
  ``dtype`` (int16 or float32, from the headers: ``pixels.modality_dtype``), ``get_slice``, ``cached``,
  ``request_slice`` / ``nearest_cached`` / ``needs_decoder`` (for a GUI that never waits), ``prefetch``,
  ``load_all``, ``header_window``, ``default_window``, ``invert_display``, ``bad_slices``, ``close``
  (also a context manager)
- :func:`viewer.core.dicom.pixels.decode_frame` ``(info, *, archives=None, data=None, dtype=float32)`` and
  :func:`viewer.core.dicom.pixels.decode_file` ``(path, frame=0) -> ndarray`` (typed errors)
- :func:`viewer.core.dicom.grouping.sort_slices` ``(slices) -> (sorted, method, warnings, spacing)``
- :func:`viewer.core.dicom.pool.warm_pool` / ``shutdown_pool``: the shared decoder processes

Module map: ``files`` (open regular files only), ``sources`` (files, folders, zip, gzip, DICOMDIR),
``header`` (sniff + header-only reads, with ``rawheader`` the fast reader for the common file),
``duplicates`` (files sharing a SOP Instance UID),
``grouping`` (Patient -> Study -> Series -> Stack, sorting, warnings), ``pixels`` (one frame + guards),
``pool`` (process pool, memory budget), ``volume`` (StackVolume), ``loader`` (load_paths), ``preread``
(plain slices read during a whole-volume scan, taken over by ``load_all``), ``model``.
"""
