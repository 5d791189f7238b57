"""The one list of codes for files and slices that were not loaded (load report, ``slicewise predict``).

A :class:`Code` is a ``str`` (``Code.READ == "E-READ"``), so reports, JSON output and comparisons
with plain strings keep working; :func:`describe` gives the few words shown next to a count.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum


class Code(str, Enum):
    """Why a file (or a slice) was not loaded."""

    NOT_DICOM = "E-NOT-DICOM"
    DICOMDIR = "E-DICOMDIR"
    NO_PIXELS = "E-NO-PIXELS"
    READ = "E-READ"
    MISSING = "E-MISSING"
    TOO_LARGE = "E-TOO-LARGE"
    ZIP_BOMB = "E-ZIP-BOMB"
    PATH_ESCAPE = "E-PATH-ESCAPE"
    SPECIAL_FILE = "E-SPECIAL-FILE"
    FRAME_COUNT = "E-FRAME-COUNT"
    DUPLICATE = "E-DUPLICATE"
    TRUNC_PIXEL = "E-TRUNC-PIXEL"
    WORKER_CRASH = "E-WORKER-CRASH"
    TIMEOUT = "E-TIMEOUT"
    CODESTREAM = "E-CODESTREAM"  # a compressed frame's own header is unreadable
    CODESTREAM_SIZE = "E-CODESTREAM-SIZE"  # ... or disagrees with Rows/Columns/Samples/Bits
    CORRUPT = "E-CORRUPT"  # the decoder reports damage, or two JPEG decoders disagree
    MEMORY = "E-MEMORY"  # the decode needed more than its frame's address-space allowance
    NO_DECODER = "E-NO-DECODER"  # no permissively licensed decoder installed for the syntax
    DECODE = "E-DECODE"  # a decoder refused the frame, with no more specific code
    ARCHIVE = "ARCHIVE"  # internal: the header reader found an archive, the loader expands it
    RESULT = "RESULT"  # internal: a SEG/SR/... set aside to be read as results (viewer.core.foreign)
    RESULT_MALFORMED = "E-RESULT-MALFORMED"  # a SEG/SR/... whose content cannot be read
    NO_LOADED_IMAGE = "E-NO-LOADED-IMAGE"  # a SEG/SR/... that references none of the loaded images

    def __str__(self) -> str:  # "E-READ", not "Code.READ" (f-strings, logging, Qt labels)
        return str(self.value)


_DESCRIPTIONS: dict[Code, str] = {
    Code.NOT_DICOM: "not DICOM",
    Code.DICOMDIR: "DICOMDIR index",
    Code.NO_PIXELS: "no image data",
    Code.READ: "unreadable",
    Code.MISSING: "missing",
    Code.TOO_LARGE: "too large",
    Code.ZIP_BOMB: "archive member too large",
    Code.PATH_ESCAPE: "outside the opened folder",
    Code.SPECIAL_FILE: "not a regular file",
    Code.FRAME_COUNT: "bad frame count",
    Code.DUPLICATE: "duplicate",
    Code.TRUNC_PIXEL: "truncated pixel data",
    Code.WORKER_CRASH: "decoder crashed",
    Code.TIMEOUT: "decoder timed out",
    Code.CODESTREAM: "malformed compressed frame",
    Code.CODESTREAM_SIZE: "compressed frame of another size",
    Code.CORRUPT: "damaged compressed data",
    Code.MEMORY: "decoder memory limit",
    Code.NO_DECODER: "no decoder installed",
    Code.DECODE: "cannot be decoded",
    Code.ARCHIVE: "archive",
    Code.RESULT: "result object",
    Code.RESULT_MALFORMED: "unreadable result object",
    Code.NO_LOADED_IMAGE: "references no loaded image",
}


def describe(code: str) -> str:
    """A few words for ``code`` ('no image data' for E-NO-PIXELS); the code itself when unknown."""
    try:
        return _DESCRIPTIONS[Code(code)]
    except ValueError:
        return code


def count_by_code(codes: Iterable[str]) -> dict[str, int]:
    """{code: count}, most frequent first (ties by code), as plain strings (JSON-ready)."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[str(code)] = counts.get(str(code), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def summarise(codes: Iterable[str]) -> str:
    """'3 E-NO-PIXELS (no image data), 1 E-DICOMDIR (DICOMDIR index)'."""
    return ", ".join(f"{n} {c} ({describe(c)})" for c, n in count_by_code(codes).items())


_CODE_IN_TEXT = re.compile(r"\bE-[A-Z]+(?:-[A-Z]+)*\b")


def code_in(text: str) -> str:
    """The first known code a message names ('... was stopped (E-TIMEOUT)' -> 'E-TIMEOUT'), else
    E-DECODE: a decoder's own words, which carry none."""
    for match in _CODE_IN_TEXT.findall(text):
        try:
            return str(Code(match))
        except ValueError:
            continue
    return str(Code.DECODE)
