"""``slicewise-train maps-eval``: how well a model's localisation maps and volumes match the generator's
truth, measured as the viewer runs the model (DICOM written, loaded by the viewer's loader, analysed by
``InferenceEngine.analyse_volume``), on fresh studies of both acquisitions of the training data
(standard and noisy, :data:`training.maps.ACQUISITIONS`).

- **Dice** per subtype on the pixel grid: pixels at or above the class's map threshold vs blood
  fraction >= 0.5, pooled over the class's lesion slices (slices whose truth holds it), and, stricter,
  over the slices where truth or prediction holds it (false-positive slices count too).
- **Peak inside the lesion**: on each flagged true-positive slice of a subtype (slice probability at or
  above its slice threshold, the slice labelled with it), whether the map's maximum lies on a pixel
  with blood of that subtype (fraction > 0; also reported for fraction >= 0.5).
- **Volume**: the result's mL (made by the model's volume estimator, metadata ``maps.volume``) vs the
  true blood volume (sum of fractions x voxel), absolute % error over the (study, class) pairs with at
  least 1 mL of true blood; ``any`` is the union of the subtypes. The volume given to pairs without
  that blood (false volume) is summarised too.

``slicewise-train maps-thresholds`` chooses the map thresholds (Dice) and ``slicewise-train maps-volume``
the volume estimator (:func:`choose_volume_estimator`), both on validation studies; both write only the
metadata.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.maps import ACQUISITIONS
from training.seg import analyse_as_dicom, study_fractions
from training.synth import SUBTYPES, SynthStudy, render_study
from viewer.core.constants import RSNA_CLASSES
from viewer.core.inference.volume import VolumeEstimator, VolumeMethod

if TYPE_CHECKING:
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.inference.results import StackPrediction


def analysed_studies(
    engine: InferenceEngine, studies: int, seed: int
) -> Iterator[tuple[int, str, SynthStudy, StackPrediction, float]]:
    """(index, acquisition, study, result with maps, seconds) for ``studies`` fresh studies per
    acquisition (seed ``seed``), each written as DICOM and analysed by ``engine`` as the viewer does."""
    from viewer.core.inference.results import StackPrediction

    children = np.random.SeedSequence(seed).spawn(studies * len(ACQUISITIONS))
    with tempfile.TemporaryDirectory(prefix="slicewise-maps-eval-") as tmp:
        for i, child in enumerate(children):
            acquisition = list(ACQUISITIONS)[i // studies]
            cfg = ACQUISITIONS[acquisition]
            rng = np.random.default_rng(child)
            study = render_study(rng, int(rng.integers(cfg.min_slices, cfg.max_slices + 1)), cfg)
            pred, seconds = analyse_as_dicom(engine, study, Path(tmp) / f"s{i:03d}", i, rng)
            assert isinstance(pred, StackPrediction) and pred.maps is not None
            # every class's maps, also those the viewer does not show (classes the classifier does not flag)
            yield i, acquisition, study, replace(pred, maps=replace(pred.maps, hidden=frozenset())), seconds


THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(2, 17))  # 0.10 ... 0.80


def choose_map_thresholds(
    model_path: Path, *, studies: int = 10, seed: int = 7_100_002, threads: int = 2
) -> dict[str, Any]:
    """Per class, the map threshold with the best pooled Dice on the pixel grid (where thresholds are
    applied) over the lesion slices of fresh validation studies; 0.5 for a class the maps never find
    (no threshold gives it a Dice above 0)."""
    from viewer.core.inference.engine import InferenceEngine

    engine = InferenceEngine(model_path, provider="cpu", threads=threads, cache=None)
    spec = engine.info.maps
    if spec is None:
        raise ValueError(f"{model_path.name} has no localisation maps (metadata 'maps')")
    levels = np.array([int(np.ceil(t * 255.0 - 1e-6)) for t in THRESHOLD_GRID])
    inter = np.zeros((len(spec.class_names), len(levels)))
    sums = np.zeros_like(inter)
    for _, _, study, pred, _ in analysed_studies(engine, studies, seed):
        assert pred.maps is not None
        truth_all = study_fractions(study)
        for k, name in enumerate(spec.class_names):
            ref = truth_all[:, SUBTYPES.index(name)] >= 0.5
            lesion = ref.any(axis=(1, 2))
            if not lesion.any():
                continue
            probs, truth = pred.maps.pixels[lesion, k], ref[lesion]
            for j, level in enumerate(levels):
                got = probs >= level
                inter[k, j] += float((got & truth).sum())
                sums[k, j] += float(got.sum() + truth.sum())
    dice = np.where(sums > 0, 2 * inter / np.maximum(sums, 1.0), 0.0)
    chosen = {
        name: float(THRESHOLD_GRID[int(np.argmax(dice[k]))]) if dice[k].max() > 0 else 0.5
        for k, name in enumerate(spec.class_names)
    }
    return {
        "thresholds": chosen,
        "dice_at_chosen": {n: round(float(dice[k].max()), 4) for k, n in enumerate(spec.class_names)},
        "studies": studies * len(ACQUISITIONS),
        "seed": seed,
        "chosen_on": f"{studies} standard + {studies} noisy fresh validation studies (seed {seed}), "
        "pooled Dice on the pixel grid over lesion slices",
    }


SCALE_GRID: tuple[float, ...] = tuple(round(0.5 + 0.01 * k, 2) for k in range(151))  # 0.50 ... 2.00
NOT_FOUND_RATIO = 0.2  # a class whose summed probability is below this share of the truth is not found


def true_volumes(study: SynthStudy, names: Sequence[str]) -> dict[str, float]:
    """The generator's blood volume in mL per class of ``names`` and ``any`` (the union: summed
    fractions capped at 1 per voxel)."""
    truth = study_fractions(study)
    voxel = study.pixel_spacing**2 * study.thickness / 1000.0
    out = {n: float(truth[:, SUBTYPES.index(n)].sum()) * voxel for n in names}
    out["any"] = float(np.clip(truth.sum(axis=1), 0.0, 1.0).sum()) * voxel
    return out


def median_abs_pct(pred: Sequence[float], true: Sequence[float]) -> float | None:
    errors = [abs(p - t) / t for p, t in zip(pred, true)]
    return round(100 * float(np.median(errors)), 1) if errors else None


def choose_volume_estimator(
    model_path: Path,
    *,
    studies: int = 20,
    seeds: Sequence[int] = (7_100_005,),
    floor: float = 0.05,
    threads: int = 2,
) -> dict[str, Any]:
    """The ``soft`` volume estimator of a maps model, fitted on fresh validation studies: per class the
    scale (in :data:`SCALE_GRID`) with the smallest median absolute % error of the scaled summed
    probability (pixels >= ``floor``) against the true volume over the (study, class) pairs with >= 1 mL
    of blood; 1.0 for a class whose maps do not find it (median ratio below :data:`NOT_FOUND_RATIO`: no
    scale should inflate noise). Reports the ``mask`` method's errors on the same pairs beside it."""
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.inference.maps import SegmentationPrediction

    engine = InferenceEngine(model_path, provider="cpu", threads=threads, cache=None)
    spec = engine.info.maps
    if spec is None:
        raise ValueError(f"{model_path.name} has no localisation maps (metadata 'maps')")
    names = spec.class_names
    raw = VolumeEstimator(method=VolumeMethod.SOFT, floor=floor)
    kept: list[tuple[SegmentationPrediction, dict[str, float], dict[str, float | None]]] = []
    for seed in seeds:
        for _, _, study, pred, _ in analysed_studies(engine, studies, seed):
            assert pred.maps is not None
            mask = replace(pred.maps, volume=VolumeEstimator())
            mask_ml = {**mask.volumes_ml(), "any": mask.union_volume_ml()}
            kept.append((replace(pred.maps, volume=raw), true_volumes(study, names), mask_ml))
    scales: dict[str, float] = {}
    report: dict[str, Any] = {}
    for name in names:
        pairs = [
            (m.volumes_ml()[name] or 0.0, t[name], mk[name] or 0.0) for m, t, mk in kept if t[name] >= 1.0
        ]
        soft = np.array([p[0] for p in pairs])
        true = np.array([p[1] for p in pairs])
        ratio = float(np.median(soft / true)) if pairs else 0.0
        if ratio < NOT_FOUND_RATIO:
            scales[name] = 1.0
        else:
            errors = [float(np.median(np.abs(c * soft / true - 1.0))) for c in SCALE_GRID]
            scales[name] = SCALE_GRID[int(np.argmin(errors))]
        report[name] = {
            "pairs_ge_1ml": len(pairs),
            "median_ratio_unscaled": round(ratio, 3),
            "scale": scales[name],
            "mask_median_abs_pct": median_abs_pct([p[2] for p in pairs], list(true)),
            "soft_unscaled_median_abs_pct": median_abs_pct(list(soft), list(true)),
            "soft_median_abs_pct": median_abs_pct(list(soft * scales[name]), list(true)),
        }
    chosen_on = (
        f"{studies} standard + {studies} noisy fresh validation studies per seed (seeds "
        f"{', '.join(map(str, seeds))}), median absolute % error over (study, class) pairs >= 1 mL"
    )
    estimator = VolumeEstimator(
        method=VolumeMethod.SOFT,
        floor=floor,
        scales=tuple(scales[n] for n in names),
        chosen_on=chosen_on,
    )
    union = [
        (replace(m, volume=estimator).union_volume_ml() or 0.0, t["any"], mk["any"] or 0.0)
        for m, t, mk in kept
        if t["any"] >= 1.0
    ]
    report["any"] = {
        "pairs_ge_1ml": len(union),
        "mask_median_abs_pct": median_abs_pct([u[2] for u in union], [u[1] for u in union]),
        "soft_median_abs_pct": median_abs_pct([u[0] for u in union], [u[1] for u in union]),
    }
    return {
        "volume": estimator.to_metadata(names),
        "validation": report,
        "studies": studies * len(ACQUISITIONS) * len(seeds),
        "seeds": list(seeds),
        "chosen_on": chosen_on,
    }


def evaluate_maps(
    model_path: Path, *, studies: int = 20, seed: int = 7_100_003, threads: int = 2
) -> dict[str, Any]:
    """Run ``model_path`` on ``studies`` fresh studies per acquisition (seed ``seed``) and compare."""
    from viewer.core.inference.engine import InferenceEngine

    engine = InferenceEngine(model_path, provider="cpu", threads=threads, cache=None)
    spec = engine.info.maps
    if spec is None:
        raise ValueError(f"{model_path.name} has no localisation maps (metadata 'maps')")
    names = spec.class_names
    k_n = len(names)
    lesion_inter, lesion_sum = np.zeros(k_n), np.zeros(k_n)
    any_inter, any_sum = np.zeros(k_n), np.zeros(k_n)
    peak_hits, peak_hits_core, peak_total = np.zeros(k_n), np.zeros(k_n), np.zeros(k_n)
    pairs: list[dict[str, Any]] = []
    times: list[float] = []
    for i, acquisition, study, pred, seconds in analysed_studies(engine, studies, seed):
        times.append(seconds)
        maps = pred.maps
        assert maps is not None
        truth_all = study_fractions(study)  # (S, 5, H, W) in SUBTYPES order, ascending z = stack order
        true_ml = true_volumes(study, names)
        volumes = pred.volumes_ml()
        flagged = pred.flagged
        for k, name in enumerate(names):
            truth = truth_all[:, SUBTYPES.index(name)]
            ref = truth >= 0.5
            got = maps.mask(k)
            lesion = ref.any(axis=(1, 2))
            either = lesion | got.any(axis=(1, 2))
            lesion_inter[k] += float((got[lesion] & ref[lesion]).sum())
            lesion_sum[k] += float(got[lesion].sum() + ref[lesion].sum())
            any_inter[k] += float((got[either] & ref[either]).sum())
            any_sum[k] += float(got[either].sum() + ref[either].sum())
            c = RSNA_CLASSES.index(name)
            for s in np.flatnonzero(flagged[:, pred.class_names.index(name)] & (study.labels[:, c] > 0)):
                peak = np.unravel_index(int(np.argmax(maps.slice_pixels(int(s))[k])), truth.shape[1:])
                peak_total[k] += 1
                peak_hits[k] += float(truth[s][peak] > 0.0)
                peak_hits_core[k] += float(truth[s][peak] >= 0.5)
        for name in ("any", *names):
            pairs.append({"study": i, "kind": acquisition, "class": name, "true_ml": true_ml[name]})
            pairs[-1]["pred_ml"] = volumes[name]

    def ratio(num: np.ndarray, den: np.ndarray, k: int) -> float | None:
        return None if den[k] == 0 else round(float(num[k] / den[k]), 4)

    volume_error: dict[str, Any] = {}
    for name in ("any", *names):
        errors = [
            abs(p["pred_ml"] - p["true_ml"]) / p["true_ml"]
            for p in pairs
            if p["class"] == name and p["true_ml"] >= 1.0
        ]
        absent = [p["pred_ml"] for p in pairs if p["class"] == name and p["true_ml"] == 0.0]
        volume_error[name] = {
            "pairs_ge_1ml": len(errors),
            "median_abs_pct": round(100 * float(np.median(errors)), 1) if errors else None,
            "q75_abs_pct": round(100 * float(np.percentile(errors, 75)), 1) if errors else None,
            # the volume given where the study holds none of that blood
            "absent_pairs": len(absent),
            "absent_median_ml": round(float(np.median(absent)), 3) if absent else None,
            "absent_q90_ml": round(float(np.percentile(absent, 90)), 3) if absent else None,
        }
    total_peaks = float(peak_total.sum())
    return {
        "model": model_path.name,
        "studies": studies * len(ACQUISITIONS),
        "acquisitions": list(ACQUISITIONS),
        "seed": seed,
        "map_thresholds": dict(zip(names, spec.thresholds)),
        "volume_estimator": spec.volume.to_metadata(names),
        "dice_lesion_slices": {n: ratio(2 * lesion_inter, lesion_sum, k) for k, n in enumerate(names)},
        "dice_lesion_or_predicted_slices": {n: ratio(2 * any_inter, any_sum, k) for k, n in enumerate(names)},
        "peak_inside_lesion": {n: ratio(peak_hits, peak_total, k) for k, n in enumerate(names)},
        "peak_inside_lesion_core": {n: ratio(peak_hits_core, peak_total, k) for k, n in enumerate(names)},
        "flagged_tp_slices": {n: int(peak_total[k]) for k, n in enumerate(names)},
        "peak_inside_lesion_all": round(float(peak_hits.sum()) / total_peaks, 4) if total_peaks else None,
        "volume_error": volume_error,
        "analyse_s_median": round(float(np.median(times)), 3),
        "volumes": pairs,
    }
