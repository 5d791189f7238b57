"""Per-class temperature scaling (Guo et al., ICML 2017), fitted on validation logits.

``p = sigmoid(logit / T)``: one temperature per class, chosen to minimise the binary cross-entropy
on the validation split (a 1-D search over log T, then a golden-section refinement). The fitted
temperatures are written into the network's ``SequenceHead`` buffers, so the exported ONNX graph
divides its logits by them before the sigmoid and the outputs stay probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from training.model import SequenceHead
from viewer.core.constants import RSNA_CLASSES

T_MIN, T_MAX = 0.2, 8.0


def _bce(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    z = logits / t
    # log(1 + exp(-|z|)) + max(z, 0) - y z: a stable BCE on logits
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature in [T_MIN, T_MAX] minimising the BCE of ``sigmoid(logits / T)`` against ``y``.

    1.0 when ``y`` has a single class (nothing to calibrate against).
    """
    logits = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if len(y) == 0 or y.min() == y.max():
        return 1.0
    grid = np.exp(np.linspace(math.log(T_MIN), math.log(T_MAX), 61))
    losses = [_bce(logits, y, t) for t in grid]
    i = int(np.argmin(losses))
    lo, hi = math.log(grid[max(0, i - 1)]), math.log(grid[min(len(grid) - 1, i + 1)])
    g = (math.sqrt(5) - 1) / 2
    for _ in range(30):  # golden section on log T
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if _bce(logits, y, math.exp(a)) < _bce(logits, y, math.exp(b)):
            hi = b
        else:
            lo = a
    return float(math.exp((lo + hi) / 2))


def fit_temperatures(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(N, K) logits and labels -> (K,) per-class temperatures."""
    return np.array([fit_temperature(logits[:, k], y[:, k]) for k in range(logits.shape[1])])


@torch.no_grad()
def calibrate_head(
    head: SequenceHead,
    embeds: Sequence[torch.Tensor],
    slice_labels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
) -> dict[str, dict[str, float]]:
    """Fit slice and study temperatures of ``head`` on validation embeddings; set them; return them."""
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
    t_slice = fit_temperatures(np.concatenate(sl), np.concatenate(ys))
    t_study = fit_temperatures(np.stack(st), np.stack(yst))
    head.slice_temperature.copy_(torch.as_tensor(t_slice, dtype=torch.float32))
    head.study_temperature.copy_(torch.as_tensor(t_study, dtype=torch.float32))
    return {
        "slice": {c: round(float(t), 4) for c, t in zip(RSNA_CLASSES, t_slice)},
        "study": {c: round(float(t), 4) for c, t in zip(RSNA_CLASSES, t_study)},
    }
