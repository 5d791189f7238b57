"""Noise consistency for the sequence stage (``train --noise-consistency W``).

``training.synth`` draws a study's anatomy, lesions and geometry before its noise, and draws the noise
level as one uniform number scaled into the ``--noise-hu`` range; so ``slicewise-train synth`` with one
seed and different ``--noise-hu`` ranges writes the same scenes (same head, lesions, field of view, slice
positions and labels) at different noise levels. Such renderings of one scene are found again among the
training stacks by what only they share: the patient, the (randomly drawn) pixel spacing, the slice
count and the per-slice labels (:func:`rendering_partners`).

During the GRU stage each training crop of such a stack is paired with the same crop (same slices,
reversal and mirroring) of another rendering of its scene, both go through the sequence head, both are
supervised as usual, and ``W`` times :func:`study_consistency` pulls their study logits together: a
study's score should not move with the image noise, in particular not rise for a normal study.

``--noise-consistency-mode`` (:class:`ConsistencyMode`): ``symmetric`` pulls both logits towards each other
(the squared difference also rewards small logits: with it, normal studies' scores were compressed onto a
floor); ``towards-clean`` pulls only the noisier rendering's logit towards the less noisy one's, whose
gradient is stopped; ``rise-only`` does the same but penalises only a rise under noise. Which rendering
is noisier is measured on the cached model input (:func:`noise_energy`): the renderings of one scene differ
only in their noise, so the one with more high-frequency energy is the noisier.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from enum import Enum

import numpy as np
import torch

from training.dataset import StudyItem
from viewer.core.constants import RSNA_CLASS_WEIGHTS

SceneKey = tuple[str, float, int, bytes]


class ConsistencyMode(str, Enum):
    """How the study logits of two renderings of one scene are compared (``--noise-consistency-mode``)."""

    SYMMETRIC = "symmetric"  # (a - b)^2, gradient into both
    TOWARDS_CLEAN = "towards-clean"  # (noisy - stop_grad(clean))^2
    RISE_ONLY = "rise-only"  # relu(noisy - stop_grad(clean))^2


def noise_energy(x: np.ndarray) -> float:
    """Mean squared in-plane first difference of a cached stack's first (brain) window channel,
    ``x`` (S, C, H, W): anatomy and noise add, so of two renderings of one scene the noisier has more."""
    ch = np.asarray(x[:, 0], dtype=np.float32)
    return float(np.mean(np.diff(ch, axis=-1) ** 2) + np.mean(np.diff(ch, axis=-2) ** 2))


def scene_key(item: StudyItem) -> SceneKey | None:
    """What two renderings of one synthetic scene share; None for a stack without a pixel spacing."""
    spacing = item.acquisition.get("pixel_spacing_mm")
    if spacing is None:
        return None
    labels = np.ascontiguousarray(item.labels * item.mask[:, None], dtype=np.uint8)
    return (item.patient_key, round(float(spacing), 9), len(item), labels.tobytes())


def rendering_partners(items: Sequence[StudyItem]) -> list[list[int]]:
    """For each item, the indices of the other items that render its scene (empty when none does)."""
    groups: dict[SceneKey, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        key = scene_key(item)
        if key is not None:
            groups[key].append(i)
    partners: list[list[int]] = [[] for _ in items]
    for members in groups.values():
        for i in members:
            partners[i] = [j for j in members if j != i]
    return partners


def pick_partners(
    indices: Sequence[int], partners: Sequence[Sequence[int]], rng: np.random.Generator
) -> list[int | None]:
    """One other rendering, drawn at random, for each index (None for a stack without one)."""
    return [int(rng.choice(partners[i])) if partners[i] else None for i in indices]


def study_consistency(
    a: torch.Tensor,
    b: torch.Tensor,
    mode: ConsistencyMode = ConsistencyMode.SYMMETRIC,
    b_noisier: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared difference of paired study logits [N, K], classes weighted like the RSNA metric
    (``any`` x2); 0 for no pairs. The directed modes need ``b_noisier`` [N] (bool: pair n's ``b`` is the
    noisier rendering): the less noisy logit is the target, its gradient stopped."""
    if a.shape[0] == 0:
        return a.sum() * 0.0
    w = torch.tensor(RSNA_CLASS_WEIGHTS, dtype=a.dtype, device=a.device)
    if mode is ConsistencyMode.SYMMETRIC:
        diff = a - b
    else:
        if b_noisier is None or b_noisier.shape != a.shape[:1]:
            raise ValueError(f"consistency mode {mode.value} needs which rendering of each pair is noisier")
        flag = b_noisier.to(device=a.device, dtype=torch.bool)[:, None]
        noisy = torch.where(flag, b, a)
        clean = torch.where(flag, a, b).detach()
        diff = noisy - clean
        if mode is ConsistencyMode.RISE_ONLY:
            diff = torch.relu(diff)
    return ((diff**2) * w).sum(-1).mean() / w.sum()
