"""Per-class temperature scaling (Guo et al., ICML 2017), fitted on validation logits.

``p = sigmoid(logit / T)``: one temperature per class, chosen to minimise the binary cross-entropy
on the validation split against Platt's smoothed targets (a 1-D search over log T in [T_MIN, T_MAX],
then a golden-section refinement). The fitted temperatures are written into the network's
``SequenceHead`` buffers, so the exported ONNX graph divides its logits by them before the sigmoid and
the outputs stay probabilities.

Why smoothed targets: a class that the validation split separates perfectly (every positive scored
above every negative, common at study level with tens of studies) has no finite maximum-likelihood
temperature: the loss keeps falling as T -> 0, so the fit used to stop at the search's lower bound
(0.2) and multiplied the logits by 5, saturating the float32 probabilities at 1 (the version-2 run's
intraparenchymal study probabilities: 1.0, 1.0, 1.0 for positives, 0.9999 for negatives), and the
study threshold chosen on them became 0.999999. A per-class bias (full Platt scaling) does not help
there (separable data has no finite maximum for the scale, with or without a bias) and would add a
graph operation; Platt's own remedy does: fit against the targets ``(N+ + 1) / (N+ + 2)`` for positives
and ``1 / (N- + 2)`` for negatives (Platt 1999, the Bayesian prior on out-of-sample labels), which
keeps the optimum finite and leaves large splits unchanged. A fit that still ends at a bound of the
(wide, 0.05-20) range is not a fit: that class keeps T = 1 and the calibration report names it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from training.model import SequenceHead
from viewer.core.constants import RSNA_CLASSES

log = logging.getLogger(__name__)

T_MIN, T_MAX = 0.05, 20.0
_GRID = 81  # log-spaced search points over [T_MIN, T_MAX]


def _bce(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = logits / t
    # log(1 + exp(-|z|)) + max(z, 0) - y z: a stable BCE on logits (y may be a smoothed target)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def platt_targets(y: np.ndarray) -> np.ndarray:
    """Platt's smoothed targets: ``(N+ + 1) / (N+ + 2)`` for positives, ``1 / (N- + 2)`` for negatives."""
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return np.where(pos, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))


@dataclass(frozen=True)
class TemperatureFit:
    """One class's fitted temperature; ``at_bound``: the search ended at T_MIN or T_MAX (T set to 1)."""

    temperature: float
    at_bound: bool = False


def fit_temperature_detail(logits: np.ndarray, y: np.ndarray) -> TemperatureFit:
    """The temperature in [T_MIN, T_MAX] minimising the BCE of ``sigmoid(logits / T)`` against Platt's
    smoothed targets of ``y``; T = 1 when ``y`` has a single class (nothing to calibrate against) or when
    the minimum lies at a bound of the range (``at_bound``)."""
    logits = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) == 0 or y.min() == y.max():
        return TemperatureFit(1.0)
    target = platt_targets(y)
    grid = np.exp(np.linspace(math.log(T_MIN), math.log(T_MAX), _GRID))
    losses = [_bce(logits, target, t) for t in grid]
    i = int(np.argmin(losses))
    if i in (0, len(grid) - 1):
        return TemperatureFit(1.0, at_bound=True)
    lo, hi = math.log(grid[i - 1]), math.log(grid[i + 1])
    g = (math.sqrt(5) - 1) / 2
    for _ in range(30):  # golden section on log T
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _bce(logits, target, math.exp(a)) < _bce(logits, target, math.exp(b)):
            hi = b
        else:
            lo = a
    return TemperatureFit(float(math.exp((lo + hi) / 2)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The fitted temperature of ``fit_temperature_detail`` (1.0 when there is nothing to fit)."""
    return fit_temperature_detail(logits, y).temperature


def fit_temperatures(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, K) logits and labels -> (K,) per-class temperatures."""
    return np.array([fit_temperature(logits[:, k], y[:, k]) for k in range(logits.shape[1])])


def _fit_all(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, list[str]]:
    fits = [fit_temperature_detail(logits[:, k], y[:, k]) for k in range(logits.shape[1])]
    return np.array([f.temperature for f in fits]), [c for c, f in zip(RSNA_CLASSES, fits) if f.at_bound]


@torch.no_grad()
def calibrate_head(
    head: SequenceHead,
    embeds: Sequence[torch.Tensor],
    slice_labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
) -> dict[str, dict[str, float]]:
    """Fit slice and study temperatures of ``head`` on validation embeddings; set them; return them
    (``{"slice": {class: T}, "study": {class: T}}``; a class whose fit ended at a bound keeps T = 1 and is
    named in a warning)."""
    head.eval()
    head.slice_temperature.fill_(1.0)
    head.study_temperature.fill_(1.0)
    sl, st, ys, yst = [], [], [], []
    for e, y, m in zip(embeds, slice_labels, masks):
        a, b = head(e[None])
        keep = np.asarray(m) > 0.5
        sl.append(a[0].cpu().numpy()[keep])
        ys.append(np.asarray(y)[keep])
        st.append(b[0].cpu().numpy())
        yst.append(np.asarray(y)[keep].max(axis=0) if keep.any() else np.zeros(len(RSNA_CLASSES)))
    t_slice, bound_slice = _fit_all(np.concatenate(sl), np.concatenate(ys))
    t_study, bound_study = _fit_all(np.stack(st), np.stack(yst))
    head.slice_temperature.copy_(torch.as_tensor(t_slice, dtype=torch.float32))
    head.study_temperature.copy_(torch.as_tensor(t_study, dtype=torch.float32))
    out: dict[str, dict[str, float]] = {
        "slice": {c: round(float(t), 4) for c, t in zip(RSNA_CLASSES, t_slice)},
        "study": {c: round(float(t), 4) for c, t in zip(RSNA_CLASSES, t_study)},
    }
    if bound_slice or bound_study:
        log.warning("temperature fit at a bound (T kept 1): slice %s, study %s", bound_slice, bound_study)
    return out
