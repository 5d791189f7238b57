"""Viewer speed: slice-change cost vs a bare pyqtgraph ImageItem, startup time, time to first slice.

Run: ``QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_scroll.py`` (prints medians and ratios).
Targets (issue 3): slice change <= 1.5x the bare ImageItem and < 4 ms (issue 11: a SEG overlay adds
<= 1 ms); window shown < 1.5 s after
``slicewise`` starts; first slice of a dropped 300-slice folder < 0.5 s. Issue 14: event-loop p99
< 50 ms while scrolling a cold (nothing decoded) JPEG 2000 stack, whose slices fill in as they decode.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from pydicom.uid import JPEG2000Lossless  # noqa: E402
from PySide6.QtCore import QEvent, QMimeData, QObject, QPoint, QPointF, Qt, QTimer, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent  # noqa: E402
from PySide6.QtWidgets import QApplication, QWidget  # noqa: E402

from tests.factories import compress_files, write_ct_series  # noqa: E402
from viewer.core.dicom.volume import StackVolume  # noqa: E402
from viewer.core.paths import demo_study_dir  # noqa: E402
from viewer.qt.app import build_main_window, create_application  # noqa: E402
from viewer.qt.main_window import MainWindow  # noqa: E402

SIZE = (1280, 860)
PAINT_WAIT_S = 2.0  # a change whose image has not painted by then is counted as missed (never so far)


class PaintOnce(QObject):
    """Runs the event loop after a change until ``widget`` has painted once, as the app does after a wheel
    notch (a real window, real QWheelEvents: the image view paints once per notch, the AI timeline at most
    every 33 ms): no ``repaint()`` first, which painted the view a second time per change. Timers that
    are due (the timeline's cursor) run in the same loop, as between the app's notches."""

    def __init__(self, widget: QWidget) -> None:
        super().__init__()
        self.painted = False
        self.missed = 0
        widget.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.painted = True
        return False

    def arm(self) -> None:
        self.painted = False

    def settle(self, app: QApplication) -> None:
        deadline = time.perf_counter() + PAINT_WAIT_S
        while not self.painted:
            app.processEvents()
            if time.perf_counter() > deadline:
                self.missed += 1
                print(f"warning: no paint {PAINT_WAIT_S} s after a change ({self.missed})", file=sys.stderr)
                return


def timed_change(app: QApplication, paint: PaintOnce, window: MainWindow, index: int) -> float:
    """Seconds for one slice change of ``window`` with its render: ``paint`` armed, the slice set, then the
    event loop until the view has painted once (:class:`PaintOnce`), as a wheel notch in the app."""
    t = time.perf_counter()
    paint.arm()
    window.set_slice(index)
    paint.settle(app)
    return time.perf_counter() - t


def bench_bare(
    app: QApplication, frames: list[np.ndarray], changes: int, cpu: list[float] | None = None
) -> list[float]:
    """A bare ImageItem in a ViewBox of the window's size: setImage of a float32 frame, then the event
    loop until it has painted once (:class:`PaintOnce`).
    ``cpu``: the GUI thread's CPU time of each change is appended there."""
    glw = pg.GraphicsLayoutWidget()
    glw.resize(*SIZE)
    vb = glw.addViewBox(lockAspect=True, invertY=True)
    img = pg.ImageItem(axisOrder="row-major")
    vb.addItem(img)
    img.setImage(frames[0], autoLevels=False, levels=(0, 80))
    vb.autoRange()
    glw.show()
    app.processEvents()
    paint = PaintOnce(glw.viewport())
    times = []
    for k in range(changes):
        c = time.thread_time()
        t = time.perf_counter()
        paint.arm()
        img.setImage(frames[k % len(frames)], autoLevels=False, levels=(0, 80))
        paint.settle(app)
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.thread_time() - c)
    glw.close()
    return times


def _open_window(app: QApplication, folder: Path) -> tuple[MainWindow, StackVolume]:
    """A shown main window with ``folder`` loaded, and the volume on screen."""
    window = build_main_window(offer_resume=False)
    window.settings.hang_on_open = False  # one viewport, as the baseline (the head CT protocol shows two)
    window.resize(*SIZE)
    window.show()
    window.open_paths([folder])
    while window.current_volume() is None or window.is_loading():
        app.processEvents()
        time.sleep(0.005)
    vol = window.current_volume()
    assert vol is not None
    return window, vol


def bench_viewer(app: QApplication, folder: Path, changes: int) -> list[float]:
    """Slice changes in the real window."""
    window, vol = _open_window(app, folder)
    for i in range(len(vol)):  # decode everything first: this measures the view, not the decoder
        vol.get_slice(i)
    app.processEvents()
    n = len(vol)
    paint = PaintOnce(window.view.graphics.viewport())
    times = [timed_change(app, paint, window, (k + 1) % n) for k in range(changes)]
    window.close()
    return times


def _analysed_demo(app: QApplication) -> MainWindow | None:
    """The bundled demo head CT (512 x 512, 32 slices) decoded and analysed by the bundled model: the AI
    timeline, slider marks and the AI corner text follow every slice change. None when the model's
    applicability check turns it down."""
    window, vol = _open_window(app, demo_study_dir())
    for i in range(len(vol)):
        vol.get_slice(i)
    if window.ai_controller is None:
        window.close()
        return None
    window.ai_controller.analyze()
    deadline = time.perf_counter() + 120
    while window.ai_controller.prediction() is None:
        if "out of scope" in window.ai_controller.status.label.text() or time.perf_counter() > deadline:
            window.close()
            return None
        app.processEvents()
        time.sleep(0.005)
    app.processEvents()
    return window


def scroll_window(
    app: QApplication, window: MainWindow, changes: int, cpu: list[float] | None = None
) -> list[float]:
    """``changes`` slice changes (next slice, wrapping) in a shown window, each with its render (the
    event loop until the image view has painted once, :class:`PaintOnce`)."""
    n = window.view.count()
    paint = PaintOnce(window.view.graphics.viewport())
    times = []
    for _ in range(changes):
        i = (window.view.index + 1) % n
        c = time.thread_time()
        t = time.perf_counter()
        paint.arm()
        window.set_slice(i)
        paint.settle(app)
        times.append(time.perf_counter() - t)
        if cpu is not None:
            cpu.append(time.thread_time() - c)
    return times


def bench_analysed_ab(
    app: QApplication, frames: list[np.ndarray], changes: int, rounds: int
) -> tuple[list[float], list[float], list[float], list[float]] | None:
    """The analysed demo window (AI timeline shown) against the bare ImageItem, in alternating rounds of
    ``changes`` each, so machine-load drift hits both alike. Returns (bare, viewer) wall times and
    (bare, viewer) GUI-thread CPU times per change; None when the model found the demo out of scope."""
    window = _analysed_demo(app)
    if window is None:
        return None
    scroll_window(app, window, 30)  # warm-up: every slice's overlay lines and AI text rendered once
    bare: list[float] = []
    viewer: list[float] = []
    bare_cpu: list[float] = []
    viewer_cpu: list[float] = []
    for _ in range(rounds):
        bare += bench_bare(app, frames, changes, bare_cpu)
        viewer += scroll_window(app, window, changes, viewer_cpu)
    window.close()
    return bare, viewer, bare_cpu, viewer_cpu


def bench_with_results(
    app: QApplication, plain: Path, with_seg: Path, changes: int
) -> tuple[list[float], list[float], list[float]]:
    """Two windows of the same size, one showing ``plain``, one the same series with a SEG of every
    slice (overlay, Results dock, slider marks): slice changes alternate between them one by one.
    Returns (without, with, with minus without per pair)."""
    w1, v1 = _open_window(app, plain)
    w2, v2 = _open_window(app, with_seg)
    controller = w2.results_controller
    assert controller is not None
    if not controller.wait(120_000) or not controller.placed:
        raise RuntimeError("the SEG of the results case was not read")
    n = len(v1)
    for w, v in ((w1, v1), (w2, v2)):
        for i in range(n):  # decoded, and every overlay tile composed once
            v.get_slice(i)
            w.set_slice(i)
    app.processEvents()
    paints = (PaintOnce(w1.view.graphics.viewport()), PaintOnce(w2.view.graphics.viewport()))
    out: tuple[list[float], list[float]] = ([], [])
    for k in range(2 * (changes // 2)):
        out[k % 2].append(timed_change(app, paints[k % 2], (w1, w2)[k % 2], (k // 2 + 1) % n))
        if k % 2 and not controller.overlay(w2.view).is_shown():
            raise RuntimeError("no overlay on the SEG window's slice")
    w1.close()
    w2.close()
    return out[0], out[1], [b - a for a, b in zip(out[0], out[1], strict=True)]


def bench_overlay_ab(
    app: QApplication, folder: Path, changes: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """One window showing ``folder`` (a series and its SEG): slice changes alternate one by one between
    the overlay drawn and hidden (O, toggled outside the timing), so machine-load drift hits both alike.
    Returns (drawn, hidden, drawn minus hidden per pair of neighbouring changes, first-visit tile cost:
    compose + pixmap per slice)."""
    from viewer.core.foreign.match import SliceAt, compose_overlay
    from viewer.qt.results.overlay import tile_pixmap

    window, vol = _open_window(app, folder)
    controller = window.results_controller
    assert controller is not None
    if not controller.wait(120_000) or not controller.placed:
        raise RuntimeError("the SEG of the results case was not read")
    for i in range(len(vol)):
        vol.get_slice(i)
    n = len(vol)
    uid = vol.stack.uid
    tiles = []
    for i in range(n):
        t = time.perf_counter()
        tile = compose_overlay(controller.layers(SliceAt(uid, i)))
        assert tile is not None
        tile_pixmap(tile)
        tiles.append(time.perf_counter() - t)
    for k in range(n):  # every slice visited once: the pixmaps are cached
        window.set_slice(k)
    app.processEvents()
    paint = PaintOnce(window.view.graphics.viewport())
    drawn: list[float] = []
    hidden: list[float] = []
    for k in range(2 * (changes // 2)):
        on = k % 2 == 0
        controller.set_visible(on)
        window.view.repaint()  # the toggle's own paint, outside the timing
        app.processEvents()
        (drawn if on else hidden).append(timed_change(app, paint, window, (k + 1) % n))
        if controller.overlay(window.view).is_shown() != on:
            raise RuntimeError(f"overlay {'missing' if on else 'shown'} on slice {(k + 1) % n}")
    window.close()
    return drawn, hidden, [a - b for a, b in zip(drawn, hidden, strict=True)], tiles


def bench_legend_ab(
    app: QApplication, folder: Path, changes: int
) -> tuple[list[float], list[float], list[float]]:
    """One window showing ``folder`` (a series and its SEG) with the overlay drawn: slice changes alternate
    one by one between the overlay's legend shown and not (View › Overlay legend, toggled outside the
    timing). Returns (with legend, without, with minus without per pair of neighbouring changes)."""
    window, vol = _open_window(app, folder)
    controller = window.results_controller
    assert controller is not None
    deadline = time.perf_counter() + 120
    while not controller.placed and time.perf_counter() < deadline:  # parsed in the helper process
        app.processEvents()
        time.sleep(0.005)
    if not controller.wait(120_000) or not controller.placed:
        raise RuntimeError("the SEG of the results case was not read")
    n = len(vol)
    for k in range(n):  # decoded, every overlay tile composed once
        vol.get_slice(k)
        window.set_slice(k)
    app.processEvents()
    paint = PaintOnce(window.view.graphics.viewport())
    shown: list[float] = []
    bare: list[float] = []
    for k in range(2 * (changes // 2)):
        on = k % 2 == 0
        controller.set_legend_visible(on)
        window.view.repaint()  # the toggle's own paint, outside the timing
        app.processEvents()
        (shown if on else bare).append(timed_change(app, paint, window, (k + 1) % n))
        if (window.view.overlay.legend_rect is not None) != on:
            raise RuntimeError(f"legend {'missing' if on else 'shown'} on slice {(k + 1) % n}")
    window.close()
    return shown, bare, [a - b for a, b in zip(shown, bare, strict=True)]


def write_seg_folder(folder: Path, series: Path) -> None:
    """``series`` and a two-segment SEG of it: a 160 x 120 block on every slice, a smaller one on half."""
    import shutil

    from tests.result_objects import source_datasets, write_seg

    shutil.copytree(series, folder)
    paths = sorted(folder.glob("*.dcm"))
    masks = np.zeros((len(paths), 512, 512, 2), dtype=bool)
    masks[:, 180:340, 200:320, 0] = True
    masks[::2, 300:360, 150:230, 1] = True
    write_seg(source_datasets(paths), folder, masks, name="zz_seg.dcm")


def bench_during_decode(app: QApplication, folder: Path, changes: int) -> tuple[list[float], float]:
    """Slice changes while the whole compressed stack decodes in the background, as during an AI
    analysis (its own StackVolume, load_all on a worker thread, decoder processes on every core).
    Returns the per-change times and the background load's duration."""
    from viewer.core.dicom.pool import warm_pool

    window, vol = _open_window(app, folder)
    shown = 30
    for i in range(shown):  # scroll among decoded slices: this measures contention, not decoding
        vol.get_slice(i)
    warm_pool()  # as in the app, where the processes start when a compressed stack opens
    background = StackVolume(vol.stack)
    loaded: list[float] = []

    def load() -> None:
        t0 = time.perf_counter()
        background.load_all()
        loaded.append(time.perf_counter() - t0)

    paint = PaintOnce(window.view.graphics.viewport())
    worker = threading.Thread(target=load)
    worker.start()
    times = []
    k = 0
    while worker.is_alive() and k < changes:
        k += 1
        times.append(timed_change(app, paint, window, k % shown))
    worker.join()
    background.close()
    window.close()
    return times, loaded[0]


def bench_cold_scroll(
    app: QApplication, folder: Path, notches: int, interval_ms: int = 15
) -> tuple[np.ndarray, int, float, int]:
    """Scroll a cold compressed stack one slice per ``interval_ms`` (a fast wheel) while a 5 ms heartbeat
    timer measures how long the event loop is away. Returns (heartbeat lags in s, slice changes that
    showed a stand-in, seconds from the last change until its slice was on screen, last index)."""
    window, _ = _open_window(app, folder)
    beats: list[float] = []
    heartbeat = QTimer()
    heartbeat.setInterval(5)
    heartbeat.timeout.connect(lambda: beats.append(time.perf_counter()))
    sent = [0, 0]  # changes, changes that showed a stand-in

    def step() -> None:
        if sent[0] >= notches:
            return
        window.set_slice(window.view.index + 1)
        sent[0] += 1
        sent[1] += window.view.shown_index != window.view.index

    driver = QTimer()
    driver.setInterval(interval_ms)
    driver.timeout.connect(step)
    heartbeat.start()
    driver.start()
    while sent[0] < notches:
        app.processEvents()
        time.sleep(0.001)
    driver.stop()
    t0 = time.perf_counter()
    while window.view.shown_index != window.view.index:
        app.processEvents()
        time.sleep(0.001)
    fill = time.perf_counter() - t0
    heartbeat.stop()
    last = window.view.index
    image = window.view.image.image
    assert image is not None and image[0, 0] == last  # write_ct_series: HU k in slice k's corner
    window.close()
    lag = np.diff(np.asarray(beats)) - 0.005
    return lag, sent[1], fill, last


def bench_startup(runs: int) -> list[float]:
    out = []
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    env.setdefault("SLICEWISE_DATA_DIR", tempfile.mkdtemp(prefix="slicewise-bench-"))
    for _ in range(runs):
        t0 = time.time()
        proc = subprocess.run(
            [sys.executable, "-m", "viewer", "--quit-after-show"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        shown = [line for line in proc.stdout.splitlines() if line.startswith("SHOWN ")]
        if not shown:
            raise RuntimeError(f"viewer did not report a shown window: {proc.stderr[-500:]}")
        out.append(float(shown[0].split()[1]) - t0)
    return out


def _stamper(box: list[float]) -> Callable[[object], None]:
    def stamp(_stack: object) -> None:
        box.append(time.perf_counter())

    return stamp


def bench_first_slice(app: QApplication, folder: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        window = build_main_window()
        window.resize(*SIZE)
        window.show()
        app.processEvents()
        shown: list[float] = []
        window.stack_shown.connect(_stamper(shown))
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(folder))])
        drop = QDropEvent(
            QPointF(400, 300),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        enter = QDragEnterEvent(
            QPoint(400, 300),
            Qt.DropAction.CopyAction,
            mime,
            Qt.MouseButton.LeftButton,
            Qt.KeyboardModifier.NoModifier,
        )
        t0 = time.perf_counter()
        QApplication.sendEvent(window, enter)
        QApplication.sendEvent(window, drop)
        while not shown:
            app.processEvents()
            time.sleep(0.001)
        window.view.repaint()  # the first slice on screen
        out.append(time.perf_counter() - t0)
        while window.is_loading():
            app.processEvents()
        window.close()
        app.processEvents()
    return out


def _print_analysed(app: QApplication, frames: list[np.ndarray], args: argparse.Namespace) -> None:
    load = os.getloadavg()[0]
    analysed = bench_analysed_ab(app, frames, args.changes, args.rounds)
    if analysed is None:
        print("  viewer with the AI timeline shown: skipped (the model found the demo out of scope)")
        return
    b_wall, a_wall, b_cpu, a_cpu = (statistics.median(x) * 1000 for x in analysed)
    print(
        f"  viewer with the AI timeline shown (demo study, after Analyze), {args.rounds} x {args.changes} "
        f"changes alternating with the bare ImageItem (load average {load:.1f} -> {os.getloadavg()[0]:.1f}): "
        f"{a_wall:.2f} ms vs bare {b_wall:.2f} ms, ratio {a_wall / b_wall:.2f}x (target <= 1.5x and <= 4 ms) "
        f"{'OK' if a_wall / b_wall <= 1.5 and a_wall <= 4 else 'MISSED'}; GUI-thread CPU per change "
        f"{a_cpu:.2f} ms vs {b_cpu:.2f} ms ({a_cpu / b_cpu:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ai-only", action="store_true", help="only the AI-timeline case against the bare")
    parser.add_argument("--plain-only", action="store_true", help="only the viewer vs the bare ImageItem")
    args = parser.parse_args()
    os.environ.setdefault("SLICEWISE_DATA_DIR", tempfile.mkdtemp(prefix="slicewise-bench-"))
    app = create_application()
    with tempfile.TemporaryDirectory(prefix="slicewise-bench-") as tmp:
        scroll = Path(tmp) / "scroll"
        write_ct_series(scroll, 60, rows=512, columns=512, shuffle=False, random_names=False)
        rng = np.random.default_rng(0)
        frames = [rng.normal(40, 30, (512, 512)).astype(np.float32) for _ in range(60)]
        bench_bare(app, frames, 30)  # warm-up of both paths (first window, caches, fonts)
        if args.ai_only:
            _print_analysed(app, frames, args)
            return
        bench_viewer(app, scroll, 30)
        bare: list[float] = []
        viewer: list[float] = []
        for _ in range(args.rounds):  # alternate so machine-load drift hits both alike
            bare += bench_bare(app, frames, args.changes)
            viewer += bench_viewer(app, scroll, args.changes)
        mb, mv = statistics.median(bare) * 1000, statistics.median(viewer) * 1000
        print(f"slice change, 512x512 CT, {args.rounds} x {args.changes} changes incl. render (median):")
        print(f"  bare ImageItem.setImage: {mb:.2f} ms   viewer: {mv:.2f} ms   ratio {mv / mb:.2f}x")
        p95v, p95b = np.percentile(viewer, 95) * 1000, np.percentile(bare, 95) * 1000
        print(f"  viewer p95 {p95v:.2f} ms   bare p95 {p95b:.2f} ms")
        if args.plain_only:
            return
        with_seg = Path(tmp) / "scroll_seg"
        write_seg_folder(with_seg, scroll)
        plain, seg, window_paired = bench_with_results(app, scroll, with_seg, 2 * args.changes)
        mo, ms, mw = (statistics.median(x) * 1000 for x in (plain, seg, window_paired))
        drawn, hidden, paired, tiles = bench_overlay_ab(app, with_seg, 2 * args.changes)
        md, mh, mp, mt = (statistics.median(x) * 1000 for x in (drawn, hidden, paired, tiles))
        print(
            f"  a SEG of every slice (2 segments), two windows alternating change by change: without "
            f"{mo:.2f} ms, with {ms:.2f} ms, median paired difference {mw:+.2f} ms (target <= +1 ms) "
            f"{'OK' if mw <= 1.0 else 'MISSED'}; one window, overlay drawn {md:.2f} ms vs hidden (O) "
            f"{mh:.2f} ms, paired {mp:+.2f} ms; first visit of a slice composes its tile once: {mt:.2f} ms"
        )
        with_legend, without_legend, legend_paired = bench_legend_ab(app, with_seg, 2 * args.changes)
        ml, mn, mlp = (statistics.median(x) * 1000 for x in (with_legend, without_legend, legend_paired))
        print(
            f"  overlay legend (issue 11): slice change with it {ml:.2f} ms vs without {mn:.2f} ms, median "
            f"paired difference {mlp:+.2f} ms (target <= +1 ms) {'OK' if mlp <= 1.0 else 'MISSED'}"
        )
        # the bundled demo head CT (512 x 512, 32 slices): in the model's scope, unlike the 60-slice
        # test series above, which the applicability check turns down (more slices than trained on)
        _print_analysed(app, frames, args)
        j2k = Path(tmp) / "j2k"
        compress_files(
            write_ct_series(j2k, 300, rows=512, columns=512, shuffle=False, random_names=False),
            JPEG2000Lossless,
        )
        during, load_s = bench_during_decode(app, j2k, 2 * args.changes)
        md = statistics.median(during) * 1000
        print(
            f"  viewer while a 300-slice JPEG 2000 stack decodes in full in the background "
            f"({load_s:.2f} s, {len(during)} changes): median {md:.2f} ms, "
            f"p95 {np.percentile(during, 95) * 1000:.2f} ms, ratio {md / mb:.2f}x"
        )
        lag, stand_ins, fill, last = bench_cold_scroll(app, j2k, 150)
        p99 = np.percentile(lag, 99) * 1000
        print(
            f"  scrolling a cold 300-slice JPEG 2000 stack (150 changes, one per 15 ms): event-loop lag "
            f"p50 {np.percentile(lag, 50) * 1000:.1f} ms, p99 {p99:.1f} ms (target < 50 ms) "
            f"{'OK' if p99 < 50 else 'MISSED'}, max {lag.max() * 1000:.1f} ms; {stand_ins} changes showed a "
            f"stand-in; slice {last + 1} on screen {fill * 1000:.0f} ms after the last change"
        )
        startup = bench_startup(args.runs)
        print(
            f"`slicewise` start to shown window: median {statistics.median(startup):.2f} s "
            f"(runs: {', '.join(f'{s:.2f}' for s in startup)})"
        )
        big = Path(tmp) / "drop300"
        write_ct_series(big, 300, rows=512, columns=512, shuffle=True)
        first = bench_first_slice(app, big, args.runs)
        print(
            f"dropped 300-slice folder to first slice: median {statistics.median(first):.3f} s "
            f"(runs: {', '.join(f'{s:.3f}' for s in first)})"
        )


if __name__ == "__main__":
    main()
