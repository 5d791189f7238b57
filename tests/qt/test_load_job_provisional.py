"""LoadJob hands the GUI a provisional stack of the first files read before the scan's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pytestqt.qtbot import QtBot

from tests.factories import write_ct_series
from viewer.core.dicom.model import LoadReport, Stack
from viewer.core.dicom.volume import StackVolume
from viewer.qt.workers import LoadJob


def test_load_job_emits_a_provisional_stack_before_its_report(qtbot: QtBot, tmp_path: Path) -> None:
    write_ct_series(tmp_path / "ct", 40, rows=32, columns=32)
    job = LoadJob([tmp_path / "ct"])
    events: list[tuple[str, object]] = []
    job.provisional.connect(lambda stack: events.append(("provisional", stack)))
    job.done.connect(lambda report: events.append(("done", report)))
    job.start()
    qtbot.waitUntil(lambda: any(kind == "done" for kind, _ in events), timeout=60_000)
    assert job.wait(10_000)
    assert [kind for kind, _ in events] == ["provisional", "done"]
    provisional, report = events[0][1], events[1][1]
    assert isinstance(provisional, Stack) and isinstance(report, LoadReport)
    (final,) = report.all_stacks()
    assert 0 < len(provisional) < len(final)
    index = {info.sop_instance_uid: k for k, info in enumerate(final.slices)}
    with StackVolume(provisional) as early, StackVolume(final) as full:
        j = len(early) // 2
        k = index[provisional.slices[j].sop_instance_uid]
        assert provisional.slices[j].position == final.slices[k].position
        np.testing.assert_array_equal(early.get_slice(j), full.get_slice(k))
