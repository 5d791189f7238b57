"""Small helpers over pydicom datasets shared by the readers: coded concepts, CIELab colours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from viewer.core.errors import ResultObjectError
from viewer.core.foreign.model import RGB

# Colours for segments without a recommended display colour (colour-blind friendly, distinct on grey)
DEFAULT_COLORS: tuple[RGB, ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (213, 94, 0),
    (204, 121, 167),
    (0, 114, 178),
)


def first_item(ds: Any, keyword: str) -> Any:
    """The first item of sequence ``keyword`` of ``ds``, or None."""
    seq = getattr(ds, keyword, None) if ds is not None else None
    try:
        return seq[0] if seq else None
    except (TypeError, IndexError):
        return None


def meaning(ds: Any, keyword: str) -> str:
    """CodeMeaning of the first item of code sequence ``keyword`` ('' when absent)."""
    item = first_item(ds, keyword)
    return str(getattr(item, "CodeMeaning", "") or "") if item is not None else ""


def code_key(ds: Any, keyword: str) -> tuple[str, str]:
    """(CodingSchemeDesignator, CodeValue) of the first item of ``keyword``; ('', '') when absent."""
    item = first_item(ds, keyword)
    if item is None:
        return ("", "")
    value = getattr(item, "CodeValue", None) or getattr(item, "LongCodeValue", None) or ""
    return (str(getattr(item, "CodingSchemeDesignator", "") or ""), str(value))


def cielab_to_rgb(value: Sequence[int] | None, fallback: RGB) -> RGB:
    """A RecommendedDisplayCIELabValue (DICOM-scaled L*a*b*, 0-65535) as 8-bit sRGB (highdicom's
    conversion); ``fallback`` when absent or not three values."""
    if value is None:
        return fallback
    try:
        lab = [int(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise ResultObjectError(f"RecommendedDisplayCIELabValue is not three integers: {value!r}") from exc
    if len(lab) != 3 or not all(0 <= v <= 0xFFFF for v in lab):
        raise ResultObjectError(f"RecommendedDisplayCIELabValue must be three values 0-65535, not {lab}")
    from highdicom.color import CIELabColor

    r, g, b = CIELabColor.from_dicom_value(lab).to_rgb(clip=True)
    return (int(r), int(g), int(b))
