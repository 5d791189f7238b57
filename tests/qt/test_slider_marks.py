"""The slice slider's marks (AI-flagged slices, results) are drawn from a cached pixmap (issue 12 speed):
the pixels must be those of drawing every mark directly, and follow new marks, ranges and sizes."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QStyle, QStyleOptionSlider
from pytestqt.qtbot import QtBot

from viewer.qt.slice_slider import MarkedSlider


def _pixels(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine() // 4, 4)
    return rows[:, : image.width(), :3].copy()


def _grab(slider: MarkedSlider) -> QImage:
    image = QImage(slider.size(), QImage.Format.Format_RGB32)
    image.fill(QColor("black"))
    slider.render(image)
    return image


def _direct(slider: MarkedSlider, marks: dict[str, tuple[list[int], str]]) -> np.ndarray:
    """The slider without marks, then every mark drawn line by line (as the slider did before caching)."""
    saved = slider.marks()
    for key in saved:
        slider.set_marks(key, [], "")
    image = _grab(slider)
    opt = QStyleOptionSlider()
    slider.initStyleOption(opt)
    style = slider.style()
    cc = QStyle.ComplexControl.CC_Slider
    groove = style.subControlRect(cc, opt, QStyle.SubControl.SC_SliderGroove, slider)
    handle = style.subControlRect(cc, opt, QStyle.SubControl.SC_SliderHandle, slider)
    x0 = groove.left() + handle.width() / 2
    span = max(1.0, groove.width() - handle.width())
    rng = slider.maximum() - slider.minimum()
    p = QPainter(image)
    for indices, color in marks.values():
        p.setPen(QPen(QColor(color), 2))
        for i in indices:
            x = x0 + (i - slider.minimum()) / rng * span
            p.drawLine(int(x), 2, int(x), 7)
            p.drawLine(int(x), slider.height() - 7, int(x), slider.height() - 2)
    p.end()
    for key, (indices, color) in marks.items():
        slider.set_marks(key, indices, color)
    return _pixels(image)


def test_cached_marks_look_as_marks_drawn_directly(qtbot: QtBot) -> None:
    slider = MarkedSlider()
    qtbot.addWidget(slider)
    slider.resize(500, 24)
    slider.setRange(0, 59)
    slider.setValue(10)
    marks = {"ai": ([3, 4, 5, 20, 41], "#ff7b72"), "results": ([7, 20, 58], "#40c8f0")}
    for key, (indices, color) in marks.items():
        slider.set_marks(key, indices, color)
    first = _pixels(_grab(slider))
    assert np.array_equal(first, _direct(slider, marks))
    slider.setValue(30)  # the handle moves, the marks stay
    assert np.array_equal(_pixels(_grab(slider)), _direct(slider, marks))
    marks["ai"] = ([0, 59], "#ff7b72")  # new marks, a new range and a new width: drawn anew
    slider.set_marks("ai", *marks["ai"])
    slider.setRange(0, 99)
    slider.resize(333, 24)
    now = _pixels(_grab(slider))
    assert np.array_equal(now, _direct(slider, marks))
    assert not np.array_equal(now[:, :333], first[:, :333])
