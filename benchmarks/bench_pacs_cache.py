"""PACS cache eviction check (issue 13): the per-study index against walking every cached file.

After every retrieve the cache checks its budget. Before the index it walked every study folder and
stat'ed every file (``os.walk``, the code ``InstanceCache.evict`` had: the baseline here, same total);
now it reads ``.index.json`` (one entry per study), lists the study folders once, measures only the
studies written since the last check and writes the index back atomically.

Builds a cache of ``--studies`` studies x ``--files`` files (small files of ``--bytes`` bytes: the cost
is per file, not per byte) in the cache's own layout, with a budget above the total (the check removes
nothing, as after most retrieves), then times, interleaved in each round (order alternating), the walk
and ``InstanceCache.evict()``, and one more ``evict()`` after a study is marked as written (the check
after a retrieve: that study is measured again). Prints medians and ratios.
Usage: ``python benchmarks/bench_pacs_cache.py [--studies 200] [--files 300] [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from viewer.core.pacs import InstanceCache
from viewer.core.pacs.cache_index import tree_size


def walk_check(root: Path, budget: int) -> int:
    """The eviction check before the index: every study folder walked, every file stat'ed."""
    studies = []
    for study in root.iterdir():
        if not study.is_dir():
            continue
        try:
            used = (study / ".last-used").stat().st_mtime
        except OSError:
            used = study.stat().st_mtime
        studies.append((used, study, tree_size(study)))
    total = sum(size for _, _, size in studies)
    _ = sorted(studies, key=lambda item: item[0]) if total > budget else studies
    return total


def build(root: Path, studies: int, files: int, size: int) -> InstanceCache:
    cache = InstanceCache(root, budget_bytes=1 << 50)
    blob = os.urandom(size)
    for s in range(studies):
        folder = cache.series_folder("bench", f"1.2.{s}", f"1.2.{s}.1")
        for f in range(files):
            (folder / f"{f:05d}.dcm").write_bytes(blob)
    cache.evict()  # measures every study once (all were marked as written)
    return cache


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--bytes", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pacs-cache-"))
    try:
        t0 = time.perf_counter()
        cache = build(tmp / "cache", args.studies, args.files, args.bytes)
        print(f"built {args.studies} studies x {args.files} files in {time.perf_counter() - t0:.1f} s")
        expected = walk_check(cache.root, cache.budget_bytes)
        walk: list[float] = []
        index: list[float] = []
        after_write: list[float] = []
        one = cache.study_folder("bench", "1.2.0")
        for r in range(args.repeats):
            order = ("walk", "index") if r % 2 == 0 else ("index", "walk")
            for name in order:
                t = time.perf_counter()
                if name == "walk":
                    total = walk_check(cache.root, cache.budget_bytes)
                    walk.append(time.perf_counter() - t)
                else:
                    total = cache.evict().total_bytes
                    index.append(time.perf_counter() - t)
                assert total == expected, (name, total, expected)
            cache.touch(one, writing=True)  # a retrieve wrote into one study
            t = time.perf_counter()
            total = cache.evict().total_bytes
            after_write.append(time.perf_counter() - t)
            assert total == expected
        m_walk, m_index, m_after = (statistics.median(v) for v in (walk, index, after_write))
        print(f"{args.studies} studies x {args.files} files, {args.repeats} rounds interleaved (medians):")
        print(f"  walk every file (before):        {m_walk * 1000:9.2f} ms")
        print(f"  index, nothing written (after):  {m_index * 1000:9.2f} ms   {m_walk / m_index:7.1f}x")
        print(f"  index, one study written:        {m_after * 1000:9.2f} ms   {m_walk / m_after:7.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
