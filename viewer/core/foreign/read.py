"""Read the result objects a scan set aside (run in the helper process: pixel unpacking and highdicom's
colour conversion stay off the viewer's GUI thread).

Every object is read on its own: a malformed one becomes a :class:`ResultFailure` (code
``E-RESULT-MALFORMED`` and the reason), never an exception that stops the others or the load."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

from viewer.core.codes import Code
from viewer.core.dicom.model import ResultFile
from viewer.core.errors import ResultObjectError, SlicewiseError
from viewer.core.foreign.gsps import read_gsps
from viewer.core.foreign.kinds import ResultKind, result_kind
from viewer.core.foreign.model import ForeignObject, ResultFailure
from viewer.core.foreign.seg import read_seg
from viewer.core.foreign.sr import read_sr

logger = logging.getLogger(__name__)

MAX_MASK_VALUES = 2**28  # frames x rows x columns a SEG may declare (256 M values, ~256 MB as bool)


def read_result_file(file: ResultFile) -> ForeignObject:
    """Parse one result object; :class:`ResultObjectError` when it is malformed."""
    from pydicom import dcmread

    from viewer.core.dicom.sources import read_source_bytes

    if file.source is None:
        raise ResultObjectError("No source recorded for the result object")
    kind = result_kind(file.sop_class_uid)
    data = read_source_bytes(file.source)
    pixels = kind in (ResultKind.SEG, ResultKind.PARAMETRIC_MAP)
    try:
        ds = dcmread(io.BytesIO(data), force=True, stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise ResultObjectError(f"The dataset cannot be parsed ({type(exc).__name__})") from exc
    if pixels:
        try:
            values = int(ds.get("NumberOfFrames", 1) or 1) * int(ds.Rows) * int(ds.Columns)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ResultObjectError("Rows, Columns or NumberOfFrames missing or not numbers") from exc
        if values > MAX_MASK_VALUES:
            raise ResultObjectError(f"{values} mask values declared (limit {MAX_MASK_VALUES})")
        return read_seg(ds)
    if kind is ResultKind.PRESENTATION_STATE:
        return read_gsps(ds)
    return read_sr(ds)


def read_result_files(files: Sequence[ResultFile]) -> list[ForeignObject | ResultFailure]:
    """Each file's parsed object, or why it could not be read (in the order given)."""
    out: list[ForeignObject | ResultFailure] = []
    for file in files:
        kind = result_kind(file.sop_class_uid) or ResultKind.SR
        name = file.source.display_name if file.source is not None else file.path
        try:
            out.append(read_result_file(file))
        except (SlicewiseError, OSError) as exc:
            out.append(ResultFailure(name, kind, str(Code.RESULT_MALFORMED), str(exc)))
        except Exception as exc:  # the last line of defence: a reader bug must not end the others
            logger.warning("Result object reader failed unexpectedly: %s", type(exc).__name__)
            out.append(
                ResultFailure(name, kind, str(Code.RESULT_MALFORMED), f"Unreadable ({type(exc).__name__})")
            )
    return out
