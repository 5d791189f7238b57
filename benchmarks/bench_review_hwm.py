"""Cost of the review store's high-water mark per acknowledged change (issue 14).

Run: ``.venv/bin/python benchmarks/bench_review_hwm.py [--changes 200] [--rounds 5] [--dir DIR]``.

Two stores in one folder on the same disk, one with the high-water mark (the default) and one opened
with ``high_water_mark=False`` (the store as it was: SQLite WAL, ``synchronous=FULL``, no change
counter, no side file). Each round times ``--changes`` decisions on each store, interleaved change by
change, so both see the same disk state; prints the median µs per acknowledged change, the difference
and the ratio. ``--dir`` should be on the disk the user data folder lives on (fsync cost is the
point); the default is a temporary folder under the user's home.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from viewer.core.inference.results import SliceRange  # noqa: E402
from viewer.core.review import ReviewSession, ReviewStore  # noqa: E402

STUDY = "1.2.826.0.1.3680043.8.498.5"
DECISIONS = ("confirmed", "rejected", "uncertain")


def _session(db: Path, *, high_water_mark: bool, n: int) -> tuple[ReviewStore, ReviewSession, list[int]]:
    store = ReviewStore.open(db, high_water_mark=high_water_mark)
    session = store.create_session("bench")
    session.add_study(STUDY)
    ids = [session.add_reader_finding(STUDY, "subdural", SliceRange(i, i)) for i in range(n)]
    return store, session, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200, help="decisions per store and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="folder for the two databases")
    args = parser.parse_args()
    base = args.dir or Path.home()
    with tempfile.TemporaryDirectory(prefix="slicewise-bench-", dir=base) as tmp:
        folder = Path(tmp)
        with_mark = _session(folder / "with.sqlite3", high_water_mark=True, n=args.changes)
        without = _session(folder / "without.sqlite3", high_water_mark=False, n=args.changes)
        times: dict[str, list[float]] = {"with": [], "without": []}
        for r in range(args.rounds):
            for i in range(args.changes):
                decision = DECISIONS[(i + r) % 3]
                order = (("with", with_mark), ("without", without))
                for label, (_store, session, ids) in order if i % 2 == 0 else order[::-1]:
                    t = time.perf_counter()
                    session.set_decision(ids[i], decision)
                    times[label].append(time.perf_counter() - t)
        for store, session, _ids in (with_mark, without):
            session.close()
            store.close()
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    n = len(times["with"])
    print(f"review store, {n} acknowledged changes per variant, interleaved, folder on {base}")
    print(f"  without high-water mark (SQLite WAL, synchronous=FULL): median {med['without']:8.1f} µs/change")
    print(f"  with high-water mark (counter + fdatasync'd side file): median {med['with']:8.1f} µs/change")
    cost, ratio = med["with"] - med["without"], med["with"] / med["without"]
    print(f"  cost of the mark: {cost:+.1f} µs/change, ratio {ratio:.2f}x")


if __name__ == "__main__":
    main()
