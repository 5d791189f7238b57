"""Value objects of a loaded study: Patient -> Study -> Series -> Stack -> SliceInfo (all frozen).

These are the contract between the DICOM core, the Qt layer, the inference engine, the review store
and the training package. Pixel data is never held here: :class:`SliceSource` says where a frame's
bytes are (for decoding, this load only), and :mod:`viewer.core.dicom.volume` decodes them lazily.
:class:`SliceKey` says which image a slice is, by UIDs, wherever its bytes came from: what outlives
a load (review positions, measurements, AI results) keys slices by it, never by path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from viewer.core.constants import Window
from viewer.core.dicom.voi import VoiFunction, VoiLut

if TYPE_CHECKING:
    from viewer.core.dicom.preread import PreRead


@dataclass(frozen=True)
class SliceSource:
    """Where one 2D frame comes from: a file, or a member of a zip archive, and a frame index."""

    path: Path  # the file on disk, or the zip archive holding it
    member: str | None = None  # member name inside the zip archive, else None
    frame: int = 0  # frame index inside a multi-frame object

    @property
    def file_key(self) -> tuple[str, str]:
        """The file (or archive member) itself, whatever the frame: one SOP instance."""
        return (str(self.path), self.member or "")

    @property
    def display_name(self) -> str:
        """Short name for on-screen reports (never logged: file names can carry PHI)."""
        name = self.member if self.member is not None else self.path.name
        return f"{name} [frame {self.frame + 1}]" if self.frame else name


@dataclass(frozen=True, order=True)
class SliceKey:
    """One image's identity, whatever source its bytes came from (a folder, a zip, a PACS retrieve into
    the cache): frame ``frame`` of SOP instance ``sop_instance_uid`` in series ``series_uid`` of study
    ``study_uid``. The same key names the same image after the study is opened again from elsewhere."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    frame: int = 0


@dataclass(frozen=True)
class SliceInfo:
    """Header facts about one displayable 2D frame, read without pixel data."""

    source: SliceSource
    sop_instance_uid: str
    instance_number: int | None
    rows: int
    columns: int
    samples_per_pixel: int
    photometric: str  # MONOCHROME1, MONOCHROME2, RGB, YBR_FULL, PALETTE COLOR, ...
    bits_allocated: int
    transfer_syntax_uid: str
    position: tuple[float, float, float] | None = None  # ImagePositionPatient (mm)
    orientation: tuple[float, float, float, float, float, float] | None = None  # ImageOrientationPatient
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing) mm
    slice_thickness: float | None = None
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    window: Window | None = None  # the header's first window, if any
    image_type: tuple[str, ...] = ()
    acquisition_number: int | None = None
    location: float | None = None  # position projected on the stack normal (mm), set by sorting
    # --- decoding hints (additive; filled by the header pass, defaults keep hand-made SliceInfos valid)
    bits_stored: int | None = None
    pixel_representation: int = 0  # 0 unsigned, 1 two's complement
    number_of_frames: int = 1  # frames in the source object (``source.frame`` indexes them)
    pixel_offset: int | None = None  # file offset of native (uncompressed) Pixel Data bytes, else None
    pixel_length: int | None = None  # declared length of that Pixel Data element (bytes)
    has_modality_lut: bool = False  # a Modality LUT Sequence replaces slope/intercept
    voi_function: VoiFunction = VoiFunction.LINEAR  # VOI LUT Function of ``window`` (key 0)
    voi_lut: VoiLut | None = None  # the header's VOI LUT Sequence (first item), shown instead of ``window``
    lossy: bool = False  # LossyImageCompression 01 or an always-lossy transfer syntax: marked on screen
    lossy_ratio: float | None = None  # LossyImageCompressionRatio (first value), if given

    @property
    def is_color(self) -> bool:
        return self.samples_per_pixel > 1 or self.photometric == "PALETTE COLOR"


@dataclass(frozen=True)
class Stack:
    """A displayable, sorted run of same-geometry frames: what the viewer scrolls through.

    A series is split into several stacks when its instances differ in orientation, size or
    include localizers; ``label`` then says why (e.g. ``"localizer"``).
    """

    uid: str  # stable key: SeriesInstanceUID, plus ``#n`` when the series was split
    series_instance_uid: str
    study_instance_uid: str
    modality: str
    series_description: str
    series_number: int | None
    slices: tuple[SliceInfo, ...]  # ascending along the slice normal (or the documented fallback)
    sort_method: str  # "position", "instance_number" or "file_order"
    warnings: tuple[str, ...] = ()
    label: str = ""  # why this stack was split from its series, "" when it was not
    slice_spacing: float | None = None  # median distance between neighbouring slices (mm)
    frame_of_reference_uid: str | None = None
    body_part: str = ""  # BodyPartExamined of the first slice, upper case; "" when absent

    def __len__(self) -> int:
        return len(self.slices)

    def slice_key(self, index: int) -> SliceKey:
        """The UID identity of slice ``index`` (see :class:`SliceKey`)."""
        info = self.slices[index]
        return SliceKey(
            self.study_instance_uid, self.series_instance_uid, info.sop_instance_uid, info.source.frame
        )

    def index_of(self, key: SliceKey) -> int | None:
        """The index of the slice ``key`` names in this stack, None when it is not one of them."""
        if key.study_uid != self.study_instance_uid or key.series_uid != self.series_instance_uid:
            return None
        for k, info in enumerate(self.slices):
            if info.sop_instance_uid == key.sop_instance_uid and info.source.frame == key.frame:
                return k
        return None

    @property
    def is_color(self) -> bool:
        return any(s.is_color for s in self.slices)

    @property
    def rows(self) -> int:
        return self.slices[0].rows

    @property
    def columns(self) -> int:
        return self.slices[0].columns


@dataclass(frozen=True)
class Series:
    series_instance_uid: str
    modality: str
    description: str
    number: int | None
    stacks: tuple[Stack, ...]


@dataclass(frozen=True)
class Study:
    study_instance_uid: str
    date: str  # YYYYMMDD as in the header, "" when absent
    description: str
    accession_number: str
    series: tuple[Series, ...]
    patient_age: str = ""  # PatientAge at this study as in the header ("045Y"), "" when absent


@dataclass(frozen=True)
class Patient:
    patient_id: str  # PHI: show on screen behind the privacy toggle, never log or export by default
    name: str  # PHI
    birth_date: str  # PHI
    sex: str
    studies: tuple[Study, ...]


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not loaded, with a code and a human reason (path shown on screen only)."""

    path: str
    code: str  # a viewer.core.codes.Code value, e.g. "E-NOT-DICOM", "E-DICOMDIR", "E-TOO-LARGE", "E-READ"
    reason: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", str(self.code))  # a Code member becomes its plain text


@dataclass(frozen=True)
class ResultFile(SkippedFile):
    """A result object (SEG, Parametric Map, SR, presentation state) that the scan set aside to be read
    as results (:mod:`viewer.core.foreign`), not loaded as images; ``code`` is ``RESULT``."""

    source: SliceSource | None = None
    sop_class_uid: str = ""


@dataclass(frozen=True)
class LoadReport:
    """Everything a scan found: the patient tree, the files skipped and why, and load warnings."""

    patients: tuple[Patient, ...]
    skipped: tuple[SkippedFile, ...] = ()
    warnings: tuple[str, ...] = ()
    files_seen: int = 0
    elapsed_s: float = 0.0
    cancelled: bool = False
    stacks_by_uid: dict[str, Stack] = field(default_factory=dict, compare=False, repr=False)
    result_files: tuple[ResultFile, ...] = ()  # others' SEG/SR/... found, read by viewer.core.foreign
    # plain pixels read during a whole-volume scan (load_paths(whole_volume=True)), for StackVolume
    preread: PreRead | None = field(default=None, compare=False, repr=False)

    def skipped_by_code(self) -> dict[str, int]:
        """{code: files}, most frequent first: e.g. {'E-NO-PIXELS': 12, 'E-DICOMDIR': 1}."""
        from viewer.core.codes import count_by_code

        return count_by_code([s.code for s in self.skipped])

    def all_stacks(self) -> list[Stack]:
        return [st for p in self.patients for s in p.studies for se in s.series for st in se.stacks]

    def summary(self) -> str:
        """One line for the status bar, e.g. 'Loaded 212 of 215 files; 3 skipped'."""
        loaded = self.files_seen - len(self.skipped)
        text = f"Loaded {loaded} of {self.files_seen} files, {len(self.all_stacks())} stacks"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped"
        if self.cancelled:
            text += " (cancelled)"
        return text
