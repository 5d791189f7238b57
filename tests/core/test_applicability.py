"""Applicability check (issue 10 item 2) on real and generated cases, through the real loader and the
inference engine: refused stacks are never run and carry codes; cautioned ones are run and say why."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests import scope_cases as sc
from tests.core.inference_models import build_model
from viewer.core.applicability import (
    Applicability,
    OutOfScopeError,
    Scope,
    ScopeCode,
    TrainedRange,
    assess_applicability,
    parse_trained_range,
)
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.dicom.volume import StackVolume
from viewer.core.inference.engine import InferenceEngine

TRAINED = parse_trained_range(json.dumps(sc.TRAINED_RANGE))


def _load(folder: Path) -> tuple[Stack, np.ndarray]:
    stacks = load_paths([folder]).all_stacks()
    assert len(stacks) == 1
    with StackVolume(stacks[0]) as volume:
        return stacks[0], volume.load_all()


def _assess(folder: Path, trained: TrainedRange | None = TRAINED) -> tuple[Stack, Applicability]:
    stack, hu = _load(folder)
    return stack, assess_applicability(stack, hu, modality="CT", min_slices=3, trained_range=trained)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scope")
    writers: dict[str, Callable[[Path], Path]] = {
        "head": lambda p: sc.write_head(p),
        "cta": sc.write_cta,
        "coronal": lambda p: sc.write_reformat(p, "coronal"),
        "sagittal": lambda p: sc.write_reformat(p, "sagittal"),
        "chest": lambda p: sc.write_body(p, "chest"),
        "abdomen": lambda p: sc.write_body(p, "abdomen"),
        "ct_small_x20": sc.write_ct_small_stack,
        "mr": sc.write_mr,
        "localizer": sc.write_localizers,
    }
    return {name: write(root / name) for name, write in writers.items()}


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("chest", ScopeCode.NOT_HEAD),
        ("abdomen", ScopeCode.NOT_HEAD),
        ("ct_small_x20", ScopeCode.NOT_HEAD),
        ("coronal", ScopeCode.NOT_AXIAL),
        ("sagittal", ScopeCode.NOT_AXIAL),
        ("mr", ScopeCode.MODALITY),
        ("localizer", ScopeCode.LOCALIZER),
    ],
)
def test_out_of_scope_cases_are_refused_with_their_code(
    cases: dict[str, Path], case: str, code: ScopeCode
) -> None:
    _, result = _assess(cases[case])
    assert result.scope is Scope.OUT_OF_SCOPE
    refusing = [r for r in result.reasons if r.scope is Scope.OUT_OF_SCOPE]
    assert code in {r.code for r in refusing}, result
    assert all(r.message for r in refusing)


def test_chest_is_refused_by_its_pixels_not_its_header(cases: dict[str, Path]) -> None:
    _, result = _assess(cases["chest"])
    assert result.measures["air_fraction"] > 0.2  # lungs inside the ribs
    # BodyPartExamined alone only cautions: the refusal comes from the pixels
    body = [r for r in result.reasons if r.code is ScopeCode.BODY_PART]
    assert body and body[0].scope is Scope.CAUTION


def test_ct_small_header_names_its_contrast(cases: dict[str, Path]) -> None:
    _, result = _assess(cases["ct_small_x20"])
    assert "S-CONTRAST-HEADER" in result.codes  # ISOVUE300/100


def test_normal_synthetic_heads_and_the_demo_are_in_scope(cases: dict[str, Path], tmp_path: Path) -> None:
    from training.synth import write_demo_study

    _, head = _assess(cases["head"])
    assert head.scope is Scope.IN_SCOPE and head.reasons == ()
    assert 100 <= head.measures["head_diameter_mm"] <= 260
    for seed in (101, 102, 103):
        _, other = _assess(sc.write_head(tmp_path / f"h{seed}", seed=seed))
        assert other.scope is Scope.IN_SCOPE, other
    _, demo = _assess(write_demo_study(tmp_path / "demo"))
    assert demo.scope is Scope.IN_SCOPE, demo
    assert demo.measures["noise_hu"] < 4.5  # the demo's 3-3.5 HU noise, well inside the trained 3-6 HU


def test_cta_is_cautioned_by_its_vessel_signature(cases: dict[str, Path]) -> None:
    _, result = _assess(cases["cta"])
    assert result.scope is Scope.CAUTION and result.codes == ("S-CONTRAST-PIXELS",)
    _, plain = _assess(cases["head"])
    assert plain.measures["vessel_fraction"] < 0.003 < result.measures["vessel_fraction"]


def test_contrast_agent_in_the_header_is_a_caution(tmp_path: Path) -> None:
    _, result = _assess(sc.write_head(tmp_path / "c", contrast_agent="IOHEXOL 350"))
    assert result.scope is Scope.CAUTION and "S-CONTRAST-HEADER" in result.codes


@pytest.mark.parametrize("folder", sc.dicomdir_ct_series(), ids=["routine_brain", "smartscore"])
def test_dicomdir_16x16_ct_series_cannot_be_judged(folder: Path) -> None:
    _, result = _assess(folder)
    assert result.scope is Scope.OUT_OF_SCOPE
    assert any(r.code is ScopeCode.MATRIX and r.scope is Scope.OUT_OF_SCOPE for r in result.reasons)


def test_missing_trained_range_cautions_every_result(cases: dict[str, Path]) -> None:
    _, result = _assess(cases["head"], trained=None)
    assert result.scope is Scope.CAUTION and result.codes == ("S-NO-TRAINED-RANGE",)


def test_outside_the_trained_range_is_a_caution(tmp_path: Path) -> None:
    hu, ps = sc.synthetic_head(21)
    n, rows, cols = hu.shape
    folder = sc.write_volume(
        tmp_path / "thin",
        hu,
        spacing=(ps, ps),
        positions=sc.axial_positions(n, rows, cols, ps, dz=1.25),
        thickness=1.25,
    )
    _, result = _assess(folder)
    assert result.scope is Scope.CAUTION and "S-SLICE-THICKNESS" in result.codes


def test_a_tilted_slice_plane_is_still_axial(tmp_path: Path) -> None:
    hu, ps = sc.synthetic_head(22)
    n, rows, cols = hu.shape
    tilt = np.radians(20.0)  # the slice plane tilted 20 degrees about x
    iop = (1.0, 0.0, 0.0, 0.0, float(np.cos(tilt)), float(np.sin(tilt)))
    normal = np.cross(iop[:3], iop[3:])
    positions = [
        tuple(
            float(v) for v in (np.array([-(cols - 1) / 2 * ps, -(rows - 1) / 2 * ps, 0.0]) + 5.0 * i * normal)
        )
        for i in range(n)
    ]
    _, tilted = _assess(
        sc.write_volume(tmp_path / "tilt", hu, spacing=(ps, ps), positions=positions, orientation=iop)
    )
    assert "S-NOT-AXIAL" not in tilted.codes and tilted.scope is Scope.IN_SCOPE, tilted


def test_a_stack_without_geometry_is_cautioned_not_silently_run(tmp_path: Path) -> None:
    folder = sc.write_head(tmp_path / "nogeo")
    import pydicom

    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        del ds.ImageOrientationPatient, ds.PixelSpacing
        ds.save_as(path)
    stack, result = _assess(folder)
    assert stack.slices[0].orientation is None
    assert result.scope is Scope.CAUTION and "S-NO-GEOMETRY" in result.codes
    messages = " ".join(r.message for r in result.reasons)
    assert "ImageOrientationPatient" in messages and "PixelSpacing" in messages


def test_missing_slices_are_a_caution(tmp_path: Path) -> None:
    hu, ps = sc.synthetic_head(23)
    n, rows, cols = hu.shape
    keep = [i for i in range(n) if i not in (6, 7)]
    positions = sc.axial_positions(n, rows, cols, ps)
    folder = sc.write_volume(
        tmp_path / "gap", hu[keep], spacing=(ps, ps), positions=[positions[i] for i in keep]
    )
    _, result = _assess(folder)
    assert result.scope is Scope.CAUTION and "S-SPACING" in result.codes


def test_engine_refuses_before_running_and_caches_nothing(cases: dict[str, Path], tmp_path: Path) -> None:
    from viewer.core.inference.cache import PredictionCache

    model = build_model(tmp_path / "m.onnx", metadata={"trained_range": sc.TRAINED_RANGE})
    engine = InferenceEngine(model, provider="cpu", cache=PredictionCache(tmp_path / "cache"))
    assert engine.info.trained_range == TRAINED
    for case in ("chest", "coronal"):
        stack, _ = _load(cases[case])
        volume = StackVolume(stack)
        try:
            with pytest.raises(OutOfScopeError) as caught:
                engine.predict_volume(volume)
        finally:
            volume.close()
        assert caught.value.applicability.refused
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    stack, _ = _load(cases["cta"])
    with StackVolume(stack) as volume:
        pred = engine.predict_volume(volume)
    assert pred.applicability is not None and pred.applicability.cautioned
    assert pred.applicability.codes == ("S-CONTRAST-PIXELS",)


def test_header_refusals_need_no_pixels(cases: dict[str, Path], tmp_path: Path) -> None:
    engine = InferenceEngine(build_model(tmp_path / "m.onnx"), provider="cpu", cache=None)
    stacks = load_paths([cases["sagittal"]]).all_stacks()
    with pytest.raises(OutOfScopeError, match="sagittal"):
        engine.check_stack(stacks[0])


def test_malformed_trained_range_is_a_contract_error(tmp_path: Path) -> None:
    from viewer.core.errors import ModelContractError

    bad = build_model(tmp_path / "bad.onnx", metadata={"trained_range": {"matrix": [512, 256]}})
    with pytest.raises(ModelContractError, match="trained_range"):
        InferenceEngine(bad, provider="cpu", cache=None)
