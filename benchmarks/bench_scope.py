"""Cost of the applicability check and of the pixel digest (issue 10 items 2 and 9).

    .venv/bin/python benchmarks/bench_scope.py [--repeats 7]

On a synthetic 512x512 head CT of 40 and of 300 slices (float32 HU, as the engine holds it), interleaved
in one run, prints medians of:
- the applicability check (``assess_applicability``: header + pixels, the first-slice tag read included);
- the cache key's pixel digest (XXH3-128 of the decoded pixels; SHA-256 of the same bytes beside it);
- the work they gate: preprocessing + the bundled model on the same stack (``InferenceEngine.preprocess``
  + ``run``, 2 threads), and the ratios check/model and digest/model.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from viewer.core.applicability import assess_applicability
from viewer.core.inference.cache import pixel_digest
from viewer.core.inference.engine import InferenceEngine
from viewer.core.paths import bundled_model_path


def head_stack(tmp: Path, n: int) -> tuple[object, np.ndarray]:
    """A written-and-loaded synthetic head (so the stack carries real headers) at 512 px, n slices."""
    from tests import scope_cases as sc
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    base, ps = sc.synthetic_head(5, n_slices=min(n, 40), size=512)
    hu = np.concatenate([base] * (n // len(base) + 1))[:n]
    folder = sc.write_volume(
        tmp / f"h{n}", hu, spacing=(ps, ps), positions=sc.axial_positions(n, 512, 512, ps)
    )
    stack = load_paths([folder]).all_stacks()[0]
    with StackVolume(stack) as volume:
        return stack, volume.load_all()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    engine = InferenceEngine(bundled_model_path(), provider="cpu", threads=2, cache=None)
    info = engine.info
    with tempfile.TemporaryDirectory() as tmpdir:
        stacks = {n: head_stack(Path(tmpdir), n) for n in (40, 300)}
        times: dict[tuple[int, str], list[float]] = {}
        for _ in range(args.repeats):  # interleaved
            for n, (stack, hu) in stacks.items():
                for name, fn in (
                    (
                        "check",
                        lambda s=stack, h=hu: assess_applicability(
                            s,
                            h,
                            modality=info.modality,
                            min_slices=info.min_slices,
                            trained_range=info.trained_range,
                        ),
                    ),
                    ("digest", lambda h=hu: pixel_digest(h)),
                    ("sha256", lambda h=hu: hashlib.sha256(np.ascontiguousarray(h).data).hexdigest()),
                    ("model", lambda h=hu: engine.run(engine.preprocess(h))),
                ):
                    t = time.perf_counter()
                    result = fn()
                    times.setdefault((n, name), []).append(time.perf_counter() - t)
                    if name == "check":
                        assert not result.refused, result
    for n in (40, 300):
        med = {name: statistics.median(times[(n, name)]) for name in ("check", "digest", "sha256", "model")}
        print(
            f"{n:4d} slices 512x512: check {1000 * med['check']:.1f} ms, "
            f"digest {1000 * med['digest']:.1f} ms "
            f"(sha256 {1000 * med['sha256']:.0f} ms), preprocess+model {1000 * med['model']:.0f} ms; "
            f"check/model {med['check'] / med['model']:.3f}, digest/model {med['digest'] / med['model']:.3f} "
            f"(median of {args.repeats})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
