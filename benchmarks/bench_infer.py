"""Inference benchmark (issue 5): ONNX Runtime CPU vs PyTorch eager, FLOPs, peak, preprocessing, end to end.

    .venv/bin/python benchmarks/bench_infer.py [--model M.onnx] [--repeats 3] [--quick] [--no-gui]

Prints medians and ratios; asserts nothing. Sections:
1. matmul peak (fp32, 1 and 2 threads) measured in the same run;
2. ONNX Runtime on the model to analyse (bundled model if present, else a stand-in exported from
   training.model's default ICHNet): slices/s at 40 and 300 slices, ORT_ENABLE_ALL vs ENABLE_BASIC,
   1 vs 2 intra-op threads;
3. PyTorch eager vs ONNX Runtime on the SAME weights (a freshly built ICHNet with the training
   package's default architecture and input size, 256 px, exported in this run), when torch and the
   training package are importable, with the 40-slice model time on 2 threads (target <= 0.5 s);
4. FLOPs per slice (torch FlopCounterMode on that ICHNet: conv + linear; the GRU is < 1 %) and the
   achieved GFLOP/s against the measured peak;
5. preprocessing, 40 slices of 512x512 HU, interleaved: version 1 (pad + area resize to the model's
   size) vs version 2 (head-centred 256 px over 230 mm, slab averaging) at 5 mm and at 1 mm slices;
6. end to end in the GUI: 'Analyze' on a 40-slice 512x512 CT stack until the timeline has drawn;
7. localisation maps (a model with a ``slice_maps`` output, contract version 2): model time for 40
   slices on 2 threads with the maps vs the same graph with the maps branch cut away
   (``onnx.utils.extract_model`` to slice_probs + study_probs: the model without maps), interleaved.
The viewer never imports ``training``; only this script does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# no busy-waiting OpenMP workers from torch stealing the cores while ONNX Runtime is timed
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from viewer.core.paths import bundled_model_path
from viewer.core.preprocess import PreprocessSpec, SliceGeometry, preprocess, preprocess_stack


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def matmul_peak(threads: int, n: int = 1024, repeats: int = 10) -> float:
    """Best fp32 GFLOP/s of an n x n x n MatMul in ONNX Runtime itself (MLAS) on ``threads`` threads."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "peak",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = Path(tempfile.mkdtemp()) / "peak.onnx"
    onnx.save(model, str(path))
    sess = ort_session(path, threads)
    a = np.random.rand(n, n).astype(np.float32)
    t = best_time(lambda: sess.run(None, {"a": a, "b": a}), repeats)
    return 2 * n**3 / t / 1e9


def interleaved_rates(sessions: dict[str, Any], n: int, size: int, rounds: int) -> dict[str, float]:
    """Median slices/s per session, runs alternating between sessions (fair under shared-CPU noise)."""
    x = np.random.default_rng(0).random((1, n, 3, size, size), dtype=np.float32)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for sess in sessions.values():
        sess.run(None, {"slices": x})
    for _ in range(rounds):
        for key, sess in sessions.items():
            t = time.perf_counter()
            sess.run(None, {"slices": x})
            times[key].append(time.perf_counter() - t)
    return {k: n / statistics.median(v) for k, v in times.items()}


def ort_session(path: Path, threads: int, level: str = "all") -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if level == "all"
        else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_rate(sess: Any, n: int, size: int, repeats: int) -> float:
    x = np.random.default_rng(0).random((1, n, 3, size, size), dtype=np.float32)
    t = median_time(lambda: sess.run(None, {"slices": x}), repeats)
    return n / t


def model_input_size(path: Path) -> int:
    from viewer.core.inference.engine import load_model_info

    return load_model_info(path).input_size


def standin_export(size: int | None, folder: Path) -> tuple[Any, Path] | None:
    """(ICHNet, exported .onnx) with the training package's default architecture, or None.

    ``size`` None: the architecture's own default input size."""
    try:
        import torch  # noqa: F401

        from training.export import export_model
        from training.model import ICHNet, ModelConfig
        from viewer.core.constants import RSNA_CLASSES
    except ImportError as exc:
        print(f"  (torch / training not importable: {exc}; PyTorch comparison skipped)")
        return None
    cfg = ModelConfig() if size is None else ModelConfig(input_size=size)
    size = cfg.input_size
    net = ICHNet(cfg).eval()
    meta = {
        "schema_version": 1,
        "model_name": "bench-standin",
        "model_version": "0",
        "class_names": list(RSNA_CLASSES),
        "modality": "CT",
        "input_layout": "BSCHW",
        "input_size": size,
        "windows": [{"width": 80, "level": 40}, {"width": 200, "level": 80}, {"width": 380, "level": 40}],
        "slice_order": "ascending_position",
        "thresholds": dict.fromkeys(RSNA_CLASSES, 0.5),
        "intended_use": "benchmark only",
        "min_slices": 3,
    }
    path = folder / "standin.onnx"
    export_model(net, path, meta, parity=False)
    return net, path


def torch_rate(net: Any, n: int, size: int, threads: int, repeats: int) -> float:
    import torch

    from training.model import ExportWrapper

    torch.set_num_threads(threads)
    wrapper = ExportWrapper(net).eval()
    x = torch.rand(1, n, 3, size, size)
    with torch.inference_mode():
        t = median_time(lambda: wrapper(x), repeats)
    return n / t


def flops_per_slice(net: Any, size: int, n: int = 8) -> float | None:
    try:
        import torch
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.rand(1, n, 3, size, size))
    return counter.get_total_flops() / n


def bench_preprocess(size: int, repeats: int) -> dict[str, float]:
    """slices/s of version 1 and version 2 preprocessing on the same 40 x 512 x 512 HU, interleaved."""
    rng = np.random.default_rng(1)
    hu = np.full((40, 512, 512), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[0:512, 0:512]
    head = ((yy - 270) / 200.0) ** 2 + ((xx - 250) / 160.0) ** 2 < 1.0
    hu[:, head] = rng.normal(30, 20, (40, int(head.sum()))).astype(np.float32)
    v1 = PreprocessSpec(version=1, size=size)
    v2 = PreprocessSpec(version=2, size=256, field_mm=230.0, slab_mm=5.0)
    geo5 = SliceGeometry((0.45, 0.45), positions=tuple(5.0 * i for i in range(40)), thickness=5.0)
    geo1 = SliceGeometry((0.45, 0.45), positions=tuple(1.0 * i for i in range(40)), thickness=1.0)
    cases: dict[str, Callable[[], Any]] = {
        f"v1 ({size} px)": lambda: preprocess(hu, v1),
        "v2 5 mm": lambda: preprocess(hu, v2, geo5),
        "v2 1 mm (slab)": lambda: preprocess(hu, v2, geo1),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for fn in cases.values():
        fn()
    for _ in range(max(3, repeats)):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: 40 / statistics.median(v) for name, v in times.items()}


def bench_gui(model: Path, repeats: int) -> tuple[float, float] | None:
    """(cold s, warm median s): Analyze -> timeline drawn, 40 slices 512x512, via the real MainWindow."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        from PySide6.QtWidgets import QApplication

        from viewer.qt.ai import attach
        from viewer.qt.main_window import MainWindow
    except ImportError as exc:
        print(f"  (GUI not importable: {exc})")
        return None
    from tests.factories import write_ct_series

    app = QApplication.instance() or QApplication([])
    root = Path(tempfile.mkdtemp(prefix="bench-gui-"))
    os.environ["SLICEWISE_DATA_DIR"] = str(root / "data")
    folders = []
    for k in range(repeats + 1):
        f = root / f"s{k}"
        write_ct_series(f, 40, rows=512, columns=512, seed=k)
        folders.append(f)
    w = MainWindow()
    w.settings.hang_on_open = False  # one viewport, as before hanging protocols
    ctrl = attach(w)
    ctrl.set_model_path(model)
    ctrl.set_provider("cpu")
    w.show()
    times = []
    for f in folders:
        done: list[Any] = []
        w.load_finished.connect(lambda r, d=done: d.append(r))
        w.open_paths([f])
        while not done:
            app.processEvents()
            time.sleep(0.001)
        w.show_stack(done[0].all_stacks()[0].uid)
        vol = w.current_volume()
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and any(vol.cached(i) is None for i in range(len(vol))):
            app.processEvents()  # the reader looks at the stack first: the viewer decodes it meanwhile
            time.sleep(0.005)
        drawn: list[float] = []
        ctrl.prediction_shown.connect(
            lambda p, d=drawn: d.append(time.perf_counter()) if p is not None else None
        )
        t0 = time.perf_counter()
        ctrl.analyze()
        while not drawn:
            app.processEvents()
            time.sleep(0.0005)
        ctrl.timeline.plot.grab()  # force the plot to render
        times.append(time.perf_counter() - t0)
        ctrl.prediction_shown.disconnect()
        w.load_finished.disconnect()
    ctrl.shutdown()
    w.close()
    return times[0], statistics.median(times[1:])


def synthetic_studies(n: int, seed: int, size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(model input [1, S, 3, size, size], labels [S, 6]) for ``n`` studies from training.synth."""
    from training.synth import SynthConfig, render_study
    from viewer.core.constants import MODEL_WINDOWS

    out = []
    ss = np.random.SeedSequence(seed)
    for child in ss.spawn(n):
        rng = np.random.default_rng(child)
        study = render_study(rng, int(rng.integers(24, 41)), SynthConfig(size=256))
        out.append((preprocess_stack(study.hu, MODEL_WINDOWS, size)[None], study.labels))
    return out


def make_int8(model: Path, out: Path, size: int, calib_studies: int = 12, seed: int = 1234) -> Path:
    """Static QDQ INT8 (Conv/MatMul/Gemm; the GRU stays fp32), calibrated on synthetic training data."""
    import json

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    data = synthetic_studies(calib_studies, seed, size)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"slices": x} for x, _ in data])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
    )
    pre.unlink(missing_ok=True)
    src = onnx.load(str(model))
    q = onnx.load(str(out))
    props = {p.key: p.value for p in src.metadata_props}
    import hashlib

    props["model_name"] = json.dumps(json.loads(props.get("model_name", '"model"')) + "-int8")
    props["quantized_from_sha256"] = json.dumps(hashlib.sha256(model.read_bytes()).hexdigest())
    props["quantization"] = json.dumps(
        {
            "format": "QDQ static",
            "weights": "int8 per-channel",
            "activations": "uint8",
            "calibration": f"{calib_studies} synthetic training studies (training.synth, seed {seed})",
        }
    )
    del q.metadata_props[:]
    onnx.helper.set_model_props(q, props)
    onnx.save(q, str(out))
    return out


def any_auc(path: Path, studies: list[tuple[np.ndarray, np.ndarray]]) -> float:
    from training.metrics import roc_auc

    sess = ort_session(path, 2)
    ys, ps = [], []
    for x, y in studies:
        ps.append(sess.run(["slice_probs"], {"slices": x})[0][0][:, 0])
        ys.append(y[:, 0])
    return roc_auc(np.concatenate(ys), np.concatenate(ps))


def bench_int8(model: Path, out: Path, size: int, repeats: int, held_out: int) -> None:
    make_int8(model, out, size)
    studies = synthetic_studies(held_out, 98765, size)
    a32, a8 = any_auc(model, studies), any_auc(out, studies)
    r32 = ort_rate(ort_session(model, 2), 40, size, repeats)
    r8 = ort_rate(ort_session(out, 2), 40, size, repeats)
    verdict = "KEEP" if abs(a32 - a8) <= 0.005 else "REJECT (AUC drop > 0.005)"
    print(
        f"INT8 QDQ: per-slice 'any' AUC fp32 {a32:.4f} vs int8 {a8:.4f} (delta {a8 - a32:+.4f}, "
        f"{held_out} held-out synthetic studies) -> {verdict}"
    )
    print(
        f"INT8 QDQ: {r8:.1f} vs fp32 {r32:.1f} slices/s (2 threads, 40 slices): {r8 / r32:.2f}x; wrote {out}"
    )


def bench_maps(model: Path, folder: Path, size: int, rounds: int, n: int = 40, threads: int = 2) -> None:
    """Model time with vs without the localisation maps (same weights), interleaved medians."""
    import onnx.utils

    from viewer.core.constants import MODEL_INPUT_NAME, MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT
    from viewer.core.inference.engine import load_model_info

    if load_model_info(model).maps is None:
        print("maps: the model has no slice_maps output; section skipped")
        return
    without = folder / "without_maps.onnx"
    onnx.utils.extract_model(
        str(model), str(without), [MODEL_INPUT_NAME], [MODEL_SLICE_OUTPUT, MODEL_STUDY_OUTPUT]
    )
    sessions = {"with maps": ort_session(model, threads), "without maps": ort_session(without, threads)}
    rates = interleaved_rates(sessions, n, size, rounds)
    t_with, t_without = n / rates["with maps"], n / rates["without maps"]
    print(
        f"maps: {n} slices, {threads} threads, model time (interleaved, median of {rounds}): with maps "
        f"{t_with:.3f} s, without {t_without:.3f} s, ratio {t_with / t_without:.3f} (target <= 1.20)"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip the 300-slice runs")
    ap.add_argument("--no-gui", action="store_true")
    ap.add_argument("--int8", type=Path, default=None, help="also build and evaluate an INT8 QDQ model here")
    ap.add_argument("--held-out", type=int, default=24, help="synthetic studies for the INT8 AUC check")
    ap.add_argument("--maps-only", action="store_true", help="only section 7 (maps vs no maps)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    model = args.model or bundled_model_path()
    size = 128
    bundled = model.is_file()
    if bundled:
        size = model_input_size(model)
    print(f"cpus (affinity): {len(os.sched_getaffinity(0))}")
    if args.maps_only:
        bench_maps(model, tmp, size, max(9, 3 * args.repeats))
        return 0
    peaks = {t: matmul_peak(t) for t in (1, 2)}
    print(
        f"fp32 MatMul peak (ORT/MLAS, 1024^3, best of 10): 1 thread {peaks[1]:.1f}, "
        f"2 threads {peaks[2]:.1f} GFLOP/s"
    )

    standin = standin_export(None, tmp)  # the training package's current architecture at its own size
    if not bundled:
        if standin is None:
            print("no bundled model and no torch/training: nothing to benchmark")
            return 1
        model = standin[1]
        size = model_input_size(model)
        print(f"NOTE: bundled model absent; benchmarking the stand-in ICHNet (default config, {size} px)")
    print(f"model: {model.name}, input {size} px")

    sizes = (40,) if args.quick else (40, 300)
    rounds = max(3, 2 * args.repeats)
    for n in sizes:
        sessions = {
            "ALL t=1": ort_session(model, 1),
            "ALL t=2": ort_session(model, 2),
            "BASIC t=1": ort_session(model, 1, "basic"),
            "BASIC t=2": ort_session(model, 2, "basic"),
        }
        rates = interleaved_rates(sessions, n, size, rounds)
        text = ", ".join(f"{k} {v:.1f}" for k, v in rates.items())
        print(f"ORT slices/s at {n} slices (interleaved, median of {rounds}): {text}")
        print(
            f"   2-thread / 1-thread {rates['ALL t=2'] / rates['ALL t=1']:.2f}; "
            f"ENABLE_ALL / ENABLE_BASIC (2 threads) {rates['ALL t=2'] / rates['BASIC t=2']:.2f}"
        )
    if standin is not None:
        net, path = standin
        ssize = int(net.cfg.input_size)
        print(f"stand-in: training.model default ICHNet, {ssize} px, widths {net.cfg.widths}")
        flops = flops_per_slice(net, ssize)
        for threads in (1, 2):
            sess = ort_session(path, threads)
            for n in sizes:
                o = ort_rate(sess, n, ssize, args.repeats)
                p = torch_rate(net, n, ssize, threads, args.repeats)
                print(
                    f"same weights, threads={threads} slices={n:3d}: ORT {o:7.1f} vs PyTorch eager {p:7.1f} "
                    f"slices/s, ratio {o / p:.2f}x"
                )
                if n == 40:
                    print(f"   40-slice study, model time: ORT {40 / o:.3f} s, PyTorch {40 / p:.3f} s")
                if flops and n == 40:
                    gflops = o * flops / 1e9
                    print(
                        f"   FLOPs/slice {flops / 1e9:.3f} GFLOP; ORT achieves {gflops:.1f} GFLOP/s = "
                        f"{100 * gflops / peaks[threads]:.0f} % of the {threads}-thread matmul peak"
                    )
    later = {t: matmul_peak(t) for t in (1, 2)}
    print(f"fp32 MatMul peak re-measured: 1 thread {later[1]:.1f}, 2 threads {later[2]:.1f} GFLOP/s")
    rates_pre = bench_preprocess(size, args.repeats)
    base = rates_pre[f"v1 ({size} px)"]
    text = ", ".join(f"{k} {v:.0f} ({v / base:.2f}x v1)" for k, v in rates_pre.items())
    print(f"preprocessing 40 x 512x512 HU -> model input, slices/s (interleaved medians): {text}")
    bench_maps(model, tmp, size, max(9, 3 * args.repeats))
    if args.int8 is not None:
        bench_int8(model, args.int8, size, args.repeats, args.held_out)
    if not args.no_gui:
        gui = bench_gui(model, args.repeats)
        if gui is not None:
            print(
                f"end to end, 40 slices 512x512 (viewer has decoded them), Analyze -> timeline drawn: "
                f"first {gui[0]:.3f} s (incl. ONNX Runtime session creation), then median {gui[1]:.3f} s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
