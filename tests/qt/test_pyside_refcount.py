"""PySide6 6.12.0 drops references to None/True on void calls and signal emits (then aborts mid-scroll).

pyproject.toml excludes that release; this test fails on 6.12.0 and passes on 6.11.3, so a bad
PySide6 never reaches users silently. (Python 3.11: None and True are not immortal yet.)
"""

from __future__ import annotations

import sys

import pytest
from PySide6.QtCore import QObject, QPointF, Signal

CALLS = 20_000
MAX_DROP = 1_000

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 12), reason="None/True are immortal from Python 3.12: refcounts do not move"
)


class _Emitter(QObject):
    sig = Signal(object)


def test_void_method_calls_keep_none_refcount(qapp: object) -> None:
    point = QPointF()
    before = sys.getrefcount(None)
    for i in range(CALLS):
        point.setX(float(i))  # returns None (a void C++ method)
    after = sys.getrefcount(None)
    assert before - after <= MAX_DROP, f"refcount(None) dropped by {before - after} over {CALLS} void calls"


def test_signal_emit_keeps_true_refcount(qapp: object) -> None:
    emitter = _Emitter()
    received: list[int] = [0]

    def slot(value: object) -> None:
        received[0] += 1

    emitter.sig.connect(slot)
    before = sys.getrefcount(True)
    for _ in range(CALLS):
        emitter.sig.emit(True)
    after = sys.getrefcount(True)
    assert received[0] == CALLS
    assert before - after <= MAX_DROP, f"refcount(True) dropped by {before - after} over {CALLS} emits"
