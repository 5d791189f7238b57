"""Inference engine on tiny onnx.helper models: contract checks, providers, cancel, cache, findings."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from tests.core.inference_models import THRESHOLDS, blood_hu, build_model, make_stack
from viewer.core.errors import InferenceCancelled, ModelContractError, StackNotSupportedError
from viewer.core.inference.cache import PredictionCache, cache_key, pixel_digest
from viewer.core.inference.engine import InferenceEngine, load_model_info
from viewer.core.inference.postprocess import flagged_ranges
from viewer.core.inference.results import SliceRange


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture
def engine(model_path: Path, tmp_path: Path) -> InferenceEngine:
    return InferenceEngine(model_path, provider="cpu", cache=PredictionCache(tmp_path / "cache"))


def test_probabilities_shapes_findings_and_thresholds(engine: InferenceEngine) -> None:
    stack = make_stack(12)
    pred = engine.predict_hu(stack, blood_hu(12, (4, 5, 6, 9)))
    k = len(engine.info.class_names)
    assert pred.slice_probs.shape == (12, k) and pred.slice_probs.dtype == np.float32
    assert pred.study_probs.shape == (k,)
    assert (pred.slice_probs >= 0).all() and (pred.slice_probs <= 1).all()
    assert pred.slice_uids == tuple(s.sop_instance_uid for s in stack.slices)
    assert pred.model_sha256 == engine.info.sha256 and len(pred.model_sha256) == 64
    assert pred.provider == "CPUExecutionProvider" and pred.provider_note == ""
    assert pred.intended_use.startswith("Research use only")
    # flagged ranges agree with the thresholds, class by class
    for k_idx, finding in enumerate(pred.findings):
        expected = pred.slice_probs[:, k_idx] >= THRESHOLDS[finding.class_name]
        got = np.zeros(12, dtype=bool)
        for r in finding.flagged_ranges:
            got[r.start : r.stop + 1] = True
        assert (got == expected).all(), finding.class_name
    any_ranges = pred.findings[0].flagged_ranges
    assert any_ranges == (SliceRange(4, 6), SliceRange(9, 9))
    assert pred.flagged_slices() == [4, 5, 6, 9]
    assert pred.badge().startswith("ICH suspected")


def test_deterministic(model_path: Path) -> None:
    engine = InferenceEngine(model_path, provider="cpu", cache=None)
    hu = blood_hu(8, (2,))
    a = engine.predict_hu(make_stack(8), hu)
    b = engine.predict_hu(make_stack(8), hu)
    assert not a.from_cache and not b.from_cache
    np.testing.assert_array_equal(a.slice_probs, b.slice_probs)
    np.testing.assert_array_equal(a.study_probs, b.study_probs)


def test_no_bleed_no_flags(engine: InferenceEngine) -> None:
    pred = engine.predict_hu(make_stack(6), blood_hu(6, ()))
    assert pred.flagged_slices() == []
    assert not pred.study_positive
    assert pred.badge() == f"No ICH flagged (any {pred.study_probs[0]:.2f})"


def test_cache_hit_memory_and_disk(model_path: Path, tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    engine = InferenceEngine(model_path, provider="cpu", cache=PredictionCache(folder))
    stack = make_stack(7, uid="1.2.840.99")
    hu = blood_hu(7, (3,))
    first = engine.predict_hu(stack, hu)
    assert not first.from_cache
    second = engine.predict_hu(stack, hu.copy())
    assert second.from_cache
    np.testing.assert_array_equal(first.slice_probs, second.slice_probs)
    files = list(folder.iterdir())
    assert len(files) == 1 and "1.2.840.99" not in files[0].name
    # a new engine (new process) reads the disk cache
    fresh = InferenceEngine(model_path, provider="cpu", cache=PredictionCache(folder))
    third = fresh.cached(stack, hu)
    assert third is not None and third.from_cache
    np.testing.assert_array_equal(first.slice_probs, third.slice_probs)
    # another model hash misses
    other = build_model(tmp_path / "other.onnx", metadata={"model_version": "9"})
    assert InferenceEngine(other, provider="cpu", cache=PredictionCache(folder)).cached(stack, hu) is None


def test_cache_is_keyed_by_pixels_not_uids(model_path: Path, tmp_path: Path) -> None:
    """A changed copy with the same UIDs must not get the old result (issue 10, item 9)."""
    engine = InferenceEngine(model_path, provider="cpu", cache=PredictionCache(tmp_path / "cache"))
    stack = make_stack(7, uid="1.2.840.77")
    bleeding = engine.predict_hu(stack, blood_hu(7, (3,)))
    assert bleeding.flagged_slices() == [3]
    changed = engine.predict_hu(stack, blood_hu(7, ()))  # same stack, same UIDs, other pixels
    assert not changed.from_cache
    assert changed.flagged_slices() == []
    one_hu_less = blood_hu(7, (3,))
    one_hu_less[3, 32, 32] -= 1.0  # a single pixel differs
    assert not engine.predict_hu(stack, one_hu_less).from_cache
    # the same pixels under other UIDs are the same analysis
    renamed = engine.predict_hu(make_stack(7, uid="1.2.840.78"), blood_hu(7, (3,)))
    assert renamed.from_cache and renamed.slice_uids[0].startswith("1.2.840.78")


def test_preprocessing_metadata_is_part_of_the_cache_key(tmp_path: Path) -> None:
    plain = InferenceEngine(build_model(tmp_path / "a.onnx"), provider="cpu", cache=None)
    v2 = '{"version": 2, "kind": "head_mm"}'
    other = InferenceEngine(
        build_model(tmp_path / "b.onnx", raw_metadata={"preprocessing": v2}), provider="cpu", cache=None
    )
    assert plain.info.preprocessing_key == "v1" and other.info.preprocessing_key == v2
    digest = pixel_digest(blood_hu(5, ()))
    same_model = plain.info.sha256
    assert cache_key(digest, same_model, "v1") != cache_key(digest, same_model, v2)
    assert cache_key(digest, same_model, "v1") == plain.cache_key(blood_hu(5, ()))


def test_stack_not_supported(engine: InferenceEngine) -> None:
    with pytest.raises(StackNotSupportedError, match="MR"):
        engine.predict_hu(make_stack(10, modality="MR"), blood_hu(10, ()))
    with pytest.raises(StackNotSupportedError, match="at least 3 slices"):
        engine.predict_hu(make_stack(2), blood_hu(2, ()))
    with pytest.raises(StackNotSupportedError, match="colour"):
        engine.check_stack(make_stack(10, color=True))


def test_cancel_before_run(engine: InferenceEngine) -> None:
    with pytest.raises(InferenceCancelled):
        engine.predict_hu(make_stack(5), blood_hu(5, ()), cancel=lambda: True)


def test_cancel_during_run_terminates_session(tmp_path: Path) -> None:
    slow = build_model(tmp_path / "slow.onnx", slow_matmuls=200)
    engine = InferenceEngine(slow, provider="cpu", cache=None)
    started = threading.Event()

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "Running model" and done == 0:
            started.set()

    with pytest.raises(InferenceCancelled):
        engine.predict_hu(make_stack(5), blood_hu(5, ()), progress=progress, cancel=started.is_set)
    # the session is still usable afterwards
    engine2 = InferenceEngine(build_model(tmp_path / "fast.onnx"), provider="cpu", cache=None)
    assert engine2.predict_hu(make_stack(5), blood_hu(5, ())).slice_probs.shape[0] == 5


def test_progress_stages(engine: InferenceEngine) -> None:
    seen: list[tuple[str, int, int]] = []
    engine.predict_hu(make_stack(40), blood_hu(40, (1,)), progress=lambda s, d, t: seen.append((s, d, t)))
    stages = [s for s, _, _ in seen]
    assert stages.count("Preprocessing") >= 3 and ("Preprocessing", 40, 40) in seen
    assert seen[-1] == ("Running model", 1, 1)


def test_cuda_requested_fallback_is_reported(model_path: Path) -> None:
    import onnxruntime as ort

    engine = InferenceEngine(model_path, provider="cuda", cache=None)
    if engine.provider == "CUDAExecutionProvider":
        pytest.skip("a working CUDA provider is present")
    assert engine.provider == "CPUExecutionProvider"
    assert engine.provider_note.startswith("CUDA was requested")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "no CUDA provider" in engine.provider_note
    pred = engine.predict_hu(make_stack(4), blood_hu(4, ()))
    assert pred.provider == "CPUExecutionProvider" and pred.provider_note == engine.provider_note
    auto = InferenceEngine(model_path, provider="auto", cache=None)
    assert auto.provider == "CPUExecutionProvider" and auto.provider_note.startswith("Running on the CPU")


def test_load_model_info(model_path: Path) -> None:
    info = load_model_info(model_path)
    assert info.name == "tiny-test" and info.input_size == 32 and len(info.windows) == 3
    assert info.thresholds[0] == THRESHOLDS["any"] and info.min_slices == 3


def test_flagged_ranges_helper() -> None:
    mask = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert flagged_ranges(mask) == (SliceRange(0, 1), SliceRange(4, 4), SliceRange(6, 8))
    assert flagged_ranges(np.zeros(3, dtype=bool)) == ()
    assert str(SliceRange(6, 8)) == "7-9"


# --- contract violations: each gives its own message ------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_name": "image"}, "expected exactly one input named 'slices'"),
        ({"input_rank": 4}, "rank 4; expected rank 5"),
        ({"input_dtype": TensorProto.DOUBLE}, "type tensor(double); expected tensor(float)"),
        ({"drop_keys": ("class_names",)}, "metadata key(s) missing: class_names"),
        ({"drop_keys": ("intended_use", "windows")}, "missing: windows, intended_use"),
        ({"metadata": {"schema_version": 2}}, "'schema_version' is 2"),
        ({"metadata": {"input_layout": "BCHW"}}, "'input_layout' is 'BCHW'"),
        ({"metadata": {"input_size": 64}}, "height is 32 but metadata 'input_size' is 64"),
        ({"metadata": {"class_names": ["any", "subdural"]}}, "6 classes but metadata 'class_names' lists 2"),
        ({"metadata": {"thresholds": {"any": 0.5}}}, "'thresholds' has no value for class(es): epidural"),
        ({"metadata": {"thresholds": {**THRESHOLDS, "any": 1.5}}}, "'thresholds' for 'any' must be"),
        ({"metadata": {"windows": [{"width": 80}]}}, "needs a positive width and a level"),
        ({"metadata": {"min_slices": 0}}, "'min_slices' must be a positive integer"),
        ({"metadata": {"slice_order": "descending"}}, "'slice_order' is 'descending'"),
        ({"raw_metadata": {"class_names": "any,subdural"}}, "'class_names' is not valid JSON"),
    ],
)
def test_contract_violations(tmp_path: Path, kwargs: dict, message: str) -> None:
    path = build_model(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(ModelContractError) as err:
        InferenceEngine(path, provider="cpu", cache=None)
    assert message in str(err.value)


def test_external_data_escaping_folder_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    path = build_model(tmp_path / "models" / "ext.onnx", external_location="../secret.bin")
    with pytest.raises(ModelContractError, match="points outside the model's folder"):
        InferenceEngine(path, provider="cpu", cache=None)
    path2 = build_model(tmp_path / "models" / "ext2.onnx", external_location="/etc/passwd")
    with pytest.raises(ModelContractError, match="points outside the model's folder"):
        InferenceEngine(path2, provider="cpu", cache=None)


def test_external_data_inside_folder_refused_too(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(np.zeros(18, dtype=np.float32).tobytes())
    path = build_model(tmp_path / "ext.onnx", external_location="weights.bin")
    with pytest.raises(ModelContractError, match="external data"):
        InferenceEngine(path, provider="cpu", cache=None)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelContractError):
        InferenceEngine(path, provider="cpu", cache=None)


def test_stack_whose_slices_cannot_be_decoded_is_refused(engine: InferenceEngine) -> None:
    from viewer.core.dicom.volume import StackVolume

    volume = StackVolume(make_stack(6))  # its files do not exist: every slice is bad
    try:
        with pytest.raises(StackNotSupportedError, match="6 of 6 slices could not be decoded"):
            engine.predict_volume(volume)
    finally:
        volume.close()


def test_predict_volume_on_real_files(engine: InferenceEngine, tmp_path: Path) -> None:
    from tests.core.inference_models import write_bleed_series
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    write_bleed_series(tmp_path / "s", 10, (3, 4))
    (stack,) = load_paths([tmp_path / "s"]).all_stacks()
    volume = StackVolume(stack)
    stages: set[str] = set()
    try:
        pred = engine.predict_volume(volume, progress=lambda s, d, t: stages.add(s))
    finally:
        volume.close()
    assert pred.flagged_slices() == [3, 4] and pred.bad_slices == ()
    assert stages == {"Loading slices", "Preprocessing", "Running model"}


def test_changed_copy_with_the_same_uids_is_analysed_afresh(model_path: Path, tmp_path: Path) -> None:
    """Real files: a copy of a series whose pixels changed but whose UIDs did not (issue 10 item 9)."""
    import pydicom

    from tests.core.inference_models import write_bleed_series
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    original = write_bleed_series(tmp_path / "original", 8, (3,))
    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    for path in original:
        ds = pydicom.dcmread(path)
        if path.name == "003.dcm":  # the bleed removed: brain density where the blob was
            pixels = ds.pixel_array.copy()
            pixels[pixels == 75 + 1024] = 30 + 1024
            ds.PixelData = pixels.tobytes()
        ds.save_as(copy_dir / path.name)
    engine = InferenceEngine(model_path, provider="cpu", cache=PredictionCache(tmp_path / "cache"))
    results = []
    for folder in (tmp_path / "original", copy_dir, tmp_path / "original"):
        stack = load_paths([folder]).all_stacks()[0]
        with StackVolume(stack) as volume:
            results.append(engine.predict_volume(volume))
    first, changed, again = results
    assert first.slice_uids == changed.slice_uids and first.stack_uid == changed.stack_uid
    assert first.flagged_slices() == [3] and not first.from_cache
    assert not changed.from_cache and changed.flagged_slices() == []
    assert again.from_cache and again.flagged_slices() == [3]
