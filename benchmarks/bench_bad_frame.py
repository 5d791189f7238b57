"""Cost of one bad frame in a whole-volume load (issue 14, "Slow bad frames").

Builds a 48-slice 512 x 512 JPEG-LS lossless CT series, then times ``load_paths`` + ``load_all`` in a
fresh child process for three copies (the methods take turns in each round; medians printed):

- clean: every frame decodes;
- height-0: the first chunk's second frame has a JPEG-LS SOF55 height of 0 (CharLS allocated without
  bound on it; one such frame cost 26 s before: a 20 s chunk time limit, then a 5 s retry);
- stuck: the same frame is a named pipe, so its decoder blocks until the per-frame limit (5 s) ends it.

Usage: ``python benchmarks/bench_bad_frame.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SLICES = 48
BAD = 1  # in the first chunk (chunks of 4 from the front go to the slice decoder process)


def child(folder: Path) -> dict[str, object]:
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    t0 = time.perf_counter()
    (stack,) = load_paths([folder]).all_stacks()
    if (folder / "stuck").exists():  # after the scan, which (rightly) reads regular files only
        path = stack.slices[BAD].source.path
        path.unlink()
        os.mkfifo(path)
    with StackVolume(stack) as volume:
        volume.load_all()
        bad = {i: text.rsplit("(", 1)[-1].rstrip(")") for i, text in volume.bad_slices.items()}
    return {"seconds": time.perf_counter() - t0, "bad": bad}


def build(root: Path) -> dict[str, Path]:
    from pydicom import dcmread

    from tests.factories import write_ct_series

    clean = root / "clean"
    paths = write_ct_series(clean, SLICES, rows=512, columns=512)
    for path in paths:
        ds = dcmread(path)
        ds.compress("1.2.840.10008.1.2.4.80")
        ds.save_as(path, enforce_file_format=True)
    out = {"clean": clean}
    for name in ("height-0", "stuck"):
        folder = root / name
        folder.mkdir()
        for path in paths:
            (folder / path.name).write_bytes(path.read_bytes())
        out[name] = folder
    from viewer.core.dicom.loader import load_paths

    (stack,) = load_paths([clean]).all_stacks()
    target = out["height-0"] / stack.slices[BAD].source.path.name  # slice BAD in sorted order
    data = bytearray(target.read_bytes())
    sof = data.find(b"\xff\xf7", data.rfind(b"\xe0\x7f\x10\x00"))
    struct.pack_into(">H", data, sof + 5, 0)
    target.write_bytes(bytes(data))
    (out["stuck"] / "stuck").write_text("")  # marker: the child replaces the frame with a pipe
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folders = build(Path(tmp))
        times: dict[str, list[float]] = {name: [] for name in folders}
        bad: dict[str, object] = {}
        for _ in range(args.repeats):
            for name, folder in folders.items():
                if name == "stuck":  # a fresh copy each round: the child turned a frame into a pipe
                    folder = Path(tmp) / f"stuck-{len(times[name])}"
                    folder.mkdir()
                    for path in folders["clean"].iterdir():
                        (folder / path.name).write_bytes(path.read_bytes())
                    (folder / "stuck").write_text("")
                cmd = [sys.executable, __file__, "--child", str(folder)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                times[name].append(float(result["seconds"]))
                bad[name] = result["bad"]
        clean = statistics.median(times["clean"])
        print(f"{SLICES} x 512 x 512 JPEG-LS, load_paths + load_all, median of {args.repeats}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:9} {median:6.2f} s  (+{median - clean:5.2f} s)  bad slices: {bad[name]}")


if __name__ == "__main__":
    main()
