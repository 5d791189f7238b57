"""One small exception hierarchy. Messages say which file and what is wrong, never patient identifiers."""

from __future__ import annotations


class SlicewiseError(Exception):
    """Base of every error the core raises on purpose."""


class DicomError(SlicewiseError):
    """A DICOM file or series could not be read as asked."""


class NotDicomError(DicomError):
    """The file is not DICOM (no 'DICM' preamble and no plausible leading tag)."""


class NotRegularFileError(DicomError):
    """A named pipe, socket or device: never opened (opening a FIFO blocks, reading a device never ends)."""


class ImageTooLargeError(DicomError):
    """The header declares more pixel bytes than the file holds or than the memory budget allows."""


class PixelDecodeError(DicomError):
    """The pixel data is truncated, corrupt or in a transfer syntax no installed plugin can decode."""


class PackDamagedError(DicomError):
    """A pack file of the PACS cache (:mod:`viewer.core.dicom.pack`) or its index is damaged: no marker,
    a member outside the file, a line that fails its checksum."""


class ResultObjectError(DicomError):
    """Another system's result object (SEG, Parametric Map, SR, presentation state) is malformed: a
    missing or inconsistent attribute, pixel data that does not match its frames."""


class ModelError(SlicewiseError):
    """An ONNX model cannot be used."""


class ModelContractError(ModelError):
    """The model's inputs, outputs or metadata do not follow the Slicewise ONNX contract."""


class StackNotSupportedError(ModelError):
    """The model cannot take this stack (modality, too few slices, colour images)."""


class InferenceCancelled(SlicewiseError):
    """Inference was cancelled by the user."""


class ReviewStoreError(SlicewiseError):
    """The review-session database cannot be opened or written."""


class SessionLockedError(ReviewStoreError):
    """The session is open for writing in another window or process."""


class LoadCancelled(InferenceCancelled):
    """Loading pixel data was cancelled (an InferenceCancelled, so load-then-infer needs one handler)."""


class GeometryError(SlicewiseError):
    """A stack or plane has no usable patient geometry (missing or degenerate IPP/IOP/PixelSpacing)."""


class ViewerStateError(SlicewiseError):
    """An intent on the viewer state names something that is not there (viewport, stack) or a bad value."""


class PacsError(SlicewiseError):
    """A PACS (DICOMweb or DIMSE) operation failed. Messages name the node (host:port, AE titles),
    never a patient identifier."""


class PacsConfigError(PacsError):
    """A PACS node description is unusable (AE title too long, port out of range, bad URL)."""


class PacsUnreachableError(PacsError):
    """No connection: nothing listens at host:port, the host is unknown, or the connect timed out."""


class PacsAssociationRejectedError(PacsError):
    """The PACS refused the DIMSE association or the operation: the called or calling AE title."""


class PacsAuthenticationError(PacsError):
    """The DICOMweb server refused the credentials (HTTP 401 or 403)."""


class PacsResponseError(PacsError):
    """The server answered with an error status, or with something that is not what was asked."""


class PacsConnectionLostError(PacsResponseError):
    """The connection dropped after the server had started answering (a retrieve resumes after it)."""


class PacsResponseTooLargeError(PacsResponseError):
    """A response (or one instance in it) is bigger than the limit Slicewise accepts."""


class PacsCancelled(InferenceCancelled):
    """A PACS retrieve was cancelled by the user."""


class AiNodeError(SlicewiseError):
    """The AI node (``slicewise listen`` / ``watch``) cannot run: its state folder, queue or settings."""


class MeasurementError(SlicewiseError):
    """A measurement cannot be computed (image not 2D, unknown shape), or the measurement store is
    unreadable."""


class StudySourceError(SlicewiseError):
    """A study's recorded source (local files or a PACS node) is unusable, or the study cannot be had
    from it again: the files are gone, the node is no longer configured, the PACS no longer holds it.
    Messages say which source (kind, node name, how many paths), never a path or a patient value."""
