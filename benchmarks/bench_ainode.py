"""AI node benchmark (issue 13 item 5): ``slicewise listen`` in-process against a real Orthanc on loopback.

Per round (interleaved), a fresh 40-slice 512 x 512 head CT (new UIDs, slightly different pixels, so the
result cache never answers) is C-STOREd by a pynetdicom SCU, one association:

1. intake: instances/s into the node (checked, written to the spool with fsync, recorded in the SQLite
   queue before each response) against a bare pynetdicom Storage SCP that only writes each instance's
   bytes to a file (the baseline a user would write);
2. latency: seconds from the last C-STORE response to the result SR being in Orthanc (REST polled every
   10 ms; target <= 3 s on 2 CPU threads), against the floor: the same steps run directly in one thread
   (load, model, AI objects, C-STORE) without the queue. The sender releases its association after the
   last instance, so the series is due after the node's release quiet time, not the (default 5 s) quiet
   time.

Usage: ``python benchmarks/bench_ainode.py [--repeats 5] [--slices 40] [--quiet 5] [--release-quiet 0.5]
[--threads 2]``.
Prints medians; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from pydicom import dcmread  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]  # noqa: E402

from tests.pacs.orthanc import ORTHANC_AET, free_port, running_orthanc, unavailable_reason  # noqa: E402
from tests.scope_cases import axial_positions, write_volume  # noqa: E402
from viewer.core.ainode.node import DEFAULT_QUIET_S, DEFAULT_RELEASE_QUIET_S, AiNode, NodeConfig  # noqa: E402
from viewer.core.ainode.result_object import write_result_objects  # noqa: E402
from viewer.core.ainode.scp import IntakeScp  # noqa: E402
from viewer.core.inference.cache import PredictionCache  # noqa: E402
from viewer.core.inference.engine import InferenceEngine  # noqa: E402
from viewer.core.pacs import DimseClient, LocalAe, PacsNode  # noqa: E402
from viewer.core.paths import bundled_model_path  # noqa: E402

NODE_AET, SENDER_AET = "SLICEWISE_AI", "CT_SCANNER"


def head_series(folder: Path, n: int, seed: int, size: int = 512, ps: float = 0.45) -> list[Path]:
    """A head-like CT (skull ring around brain) with a little noise, so every round's pixels differ."""
    c = (np.arange(size) - (size - 1) / 2) * ps
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x, y / 1.2)
    base = np.where(r < 78, 30.0, -1000.0)
    base[(r >= 72) & (r < 78)] = 1000.0
    rng = np.random.default_rng(seed)
    hu = base[None].astype(np.float32) + rng.normal(0, 3, (n, size, size)).astype(np.float32)
    write_volume(folder, hu, spacing=(ps, ps), positions=axial_positions(n, size, size, ps))
    return sorted(folder.glob("*.dcm"))


def send(paths: list[Path], port: int) -> tuple[float, float]:
    """(seconds for the whole send, time.monotonic() of the last response)."""
    ae = AE(ae_title=SENDER_AET)
    ae.add_requested_context(CTImageStorage)
    datasets = [dcmread(p) for p in paths]
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert assoc.is_established
    start = time.perf_counter()
    for ds in datasets:
        assert int(assoc.send_c_store(ds).Status) == 0
    last = time.monotonic()
    elapsed = time.perf_counter() - start
    assoc.release()
    return elapsed, last


class BareScp:
    """The baseline: a pynetdicom Storage SCP that writes each instance's bytes to a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ae = AE(ae_title=NODE_AET)
        ae.add_supported_context(CTImageStorage)
        self.server: Any = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self.on_store)]
        )
        self.port = int(self.server.server_address[1])

    def on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        (self.folder / f"{uid}.dcm").write_bytes(event.encoded_dataset(include_meta=True))
        return 0


def sr_count(server: Any, study_uid: str) -> int:
    found = server.request("POST", "/tools/lookup", study_uid.encode(), content_type="text/plain")
    studies = [item["ID"] for item in found if item["Type"] == "Study"]
    return sum(
        1
        for study in studies
        for series in server.request("GET", f"/studies/{study}/series")
        if series["MainDicomTags"].get("Modality") == "SR"
    )


def floor_pipeline(files: list[Path], engine: InferenceEngine, target: PacsNode, tmp: Path) -> float:
    """The same work without the node: load, model, SR, C-STORE, in one thread."""
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    start = time.perf_counter()
    (stack,) = load_paths(files).all_stacks()
    volume = StackVolume(stack)
    try:
        hu = volume.load_all()
        pred = engine.predict_hu(stack, hu, use_cache=False)
    finally:
        volume.close()
    folder = tmp / f"floor-{time.monotonic_ns()}"
    paths = write_result_objects(pred, stack, engine.info.task, folder)
    outcomes = DimseClient(target).store(paths)
    assert all(o.ok for o in outcomes)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--slices", type=int, default=40)
    parser.add_argument("--quiet", type=float, default=DEFAULT_QUIET_S)
    parser.add_argument("--release-quiet", type=float, default=DEFAULT_RELEASE_QUIET_S)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        node_port = free_port()
        modalities = {"ainode": [NODE_AET, "127.0.0.1", node_port]}
        with running_orthanc(tmp / "orthanc", DicomModalities=modalities) as server:
            target = PacsNode(
                name="orthanc",
                host="127.0.0.1",
                port=server.dicom_port,
                called_ae=ORTHANC_AET,
                calling_ae=NODE_AET,
            )
            engine = InferenceEngine(
                bundled_model_path(),
                provider="cpu",
                threads=args.threads,
                cache=PredictionCache(tmp / "cache"),
            )
            config = NodeConfig(
                tmp / "state", target, quiet_s=args.quiet, release_quiet_s=args.release_quiet, poll_s=0.05
            )
            node = AiNode(config, engine)
            scp = IntakeScp(node, LocalAe(NODE_AET, "127.0.0.1", node_port), allowed_calling_aes=[SENDER_AET])
            scp.start()
            node.start()
            bare_dir = tmp / "bare"
            bare_dir.mkdir()
            bare = BareScp(bare_dir)
            rates_node, rates_bare, latency, floors = [], [], [], []
            try:
                for r in range(args.repeats + 1):  # round 0 warms up (model session, decoders)
                    files = head_series(tmp / f"s{r}", args.slices, seed=r)
                    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
                    t_bare, _ = send(files, bare.port)
                    t_node, last = send(files, node_port)
                    deadline = last + 60
                    while sr_count(server, study_uid) == 0 and time.monotonic() < deadline:
                        time.sleep(0.01)
                    arrived = time.monotonic() - last
                    floor = floor_pipeline(files, engine, target, tmp)
                    if r == 0:
                        continue
                    rates_bare.append(len(files) / t_bare)
                    rates_node.append(len(files) / t_node)
                    latency.append(arrived)
                    floors.append(floor)
            finally:
                bare.server.shutdown()
                scp.stop()
                node.stop()
    med = statistics.median
    print(
        f"AI node, {args.slices}-slice 512x512 CT, bundled model, {args.threads} ORT threads, "
        f"{args.repeats} rounds"
    )
    print(
        f"intake: node {med(rates_node):.0f} instances/s (spool fsync + SQLite FULL before each response) vs "
        f"bare SCP writing files {med(rates_bare):.0f}/s: "
        f"ratio {med(rates_bare) / med(rates_node):.2f}x slower"
    )
    print(
        f"last instance -> SR in Orthanc: median {med(latency):.2f} s "
        f"(min {min(latency):.2f}, max {max(latency):.2f}) "
        f"(quiet {args.quiet:g} s; the sender released its association: "
        f"release quiet {args.release_quiet:g} s); "
        f"floor (load + model + AI objects + C-STORE in one thread) {med(floors):.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
