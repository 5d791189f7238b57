"""The analysis job: engine creation (first time) and the model's task (``analyse_volume``: a
StackPrediction for slice classification, the task's own result otherwise) on a worker thread.

Built on :mod:`viewer.qt.workers` (the Qt layer's one place that starts threads). Every signal carries
the request id, so the controller can drop results that belong to an older request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from viewer.core.applicability import OutOfScopeError
from viewer.core.errors import InferenceCancelled, ModelError, StackNotSupportedError
from viewer.qt.workers import _Job

log = logging.getLogger(__name__)

STAGE_INTERVAL_S = 0.05
VOLUME_CACHE_BYTES = 16 * 1024**2  # load_all returns the array; the slice cache is not needed


class AnalyzeJob(_Job):
    """Runs ``engine_factory()`` then ``engine.analyse_volume(volume)``; reports through signals."""

    stage = Signal(int, str, int, int)  # request id, stage, done, total
    succeeded = Signal(int, object)  # request id, the task's result (StackPrediction for classification)
    not_supported = Signal(int, str)  # request id, reason
    out_of_scope = Signal(int, object)  # request id, Applicability (refused: no probabilities)
    model_failed = Signal(int, str)  # request id, message
    cancelled = Signal(int)  # request id
    # request id, the loaded model's SHA-256: the job wanted another model's result (``require_model``)
    other_model = Signal(int, str)

    def __init__(
        self,
        request_id: int,
        engine_factory: Callable[[], Any],
        stack: Any,
        parent: QObject | None = None,
        shown_volume: Any = None,
        require_model: str | None = None,
    ) -> None:
        super().__init__(parent)
        self.request_id = request_id
        self.stack: Any = stack
        self._factory = engine_factory
        self._shown = shown_volume  # the window's volume of this stack: its decoded slices are reused
        # the SHA-256 of the model whose result is wanted (a review session's recorded result): another
        # loaded model stops the job before any pixel is read
        self._require_model = require_model
        self._last_stage = 0.0

    def _on_stage(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or done == 0 or now - self._last_stage >= STAGE_INTERVAL_S:
            self._last_stage = now
            self.stage.emit(self.request_id, stage, int(done), int(total))

    def _run(self) -> None:
        rid = self.request_id
        volume = None
        try:
            self.stage.emit(rid, "Loading model", 0, 1)
            engine = self._factory()
            if self._require_model is not None and engine.info.sha256 != self._require_model:
                self.other_model.emit(rid, engine.info.sha256)
                return
            engine.check_stack(self.stack)  # header refusals need no pixels
            reused = self._decoded_by_viewer()
            if reused is not None:  # scope check, then the cache (keyed by these pixels), else the model
                prediction = engine.analyse_hu(
                    self.stack, reused, progress=self._on_stage, cancel=self.is_cancelled
                )
            else:
                # A volume of our own: the window closes its volume when the user switches stacks.
                from viewer.core.dicom.volume import StackVolume

                volume = StackVolume(self.stack, cache_bytes=VOLUME_CACHE_BYTES)
                prediction = engine.analyse_volume(volume, progress=self._on_stage, cancel=self.is_cancelled)
        except InferenceCancelled:
            self.cancelled.emit(rid)
            return
        except OutOfScopeError as exc:
            self.out_of_scope.emit(rid, exc.applicability)
            return
        except StackNotSupportedError as exc:
            self.not_supported.emit(rid, str(exc))
            return
        except ModelError as exc:
            self.model_failed.emit(rid, str(exc))
            return
        finally:
            if volume is not None:
                volume.close()
        if self.is_cancelled():
            self.cancelled.emit(rid)
            return
        self.succeeded.emit(rid, prediction)

    def _decoded_by_viewer(self) -> np.ndarray | None:
        """(S, rows, cols) modality values (HU for CT) in the volume's dtype when the viewer has already
        decoded every slice of the stack, else None.

        Only copies out of the viewer's slice cache (``StackVolume.cached`` is thread-safe), so the
        window may close its volume at any time without affecting this job.
        """
        shown, stack = self._shown, self.stack
        if shown is None or shown.stack is not stack:
            return None
        slices = []
        for i in range(len(stack.slices)):
            arr = shown.cached(i)
            if arr is None or arr.ndim != 2:
                return None
            slices.append(arr)
        # the volume's own dtype (int16 for most CT), as a volume of our own would load it: the result
        # cache is keyed by the pixels' digest, dtype included (a float32 copy here missed the cache)
        return np.stack(slices)
