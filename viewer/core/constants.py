"""The one place for constants shared by the core, the Qt layer and the training package."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

APP_NAME: Final = "Slicewise"
APP_ORG: Final = "Slicewise"
INTENDED_USE: Final = "Research use only. Not a medical device. Not for diagnostic use."


@dataclass(frozen=True)
class Window:
    """A display window in DICOM terms: ``width`` and ``level`` (centre), both in output units (HU for CT)."""

    width: float
    level: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2.0

    @property
    def high(self) -> float:
        return self.level + self.width / 2.0

    @property
    def levels(self) -> tuple[float, float]:
        """(low, high), the form pyqtgraph's ``ImageItem.setLevels`` takes."""
        return (self.low, self.high)

    @classmethod
    def from_levels(cls, low: float, high: float) -> Window:
        return cls(width=high - low, level=(high + low) / 2.0)


# Window presets on number keys 1-7 (width/level, HU). Key 0 = the DICOM header's own window.
WINDOW_PRESETS: Final[dict[str, Window]] = {
    "brain": Window(80, 40),
    "subdural": Window(200, 80),
    "stroke": Window(40, 40),
    "bone": Window(2800, 600),
    "lung": Window(1500, -600),
    "abdomen": Window(400, 40),
    "mediastinum": Window(350, 50),
}
PRESET_KEYS: Final[tuple[str, ...]] = tuple(WINDOW_PRESETS)  # index 0 -> key "1"
TAG_REFRESH_DELAY_MS: Final = 120  # the tag browser re-reads the header once scrolling pauses this long

# --- model contract -------------------------------------------------------------------------------
ONNX_SCHEMA_VERSION: Final = 1
MODEL_INPUT_NAME: Final = "slices"  # float32 [batch, num_slices, channels, H, W]
MODEL_SLICE_OUTPUT: Final = "slice_probs"  # float32 [batch, num_slices, K], post-sigmoid
MODEL_STUDY_OUTPUT: Final = "study_probs"  # float32 [batch, K], post-sigmoid
# optional third output of a slice classification model (contract version 2): per-class localisation
# maps, float32 [batch, num_slices, M, h, w], post-sigmoid, M = metadata 'maps' classes, h = w = its size
MODEL_MAPS_OUTPUT: Final = "slice_maps"
MODEL_CONTRACT_VERSION: Final = 2  # metadata 'contract_version': 1 (absent) two outputs, 2 adds 'maps'
RSNA_CLASSES: Final[tuple[str, ...]] = (
    "any",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
RSNA_CLASS_WEIGHTS: Final[tuple[float, ...]] = (2.0, 1.0, 1.0, 1.0, 1.0, 1.0)
# One colour per class wherever a class is drawn: the AI timeline and findings panel, and the segments of
# the AI's DICOM SEG (RecommendedDisplayCIELabValue), so the map on the image has its timeline's colour
RSNA_CLASS_COLORS: Final[dict[str, str]] = {
    "any": "#f0f0f0",
    "epidural": "#ff7b72",
    "intraparenchymal": "#ffa657",
    "intraventricular": "#d2a8ff",
    "subarachnoid": "#79c0ff",
    "subdural": "#56d364",
}
# The three CT windows fed to the model as channels: brain, subdural, soft tissue.
MODEL_WINDOWS: Final[tuple[Window, ...]] = (Window(80, 40), Window(200, 80), Window(380, 40))
MODEL_INPUT_SIZE: Final = 256
MIN_SLICES_FOR_MODEL: Final = 3

# --- resource limits (RELIABILITY.md, T5) --------------------------------------------------------
MAX_FRAME_BYTES: Final = 2 * 1024**3  # a single decoded frame may not claim more than this
MAX_SERIES_BYTES_FRACTION_OF_RAM: Final = 0.25
MAX_SERIES_BYTES: Final = 2 * 1024**3
MAX_INFLATED_BYTES: Final = 512 * 1024**2  # deflate / zip members
MAX_INFLATION_RATIO: Final = 100
SLICE_CACHE_BYTES: Final = 1024 * 1024**2  # decoded-slice LRU budget per open stack
PREFAULT_MIN_BYTES: Final = 32 * 1024**2  # volumes at least this big are allocated pre-faulted (Linux)
DECODE_TIMEOUT_S: Final = 5.0  # a single frame's decoder process is stopped after this (E-TIMEOUT)
DECODER_START_TIMEOUT_S: Final = 60.0  # a decoder process that has not started by then is given up
SPACING_TOLERANCE: Final = 0.01  # > 1 % spread in slice spacing -> warning
TILT_TOLERANCE_DEG: Final = 0.5

# --- PACS (issue 13) -----------------------------------------------------------------------------
PACS_CONNECT_TIMEOUT_S: Final = 5.0  # TCP connect / association request
PACS_READ_TIMEOUT_S: Final = 30.0  # silence on an open connection before giving up
PACS_DEFAULT_CALLING_AE: Final = "SLICEWISE"
PACS_MAX_RESPONSE_BYTES: Final = 64 * 1024**2  # a query / metadata answer (JSON) may not exceed this
PACS_MAX_INSTANCE_BYTES: Final = 2 * 1024**3  # one retrieved instance may not exceed this
PACS_RETRIEVE_ATTEMPTS: Final = 3  # a retrieve resumes (missing instances only) this many times in all
PACS_RETRY_BACKOFF_S: Final = 0.5  # first wait before a resume; doubles each time
PACS_CACHE_BYTES: Final = 20 * 1024**3  # retrieved-instance cache, evicted oldest study first
PACS_FIRST_PAGE: Final = 100  # a study query hands these matches over first, while the rest arrive
PACS_QUERY_PAGE: Final = 200  # a QIDO-RS study query's second page (limit / offset); later ones double
PACS_QUERY_PAGE_MAX: Final = 1000  # ... up to this many matches a page
PACS_QUERY_PAGES_IN_FLIGHT: Final = 2  # QIDO-RS pages asked at once, each on its own connection
PACS_MAX_STUDY_MATCHES: Final = 100_000  # a paged study query stops (refused: narrow the search) past this
