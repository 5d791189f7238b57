"""Reading others' results: DICOM SEG, Parametric Map, SR (TID 1500 and other content trees) and
presentation states (GSPS) found beside the images of an opened folder.

The scan (:mod:`viewer.core.dicom.header`) sets such files aside as
:class:`~viewer.core.dicom.model.ResultFile` instead of loading them as images or skipping them;
:func:`viewer.core.foreign.read.read_result_files` parses them (in the helper process of
:mod:`viewer.core.airesults.process`) into the plain dataclasses of :mod:`viewer.core.foreign.model`,
and :mod:`viewer.core.foreign.match` places them on the loaded slices.
"""
