"""A short seeded run of tools/fuzz_decoders.py (the long run: ``python tools/fuzz_decoders.py``):
mutants of real files of every transfer syntax through the scan and the decoder processes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fuzz_decoders.py"


@pytest.mark.timeout(600)
def test_a_short_seeded_fuzz_run_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TOOL.parent))  # decoder processes unpickle its functions by name
    fuzz = importlib.import_module("fuzz_decoders")
    tally = fuzz.run_batch(seed=20261129, start=0, count=200, exit_on_hang=False)
    assert tally.mutants == 200
    assert set(tally.by_syntax) == set(fuzz.SEEDS)  # every transfer syntax was mutated
    assert tally.outcomes["decoded"] > 0 and tally.outcomes["refused-at-decode"] > 0
    assert tally.compared > 0  # frames we returned were checked against an independent decode
    assert tally.foreign_exceptions == []
    assert tally.hangs == [] and tally.crashes == []
    assert tally.wrong == []
    assert 0 < tally.peak_decoder_rss < 1024**3


@pytest.mark.timeout(300)
def test_a_short_seeded_pooled_fuzz_run_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stacks of mutants loaded whole (load_all: the decoder pool writing into the shared volume): every
    slice shown is the single-slice path's and an independent decode's; every slice refused there is
    refused as a single slice too."""
    monkeypatch.syspath_prepend(str(TOOL.parent))
    fuzz = importlib.import_module("fuzz_decoders")
    seeds = sum(len(names) for names in fuzz.POOLED_SEEDS.values())
    tally = fuzz.run_batch(seed=20261130, start=0, count=seeds, exit_on_hang=False, pooled=True)
    assert tally.mutants == seeds * fuzz.MUTATED_PER_STACK
    assert set(tally.by_syntax) == set(fuzz.POOLED_SEEDS)  # every compressed greyscale syntax
    assert tally.pooled_stacks >= seeds - 2  # (a stack left with < 8 slices loads without the pool)
    assert tally.outcomes["decoded"] > 0 and tally.outcomes["refused-at-decode"] > 0
    assert tally.compared > 0
    assert tally.foreign_exceptions == [] and tally.hangs == [] and tally.crashes == []
    assert tally.wrong == [] and tally.pool_refused == []
