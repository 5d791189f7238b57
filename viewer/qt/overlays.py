"""Corner overlays on the image: the text model (pure functions) and the widget that paints it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PySide6.QtCore import QDate, QLocale, QPointF, QRectF, QSizeF, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPixmap,
    QTextDocument,
    QTextLayout,
)
from PySide6.QtWidgets import QWidget

from viewer.core.constants import Window
from viewer.core.dicom.model import Patient, SliceInfo, Study

# orientation letters live in the core (viewer.core.geometry.orientation); re-exported for the views
from viewer.core.geometry.orientation import direction_letters as direction_letters
from viewer.core.geometry.orientation import edge_labels
from viewer.core.geometry.orientation import orientation_labels as orientation_labels

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")
LOSSY_PREFIX = "LOSSY"
# the top-left line of a viewport that shows another patient than a viewport beside it (no identifier in it)
OTHER_PATIENT_LINE = "⚠ ≠ other viewport's patient"
Draws = list[tuple[QPointF, QPixmap]]  # pixmaps and where they go on the overlay
ExtraBlock = tuple[list[str], QPointF, QPixmap, QRectF, QPainterPath]  # lines, place, pixmap, extent, backing
TEXT_CACHE_SIZE = 2048  # pre-rendered text lines kept per overlay (a few hundred KB)
EXTRA_CACHE_SIZE = 64  # pre-rendered extension HTML blocks (the AI result's slice line differs by slice)
OUTLINE = 1  # px of dark outline around each corner text's glyphs (readable on white bone, as PACS viewers)
BACKING = QColor(0, 0, 0, 200)  # behind each line of the AI block: its red/grey text >= 4.5:1 even on white
BACKING_PAD = 3  # px left and right of each line's text (1 px above the first and below the last)
HINT_POINT_SIZE = 13.0  # the empty viewport's hint, made smaller (to 10 pt) before a line would wrap
HINT_SMALLEST = 10.0


EXTRA_COMPACT_WIDTH = 560  # px: a narrower viewport (1x2 at 1366 x 768 and smaller) shows the AI's one line
EXTRA_COMPACT_HEIGHT = 400  # px: so does a lower one (2x1, 2x2 at 1366 x 768)


def extra_text_width(w: float) -> float:
    """The width the extensions' HTML (the AI result) is laid out in, right-aligned in a ``w`` wide view:
    two fifths of the view, but at least 260 px where the view has them (in a narrow viewport a fifth-wide
    column wrapped the AI result into six lines over the image)."""
    return max(w * 0.4, min(w - 2 * OverlayWidget.MARGIN, 260.0))


def wrap_lines(text: str, font: QFont, width: float) -> list[str]:
    """``text`` wrapped at word boundaries to ``width`` px in ``font`` (its own line breaks kept)."""
    out: list[str] = []
    for para in text.split("\n"):
        layout = QTextLayout(para, font)
        layout.beginLayout()
        while True:
            line = layout.createLine()
            if not line.isValid():
                break
            line.setLineWidth(width)
        layout.endLayout()
        for i in range(layout.lineCount()):
            line = layout.lineAt(i)
            out.append(para[line.textStart() : line.textStart() + line.textLength()].strip())
    return out


def fit_hint(text: str, base: QFont, width: float) -> tuple[QFont, list[str]]:
    """The hint's font and lines in a ``width`` px column: the largest size from 13 pt down to 10 pt at
    which none of its lines wraps (a 2x2 viewport at 1366 x 768 wrapped "here" onto a line of its own);
    at 13 pt, wrapped, when even 10 pt does not fit (a long decoder message)."""
    size = HINT_POINT_SIZE
    while size >= HINT_SMALLEST:
        font = QFont(base)
        font.setPointSizeF(size)
        lines = wrap_lines(text, font, width)
        if len(lines) == text.count("\n") + 1:
            return font, lines
        size -= 0.5
    font = QFont(base)
    font.setPointSizeF(HINT_POINT_SIZE)
    return font, wrap_lines(text, font, width)


def line_backing(doc: QTextDocument) -> QPainterPath:
    """The dark backing of a laid-out HTML block (the AI result), in the document's coordinates: each
    line's text extent widened by BACKING_PAD, joined into one shape (so overlaps are not darker); only
    behind the text, so a short line hides no image beside it."""
    path = QPainterPath()
    layout = doc.documentLayout()
    rects: list[QRectF] = []
    block = doc.begin()
    while block.isValid():
        origin = layout.blockBoundingRect(block).topLeft()
        text_layout = block.layout()
        for i in range(text_layout.lineCount()):
            line = text_layout.lineAt(i)
            if line.naturalTextWidth() > 0:
                rects.append(line.naturalTextRect().translated(origin))
        block = block.next()
    for k, rect in enumerate(rects):
        top = -1.0 if k == 0 else 0.0
        bottom = 1.0 if k == len(rects) - 1 else 0.0
        piece = QPainterPath()
        piece.addRect(rect.adjusted(-BACKING_PAD, top, BACKING_PAD, bottom))
        path = path.united(piece)
    return path


def turned_orientation_labels(iop: Sequence[float] | None, turn: np.ndarray | None = None) -> dict[str, str]:
    """Letters for the screen edges when the image is shown rotated/flipped by ``turn`` (2×2 integer,
    screen (x, y) = turn @ image (column, row)); ``orientation_labels`` when it is not turned."""
    if iop is None or len(iop) != 6:
        return {}
    img_row = np.asarray(iop[:3], dtype=float)
    img_col = np.asarray(iop[3:], dtype=float)
    back = (np.eye(2) if turn is None else np.asarray(turn, dtype=float)).T  # screen -> image axes
    row = back[0, 0] * img_row + back[1, 0] * img_col  # patient direction of screen +x (right)
    col = back[0, 1] * img_row + back[1, 1] * img_col  # ... of screen +y (down)
    return edge_labels(row, col)


def format_date(value: str) -> str:
    """A DICOM date (``20260101``, or the old ``2026.01.01``) in the user's locale's short format
    (``1/1/26``, ``01.01.26``); anything else unchanged."""
    digits = value.strip().replace(".", "") if len(value.strip()) == 10 else value.strip()
    if len(digits) == 8 and digits.isdigit():
        date = QDate(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
        if date.isValid():
            locale = QLocale()
            if locale.language() == QLocale.Language.C:  # no locale (LANG=C): Qt would give "1 01 2026"
                return date.toString(Qt.DateFormat.ISODate)
            return locale.toString(date, QLocale.FormatType.ShortFormat)
    return value


_AGE_UNITS = {"Y": "y", "M": "mo", "W": "wk", "D": "d"}


def format_age(age: str, birth_date: str = "", study_date: str = "") -> str:
    """PatientAge ``045Y`` -> ``45 y`` (``M``, ``W``, ``D``: months, weeks, days); without one, whole
    years between the birth and study dates; "" when neither is known."""
    age = age.strip().upper()
    if len(age) == 4 and age[:3].isdigit() and age[3] in _AGE_UNITS:
        return f"{int(age[:3])} {_AGE_UNITS[age[3]]}"
    birth, study = QDate.fromString(birth_date, "yyyyMMdd"), QDate.fromString(study_date, "yyyyMMdd")
    if birth.isValid() and study.isValid() and birth <= study:
        years = study.year() - birth.year() - ((study.month(), study.day()) < (birth.month(), birth.day()))
        return f"{years} y"
    return ""


def demographics_line(patient: Patient, age: str = "", study: Study | None = None) -> str:
    """Age and sex for the patient corner (``45 y  F``): shown with the name, hidden in privacy mode."""
    years = format_age(age, patient.birth_date, study.date if study is not None else "")
    sex = {"M": "M", "F": "F", "O": "O"}.get(patient.sex.strip().upper(), "")
    return "  ".join(v for v in (years, sex) if v)


def lossy_marker(info: SliceInfo) -> str:
    """``LOSSY 338:1`` (or ``LOSSY``) for an image that went through lossy compression, else ""."""
    if not info.lossy:
        return ""
    ratio = info.lossy_ratio
    return f"{LOSSY_PREFIX} {ratio:.0f}:1" if ratio is not None and ratio >= 1 else LOSSY_PREFIX


def format_window(window: Window | None) -> str:
    if window is None:
        return ""
    return f"W {window.width:.0f}  L {window.level:.0f}"


@dataclass
class CornerText:
    """Lines for each corner; ``phi`` lines are hidden in privacy mode and de-identified exports."""

    top_left: list[str]
    top_right: list[str]
    bottom_left: list[str]
    bottom_right: list[str]
    phi: list[str]


SCALE_LENGTHS_MM = (1, 2, 5, 10, 20, 50, 100, 200, 500)
SCALE_MIN_PX = 30


def scale_bar(mm_per_px: float, max_px: float) -> tuple[int, float] | None:
    """The scale bar for a view showing ``mm_per_px``: (length in mm, length in screen px), the longest
    round length that fits in ``max_px``; None when even 1 mm is too long or shorter than 30 px."""
    if not (mm_per_px > 0 and math.isfinite(mm_per_px)):
        return None
    fitting = [(mm, mm / mm_per_px) for mm in SCALE_LENGTHS_MM if SCALE_MIN_PX <= mm / mm_per_px <= max_px]
    return fitting[-1] if fitting else None


class CornerLegend(Protocol):
    """A key the overlay places in free space beside the corner texts (the results overlay's legend)."""

    def render(
        self, max_width: float, max_height: float, dpr: float, titles: bool = True
    ) -> tuple[list[str], QPixmap] | None:
        """(texts, pixmap) at most ``max_width`` x ``max_height`` logical px, None when nothing fits;
        ``titles`` False: without the objects' titles (series descriptions: left out of de-identified
        exports like the corner texts' study and series lines)."""
        ...


LEGEND_GAP = 6  # px between the legend and the corner texts or letters around it
LEGEND_WIDTH = 0.42  # of the view's width at most: it never reaches the centred letters and scale bar


class OverlayWidget(QWidget):
    """Transparent layer over the image view that paints corner text and orientation letters.

    Two kinds of corner text identify the patient or study: the ``phi`` lines (name, ID; hidden in
    privacy mode) and each corner's ``identifying`` lines (study and series descriptions, dates). A
    de-identified export (:meth:`deidentified`) paints neither, nor the hint (which may name a file).
    """

    MARGIN = 10
    COMPACT_WIDTH = 560  # px: a narrower viewport (2x2 at 1366x768) shows a shorter top-left corner

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.setAttribute(Qt.WidgetAttribute.WA_NoSystemBackground)
        self.setAutoFillBackground(False)
        self._corners: dict[str, list[str]] = {c: [] for c in CORNERS}
        self._phi: list[str] = []
        self._identifying: dict[str, list[str]] = {c: [] for c in CORNERS}
        # the identifying lines a compact top-left corner keeps: the study date (current | prior side by side
        # were two narrow viewports that did not say which was the prior)
        self._compact_identifying: dict[str, list[str]] = {c: [] for c in CORNERS}
        self.show_identifying = True
        self.painted_texts: list[str] = []  # every text the last paint drew (export tests read it)
        self._orientation: dict[str, str] = {}
        self._extra_html: dict[str, str] = {}
        self._extra_compact: dict[str, str] = {}  # per key: the one line a small viewport shows instead
        self._hint = ""
        self._mm_per_px: float | None = None  # None: no scale bar (no valid PixelSpacing)
        self.show_phi = True
        self._other_patient = False  # another patient than a viewport beside it (the main window says)
        self.shares_screen = False  # one of several viewports on screen (set by the viewport grid)
        self.visible_text = True
        self._font = QFont()
        self._font.setPointSizeF(9.5)
        self._font.setStyleHint(QFont.StyleHint.SansSerif)
        self._orient_font = QFont(self._font)
        self._orient_font.setPointSizeF(12)
        self._orient_font.setBold(True)
        self._color = QColor("#e6edf3")
        self._accent = QColor("#7ee0ff")
        self._warn = QColor("#ffb347")  # the LOSSY marker
        self._alarm = QColor("#ff7b72")  # another patient than the viewport beside it
        self._shadow = QColor(0, 0, 0, 220)
        self._text_cache: dict[tuple[str, int, bool, tuple[float, float]], tuple[QPixmap, int]] = {}
        self._extra_cache: dict[tuple[object, ...], ExtraBlock] = {}
        self._composed: tuple[tuple[object, ...], tuple[list[str], Draws]] | None = None
        self._extra_below: tuple[tuple[float, float], ...] = ()  # bottom texts, scale bar: (right, top) each
        self._right_letter: tuple[float, float, float, float] | None = None  # its box: the AI block keeps off
        self._bar_cache: tuple[tuple[int, float, float, float, float], tuple[int, int, QPixmap]] | None = None
        self._legend: CornerLegend | None = None
        self.legend_rect: QRectF | None = None  # where the last composition put the legend (None: not drawn)
        self.bottom_letter_rect: QRectF | None = None  # and the bottom orientation letter, the scale bar
        self.scale_bar_rect: QRectF | None = None

    # --- model -----------------------------------------------------------------------------------
    def set_phi_lines(self, lines: list[str]) -> None:
        if lines != self._phi:  # set on every slice change: repaint only when the lines change
            self._phi = list(lines)
            self.update()

    def set_other_patient(self, on: bool) -> None:
        """Mark this viewport as showing another patient than a viewport beside it: a warning line at
        the top of the patient corner and the patient lines in the warning colour. Never painted in a
        de-identified export; kept in privacy mode (it names no one)."""
        if on != self._other_patient:
            self._other_patient = on
            self.update()

    @property
    def other_patient(self) -> bool:
        return self._other_patient

    def set_corner(
        self, corner: str, lines: list[str], identifying: Sequence[str] = (), compact: Sequence[str] = ()
    ) -> None:
        """The corner's lines; ``identifying`` ones (descriptions, dates) come first and are left out
        of de-identified exports; ``compact``: those of them a compact corner keeps."""
        if corner not in self._corners:
            raise ValueError(f"Unknown corner {corner!r}; known: {', '.join(CORNERS)}")
        if (
            self._corners[corner] != lines
            or self._identifying[corner] != list(identifying)
            or self._compact_identifying[corner] != list(compact)
        ):
            self._corners[corner] = list(lines)
            self._identifying[corner] = list(identifying)
            self._compact_identifying[corner] = list(compact)
            self.update()

    def set_orientation(self, labels: dict[str, str]) -> None:
        if labels != self._orientation:  # set on every slice change: repaint only when the letters change
            self._orientation = dict(labels)
            self.update()

    def set_extra_html(self, key: str, html: str, compact: str = "") -> None:
        """An extension's text (HTML) in the bottom-right corner; ``compact``, when given, is what a small
        viewport (:meth:`extra_is_compact`) shows instead: one short line (the rest is in the extension's
        dock, and in the tooltip over the line)."""
        compact = compact if html else ""
        if self._extra_html.get(key, "") == html and self._extra_compact.get(key, "") == compact:
            return
        for store, value in ((self._extra_html, html), (self._extra_compact, compact)):
            if value:
                store[key] = value
            else:
                store.pop(key, None)
        self.update()

    def extra_is_compact(self) -> bool:
        """True when the viewport is small (narrower than EXTRA_COMPACT_WIDTH or lower than
        EXTRA_COMPACT_HEIGHT) and an extension gave a compact line: that line is shown, not the block (a
        1x2 viewport at 1366 x 768 had three wrapped lines over the image and the overlay they describe)."""
        w, h = self.width(), self.height()
        return bool(self._extra_compact) and (0 < w < EXTRA_COMPACT_WIDTH or 0 < h < EXTRA_COMPACT_HEIGHT)

    def extra_full_text(self) -> str:
        """The extensions' texts in full, as plain text (the tooltip over a compact line)."""
        doc = QTextDocument()
        doc.setHtml("<br>".join(self._extra_html.values()))
        return doc.toPlainText()

    def _extra_shown(self) -> tuple[tuple[str, str], ...]:
        compact = self.extra_is_compact()
        return tuple(
            (key, self._extra_compact.get(key, html) if compact else html)
            for key, html in self._extra_html.items()
        )

    def set_legend(self, legend: CornerLegend | None) -> None:
        """The legend to place in the left (else right) column between the corner texts; None: none."""
        if legend is not self._legend:
            self._legend = legend
            self.update()

    def legend(self) -> CornerLegend | None:
        return self._legend

    def set_hint(self, text: str) -> None:
        self._hint = text
        self.update()

    def set_scale(self, mm_per_px: float | None) -> None:
        """Millimetres per screen pixel of the image (None: no scale bar, e.g. without PixelSpacing)."""
        if mm_per_px != self._mm_per_px:
            self._mm_per_px = mm_per_px
            self.update()

    def scale_bar(self) -> tuple[int, float] | None:
        """The scale bar painted now: (mm, screen px), or None."""
        if self._mm_per_px is None:
            return None
        return scale_bar(self._mm_per_px, self.width() * 0.2)

    @property
    def compact(self) -> bool:
        """True in a narrow viewport of a multi-viewport layout (``shares_screen``): the top-left corner keeps
        name, ID and study date, not demographics and study description (the single viewport shows them
        all)."""
        return self.shares_screen and 0 < self.width() < self.COMPACT_WIDTH

    def corner_lines(self, corner: str) -> list[str]:
        """The lines of a corner as painted now (PHI and identifying lines only when shown)."""
        lines = list(self._corners[corner])
        compact_left = corner == "top_left" and self.compact
        if self.show_identifying:
            lines = (self._compact_identifying[corner] if compact_left else self._identifying[corner]) + lines
        if corner == "top_left" and self.show_phi:
            lines = (self._phi[:2] if compact_left else self._phi) + lines
        if corner == "top_left" and self._other_patient and self.show_identifying and self._phi:
            lines = [OTHER_PATIENT_LINE, *lines]
        return lines

    def corner_text(self, corner: str) -> str:
        return "\n".join(self.corner_lines(corner))

    @contextlib.contextmanager
    def deidentified(self, on: bool = True) -> Iterator[None]:
        """Paint without patient, study or series identifiers (and without the hint) while inside."""
        saved = (self.show_phi, self.show_identifying, self._hint)
        if on:
            self.show_phi = self.show_identifying = False
            self._hint = ""
        try:
            yield
        finally:
            self.show_phi, self.show_identifying, self._hint = saved
            self.update()

    def orientation(self) -> dict[str, str]:
        return dict(self._orientation)

    def text_rects(self) -> list[QRectF]:
        """Where the corner texts, orientation letters and scale bar are painted now (not the legend)."""
        _, draws = self._composition(self.width(), self.height())
        legend = self.legend_rect
        rects = [QRectF(pt, QSizeF(pm.width(), pm.height()) / pm.devicePixelRatio()) for pt, pm in draws]
        return [r for r in rects if legend is None or r != legend]

    def extra_html(self) -> dict[str, str]:
        return dict(self._extra_html)

    def extra_rect(self) -> QRectF | None:
        """Where the extensions' HTML (the AI result) has its text now (its lines' extent); None without."""
        if not self._extra_html:
            return None
        self._composition(self.width(), self.height())
        return self._extra_pixmap(self.width(), self.height())[3]

    # --- painting --------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        w, h, m = self.width(), self.height(), self.MARGIN
        painted: list[str] = []
        self.painted_texts = painted
        if self._hint:
            p.setPen(QColor("#6e7681"))
            inset = 4 * m  # wrapped inside the orientation letters: a long decoder message is not clipped
            column = max(w - 2 * inset, 1)
            hint_font, hint_lines = fit_hint(self._hint, self._font, column)
            painted.extend(hint_lines)
            p.setFont(hint_font)
            spacing = QFontMetrics(hint_font).lineSpacing()
            top = (h - spacing * len(hint_lines)) / 2
            flags = int(Qt.AlignmentFlag.AlignHCenter) | int(Qt.AlignmentFlag.AlignTop)
            for k, line in enumerate(hint_lines):
                p.drawText(QRectF(inset, top + k * spacing, column, spacing), flags, line)
        if not self.visible_text:
            p.end()
            return
        texts, draws = self._composition(w, h)
        painted.extend(texts)
        for point, pm in draws:
            p.drawPixmap(point, pm)
        if self._extra_html:
            lines, point, pm, _, _ = self._extra_pixmap(w, h)
            painted.extend(lines)
            p.drawPixmap(point, pm)
        p.end()

    def _composition(self, w: int, h: int) -> tuple[list[str], Draws]:
        """:meth:`_compose`'s result, worked out again only when what it depends on changed."""
        key = self._compose_key(w, h)
        if self._composed is None or self._composed[0] != key:
            self._composed = (key, self._compose(w, h))
        return self._composed[1]

    def _compose_key(self, w: int, h: int) -> tuple[object, ...]:
        """Everything the corner texts, letters and scale bar depend on."""
        return (
            w, h, self.devicePixelRatioF(), self.compact, self.show_phi, self.show_identifying,
            tuple(tuple(self._corners[c]) for c in CORNERS),
            tuple(tuple(self._identifying[c]) for c in CORNERS),
            tuple(self._phi), tuple(self._orientation.items()), self._mm_per_px, self._legend,
            bool(self._extra_html), self._other_patient,
        )

    def _compose(self, w: int, h: int) -> tuple[list[str], Draws]:
        """The texts and the pre-rendered pixmaps (with where they go) of the corners, the orientation
        letters and the scale bar: worked out when one of them changes, not on every paint (the view
        repaints more often than its texts change)."""
        m = self.MARGIN
        texts: list[str] = []
        draws: Draws = []
        self._right_letter = None
        fm = QFontMetrics(self._font)
        lh = fm.height()
        rects = self._corner_rects(w, h)
        self._extra_below = tuple(
            (rect.right(), rect.top()) for corner, (_, rect) in rects.items() if corner.startswith("bottom")
        )
        for corner, (lines, rect) in rects.items():
            texts.extend(lines)
            right = corner.endswith("right")
            for k, line in enumerate(lines):
                pm, advance = self._text_pixmap(line, self._line_color(line), self._font)
                x = rect.left() + (rect.width() - advance - 2 if right else 0)
                draws.append((QPointF(x - OUTLINE, rect.top() + k * lh - OUTLINE), pm))
        bottom_letter_top: float | None = None
        self.bottom_letter_rect = self.scale_bar_rect = None
        if self._orientation:
            texts.extend(v for v in self._orientation.values() if v)
            ofm = QFontMetrics(self._orient_font)
            o = self._orientation
            cy = h / 2 + ofm.ascent() / 2
            if o.get("left"):
                self._draw_text(draws, m, cy, o["left"], self._accent, self._orient_font)
            if o.get("right"):
                x_right = w - m - ofm.horizontalAdvance(o["right"])
                self._draw_text(draws, x_right, cy, o["right"], self._accent, self._orient_font)
                letter_w = float(ofm.horizontalAdvance(o["right"]))
                self._right_letter = (x_right, cy - ofm.ascent(), letter_w, float(ofm.height()))
            taken = [r for _, r in rects.values()]
            for edge, down in (("top", True), ("bottom", False)):
                if not o.get(edge):
                    continue
                lw = ofm.horizontalAdvance(o[edge])
                box = QRectF((w - lw) / 2, m if down else h - m - ofm.height(), lw, ofm.height())
                for _ in taken:  # off the corner texts it would cover (narrow viewports), towards the centre
                    hit = [r for r in taken if r.intersects(box)]
                    if not hit:
                        break
                    if down:
                        box.moveTop(max(r.bottom() for r in hit) + 2)
                    else:
                        box.moveTop(min(r.top() for r in hit) - 2 - box.height())
                baseline = box.top() + ofm.ascent()
                self._draw_text(draws, box.left(), baseline, o[edge], self._accent, self._orient_font)
                if not down:
                    bottom_letter_top = box.top()
                    self.bottom_letter_rect = QRectF(box)
        bar = self.scale_bar()
        if bar is not None:  # bottom centre, above the bottom orientation letter
            texts.append(f"{bar[0]} mm")
            y: float = h - m - QFontMetrics(self._orient_font).height() - 10
            if bottom_letter_top is not None:  # the letter moved up above the bottom texts: so does the bar
                y = min(y, bottom_letter_top - 4)
            bar_left, bar_top, bar_pm = self._scale_bar_pixmap(bar, w, y)
            draws.append((QPointF(bar_left, bar_top), bar_pm))
            bar_size = QSizeF(bar_pm.size()) / bar_pm.devicePixelRatio()
            self.scale_bar_rect = QRectF(QPointF(bar_left, bar_top), bar_size)
            # the AI block ends above it too where its lines reach that far left (a 1x2 viewport at 1366)
            self._extra_below += ((bar_left + bar_pm.width() / bar_pm.devicePixelRatio(), float(bar_top)),)
        self.legend_rect = None
        if self._legend is not None:
            placed = self._place_legend(self._legend, w, h, rects, draws)
            if placed is not None:
                legend_texts, point, pm = placed
                texts.extend(legend_texts)
                draws.append((point, pm))
                self.legend_rect = QRectF(point, QSizeF(pm.width(), pm.height()) / pm.devicePixelRatio())
        return texts, draws

    def _place_legend(
        self, legend: CornerLegend, w: float, h: float, rects: dict[str, tuple[tuple[str, ...], QRectF]],
        draws: Draws,
    ) -> tuple[list[str], QPointF, QPixmap] | None:
        """The legend in the left column between the top-left and bottom-left texts, right of the left
        orientation letter (moved down below a text it would cover, e.g. the top-right lines a narrow
        viewport stacks under the top-left ones), else in the right column (when no extension text sits
        there), in the upper half where an extension text could reach it (narrow views); clear of every
        text, letter and the scale bar drawn so far. None when it fits nowhere."""
        m, gap = self.MARGIN, LEGEND_GAP
        taken = [QRectF(pt, QSizeF(pm.width(), pm.height()) / pm.devicePixelRatio()) for pt, pm in draws]
        ofm = QFontMetrics(self._orient_font)
        max_w = max(0.0, w * LEGEND_WIDTH)
        sides = [("left", "top_left", "bottom_left")]
        if not self._extra_html:
            sides.append(("right", "top_right", "bottom_right"))
        for side, top_corner, bottom_corner in sides:
            top = rects[top_corner][1].bottom() + gap if top_corner in rects else m
            bottom = rects[bottom_corner][1].top() - gap if bottom_corner in rects else h - m
            letter = self._orientation.get(side, "")
            inset = m + (ofm.horizontalAdvance(letter) + gap if letter else 0)
            if self._extra_html and inset + max_w > w - m - extra_text_width(w):
                bottom = min(bottom, h / 2)  # the extension text (lines vary by slice) sits low in reach
            for _ in range(len(taken) + 1):  # below what it would cover (a narrow view's stacked corner)
                rendered = legend.render(max_w, bottom - top, self.devicePixelRatioF(), self.show_identifying)
                if rendered is None:
                    break
                legend_texts, pm = rendered
                size = QSizeF(pm.width(), pm.height()) / pm.devicePixelRatio()
                x = inset if side == "left" else w - inset - size.width()
                point = QPointF(math.floor(x), math.floor(top))
                hit = [r for r in taken if r.intersects(QRectF(point, size))]
                if not hit:
                    return legend_texts, point, pm
                top = max(r.bottom() for r in hit) + gap
        return None

    def extra_backing(self) -> QPainterPath:
        """Where the extensions' HTML has its dark backing now (empty without)."""
        if not self._extra_html:
            return QPainterPath()
        self._compose(self.width(), self.height())
        return self._extra_pixmap(self.width(), self.height())[4]

    def _extra_pixmap(self, w: float, h: float) -> ExtraBlock:
        """The extensions' HTML (e.g. the AI result), right-aligned, ending above the bottom corner texts
        and the scale bar its lines would reach (the bottom-right text, or both where a narrow viewport
        stacks them, see :meth:`_corner_rects`), left of the right orientation letter where it reaches
        that (a 2x2 viewport at 1366 x 768), each line on a dark backing (:func:`line_backing`): its plain
        lines, where it goes, its pixmap, its text's extent and its backing, laid out and rendered once
        per text, size and place (the last EXTRA_CACHE_SIZE are kept: scrolling back and forth renders
        none again; drawn at the same fractional offset as the document was drawn before)."""
        html = self._extra_shown()
        compact = self.extra_is_compact()
        key = (html, w, h, self._extra_below, self._right_letter, self.devicePixelRatioF())
        cached = self._extra_cache.get(key)
        if cached is None:
            doc = QTextDocument()
            doc.setDefaultFont(self._font)
            doc.setDefaultStyleSheet(f"body {{ color: {self._color.name()}; }}")
            doc.setHtml("<div align='right'>" + "<br>".join(text for _, text in html) + "</div>")
            # the compact line may take the viewport's width: one line, above the bottom texts it reaches
            doc.setTextWidth(max(w - 2 * self.MARGIN, 1.0) if compact else extra_text_width(w))
            size: QSizeF = doc.size()
            text_left = w - self.MARGIN - doc.idealWidth()
            reached = [top for right, top in self._extra_below if right > text_left]
            bottom = min(reached, default=h - self.MARGIN) - 4
            x, y = w - self.MARGIN - size.width(), bottom - size.height()
            if self._right_letter is not None:  # a short viewport: 4 lines reach the right orientation letter
                letter = QRectF(*self._right_letter)
                backing_right = w - self.MARGIN - doc.documentMargin() + BACKING_PAD
                block = QRectF(text_left - BACKING_PAD, y, backing_right - text_left, size.height())
                if block.intersects(letter):
                    shift = max(0.0, backing_right + 2 - letter.left())
                    x, text_left = x - shift, text_left - shift
            left, top = math.floor(x), math.floor(y)
            dpr = self.devicePixelRatioF()
            pm = QPixmap(math.ceil((size.width() + 1) * dpr), math.ceil((size.height() + 1) * dpr))
            pm.setDevicePixelRatio(dpr)
            pm.fill(Qt.GlobalColor.transparent)
            p = QPainter(pm)
            p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
            p.translate(QPointF(x - left, y - top))
            backing = line_backing(doc)
            p.fillPath(backing, BACKING)
            doc.drawContents(p)
            p.end()
            if len(self._extra_cache) >= EXTRA_CACHE_SIZE:
                self._extra_cache.clear()
            ink = QRectF(text_left, y, doc.idealWidth(), size.height())
            lines = doc.toPlainText().splitlines()
            cached = self._extra_cache[key] = (lines, QPointF(left, top), pm, ink, backing.translated(x, y))
        return cached

    def _corner_rects(self, w: float, h: float) -> dict[str, tuple[tuple[str, ...], QRectF]]:
        """Each corner's lines and where they go. In a narrow viewport, where a left and a right corner
        would overlap, the right one moves below (top) or above (bottom) the left one."""
        m = self.MARGIN
        fm = QFontMetrics(self._font)
        lh = fm.height()
        placed: dict[str, tuple[tuple[str, ...], QRectF]] = {}
        for corner in CORNERS:
            lines = tuple(self.corner_lines(corner))
            if not lines:
                continue
            width = max(self._text_pixmap(line, self._line_color(line), self._font)[1] for line in lines) + 2
            pw, ph = float(int(width + 1)), float(int(lh * len(lines) + 2))
            x = w - m - pw if corner.endswith("right") else m
            y = h - m - ph if corner.startswith("bottom") else m
            placed[corner] = (lines, QRectF(x, y, pw, ph))
        for left, right, down in (("top_left", "top_right", True), ("bottom_left", "bottom_right", False)):
            if left in placed and right in placed:
                lr, (lines, rr) = placed[left][1], placed[right]
                if lr.right() + m > rr.left():
                    y = lr.bottom() if down else lr.top() - rr.height()
                    placed[right] = (lines, QRectF(rr.left(), y, rr.width(), rr.height()))
        return placed

    def _line_color(self, line: str) -> QColor:
        if self._other_patient and (line == OTHER_PATIENT_LINE or (self.show_phi and line in self._phi)):
            return self._alarm
        return self._warn if line.startswith(LOSSY_PREFIX) else self._color

    def _text_pixmap(
        self, text: str, color: QColor, font: QFont, offset: tuple[float, float] = (0.0, 0.0)
    ) -> tuple[QPixmap, int]:
        """One line of text with its outline, pre-rendered (baseline at OUTLINE + the font's ascent, left
        edge at OUTLINE, moved by the sub-pixel ``offset``: drawn OUTLINE px up and left of the text's
        place), and its advance. Cached by text, colour, font and offset, so a slice change
        re-renders only the lines that changed (the slice number, the position), and repaints draw
        pixmaps instead of text."""
        key = (text, color.rgba(), font is self._orient_font, offset)
        cached = self._text_cache.get(key)
        if cached is not None:
            return cached
        if len(self._text_cache) >= TEXT_CACHE_SIZE:  # e.g. "Im k / n" of every slice of long stacks
            self._text_cache.clear()
        fm = QFontMetrics(font)
        advance = fm.horizontalAdvance(text)
        dpr = self.devicePixelRatioF()
        pad = 2 * OUTLINE + 2  # the outline on both sides, the sub-pixel offset, rounding
        pm = QPixmap(max(1, int((advance + pad) * dpr)), max(1, int((fm.height() + pad) * dpr)))
        pm.setDevicePixelRatio(dpr)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        p.setFont(font)
        self._shadowed(p, OUTLINE + offset[0], OUTLINE + fm.ascent() + offset[1], text, color)
        p.end()
        self._text_cache[key] = (pm, advance)
        return pm, advance

    def _draw_text(self, draws: Draws, x: float, y: float, text: str, color: QColor, font: QFont) -> None:
        """``text`` with its shadow, baseline at ``y``, from its cached pixmap placed on whole pixels (the
        fraction is in the pixmap: the same pixels as drawing the text there)."""
        top = y - QFontMetrics(font).ascent()
        left_px, top_px = math.floor(x), math.floor(top)
        pm, _ = self._text_pixmap(text, color, font, (x - left_px, top - top_px))
        draws.append((QPointF(left_px - OUTLINE, top_px - OUTLINE), pm))

    def _scale_bar_pixmap(self, bar: tuple[int, float], w: float, y: float) -> tuple[int, int, QPixmap]:
        """The scale bar (ticks, shadow and label) pre-rendered: (left, top, pixmap), drawn again only
        when its length, the width or the height of the view changes."""
        mm, length = bar
        key = (mm, length, w, y, self.devicePixelRatioF())
        if self._bar_cache is not None and self._bar_cache[0] == key:
            return self._bar_cache[1]
        label = f"{mm} mm"
        fm = QFontMetrics(self._font)
        x0, x1 = (w - length) / 2, (w + length) / 2
        lx = (w - fm.horizontalAdvance(label)) / 2
        left = math.floor(min(x0, lx)) - 1
        top = math.floor(y - 6 - fm.ascent()) - 1
        right = math.ceil(max(x1, lx + fm.horizontalAdvance(label))) + 3
        bottom = math.ceil(y) + 3
        dpr = self.devicePixelRatioF()
        pm = QPixmap(int((right - left) * dpr), int((bottom - top) * dpr))
        pm.setDevicePixelRatio(dpr)
        pm.fill(Qt.GlobalColor.transparent)
        p = QPainter(pm)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        p.translate(-left, -top)  # whole pixels: the same pixels as drawn on the widget
        for pen_color, dy in ((self._shadow, 1.0), (self._accent, 0.0)):
            p.setPen(pen_color)
            p.drawLine(QPointF(x0 + dy, y + dy), QPointF(x1 + dy, y + dy))
            for x in (x0, x1):
                p.drawLine(QPointF(x + dy, y - 4 + dy), QPointF(x + dy, y + dy))
        p.setFont(self._font)
        self._shadowed(p, lx, y - 6, label, self._accent)
        p.end()
        self._bar_cache = (key, (left, top, pm))
        return left, top, pm

    def _shadowed(self, p: QPainter, x: float, y: float, text: str, color: QColor) -> None:
        """``text`` with a dark OUTLINE px ring on every side (a shadow only down-right left the light
        text's other edges invisible on white bone)."""
        p.setPen(self._shadow)
        for dx in (-OUTLINE, 0, OUTLINE):
            for dy in (-OUTLINE, 0, OUTLINE):
                if dx or dy:
                    p.drawText(QPointF(x + dx, y + dy), text)
        p.setPen(color)
        p.drawText(QPointF(x, y), text)
