"""ONNX Runtime inference engine: one validated model, one session, stacks in, StackPrediction out.

No Qt. ``onnxruntime`` is imported inside functions only, so importing this module is cheap.

Typical use::

    engine = InferenceEngine(bundled_model_path(), provider="auto")
    prediction = engine.predict_volume(volume, progress=..., cancel=...)
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from viewer.core.applicability import Applicability, OutOfScopeError, assess_applicability
from viewer.core.applicability.header import ScopeTags, check_header, read_scope_tags
from viewer.core.constants import MODEL_INPUT_NAME
from viewer.core.errors import InferenceCancelled, ModelContractError, ModelError, StackNotSupportedError
from viewer.core.inference.cache import PredictionCache, cache_key, pixel_digest
from viewer.core.inference.model import (
    ModelInfo,
    check_external_data,
    check_io,
    parse_metadata,
    read_model_bytes,
    sha256_bytes,
)
from viewer.core.inference.results import StackPrediction
from viewer.core.preprocess import HeadGrid, geometry_from_stack, head_grid, model_slice_order, preprocess

if TYPE_CHECKING:
    from viewer.core.dicom.model import Stack
    from viewer.core.dicom.volume import StackVolume
    from viewer.core.tasks.registry import TaskResult

log = logging.getLogger(__name__)

ProviderChoice = Literal["auto", "cpu", "cuda"]
PROVIDER_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
CANCEL_POLL_S = 0.02

# progress(stage, done, total); stages: "Loading slices", "Preprocessing", "Running model"
ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


def default_threads() -> int:
    """intra-op threads: every CPU on small machines (<= 4), else half the logical CPUs (SMT), max 8.

    Measured on the 2-vCPU reference machine (benchmarks/bench_infer.py, CNN-GRU at 128 px, 40 slices,
    interleaved runs): 2 threads 924 slices/s vs 1 thread 607 (median of 8), so both cores are used;
    the analysis runs off the GUI thread. ``SLICEWISE_ORT_THREADS`` overrides it.
    """
    override = os.environ.get("SLICEWISE_ORT_THREADS", "")
    if override.isdigit() and int(override) > 0:
        return int(override)
    try:
        logical = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        logical = os.cpu_count() or 1
    return max(1, min(8, logical if logical <= 4 else logical // 2))


def provider_label(provider: str) -> str:
    """'CUDAExecutionProvider' -> 'CUDA'."""
    return provider.removesuffix("ExecutionProvider") or provider


# why CUDA was not obtained, as :func:`_cuda_reason` words it (and :func:`provider_summary` reads it back)
_CUDA_NOT_BUILT = "this onnxruntime build has no CUDA provider"
_CUDA_NOT_STARTED = "could not be initialised (no usable GPU, or CUDA/cuDNN libraries missing)"


def provider_summary(provider: str, note: str) -> str:
    """One short line for a narrow panel: the provider that runs and, when CUDA was wanted but not
    obtained (``note``, from :func:`create_session`), why in a few words; the note itself (with the
    library error) is the detail, e.g. for a tooltip. "" when nothing needs saying (no note)."""
    if not note:
        return ""
    if _CUDA_NOT_BUILT in note:
        why = "onnxruntime without CUDA"
    elif _CUDA_NOT_STARTED in note:
        why = "no usable GPU / CUDA libraries"
    else:
        why = "CUDA not obtained"
    return f"{provider_label(provider)}: {why}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def _capture_stderr() -> Iterator[list[str]]:
    """Capture what native code (ORT's logger) writes to fd 2, then re-emit it to the real stderr."""
    captured: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover
        yield captured
        return
    with tempfile.TemporaryFile() as tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            if text:
                captured.append(text)
                # ORT's own lines become the provider note; anything else (other threads) goes back out
                other = [ln for ln in text.splitlines(keepends=True) if "onnxruntime" not in ln.lower()]
                other = [ln for ln in other if _ANSI.sub("", ln).strip()]
                if other:
                    os.write(2, "".join(other).encode())
                log.debug("onnxruntime session log: %s", _ANSI.sub("", text).strip())


def _cuda_reason(available: Sequence[str], texts: Sequence[str], requested: str) -> str:
    """Why CUDA was not obtained. ``requested`` "cuda" (forced) or "auto" (tried first): the wording
    says which, so that a CPU-only machine on "auto" reads as normal, not as a failure."""
    lead = "CUDA was requested but" if requested == "cuda" else "Running on the CPU: CUDA was tried, but"
    if CUDA_EP not in available:
        return f"{lead} {_CUDA_NOT_BUILT} (available: {', '.join(available)}); install onnxruntime-gpu"
    text = _ANSI.sub("", "\n".join(texts))
    details: list[str] = []
    missing = re.search(r"with error: ([^\n]+)", text)
    if missing:
        details.append(missing.group(1).strip())
    require = re.search(r"(Require [^.]+\.[^.]*\.)", text)
    if require:
        details.append(require.group(1).strip())
    if not details:
        for line in text.splitlines():
            if "cuda" in line.lower() and ("fail" in line.lower() or "error" in line.lower()):
                details.append(line.strip())
                break
    detail = "; ".join(details)
    if len(detail) > 300:
        detail = detail[:300] + "..."
    base = f"{lead} {_CUDA_NOT_STARTED}"
    return f"{base}: {detail}" if detail else base


_preloaded = False


def _preload_cuda_libraries(ort: Any) -> None:
    """Let ORT find CUDA/cuDNN from the ``nvidia-*`` pip wheels (``onnxruntime-gpu[cuda,cudnn]``), once."""
    global _preloaded
    if _preloaded or not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return
    _preloaded = True
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):  # it prints what it could not load
            ort.preload_dlls(directory="")
    except Exception as exc:
        log.debug("onnxruntime.preload_dlls failed: %s", exc)
    if buf.getvalue().strip():
        log.debug("onnxruntime.preload_dlls: %s", buf.getvalue().strip())


def create_session(
    model_bytes: bytes, provider: str = "auto", threads: int | None = None
) -> tuple[Any, str, str]:
    """(session, provider actually used, note why CUDA was not obtained or "")."""
    import onnxruntime as ort

    if provider not in PROVIDER_CHOICES:
        raise ModelError(f"Unknown provider {provider!r}; choose one of {', '.join(PROVIDER_CHOICES)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = threads or default_threads()
    so.inter_op_num_threads = 1
    available = list(ort.get_available_providers())
    want_cuda = provider in ("auto", "cuda")
    providers: list[Any]
    if want_cuda and CUDA_EP in available:
        providers = [(CUDA_EP, {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}), CPU_EP]
    else:
        providers = [CPU_EP]
    texts: list[str] = []
    if want_cuda and CUDA_EP in available:
        _preload_cuda_libraries(ort)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if want_cuda and CUDA_EP in available:
                with _capture_stderr() as native:
                    session = ort.InferenceSession(model_bytes, sess_options=so, providers=providers)
                texts.extend(native)
            else:
                session = ort.InferenceSession(model_bytes, sess_options=so, providers=providers)
        texts.extend(str(w.message) for w in caught)
    except Exception as exc:
        message = str(exc)
        if "external" in message.lower():
            raise ModelContractError(
                f"the model uses external data, which Slicewise refuses ({message})"
            ) from exc
        raise ModelContractError(f"onnxruntime could not load the model: {message}") from exc
    used = session.get_providers()[0]
    note = ""
    if want_cuda and used != CUDA_EP:
        note = _cuda_reason(available, texts, provider)
        if provider == "cuda":
            log.warning("%s; running on %s", note, used)
        else:
            log.info("%s; running on %s", note, used)
    return session, used, note


def load_model_info(path: Path | str) -> ModelInfo:
    """Validate a model without keeping a session (metadata and I/O), e.g. for the model picker."""
    engine = InferenceEngine(path, provider="cpu", cache=None)
    return engine.info


class InferenceEngine:
    """A validated model plus its ONNX Runtime session. Thread-safe for one prediction at a time."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        provider: str = "auto",
        threads: int | None = None,
        cache: PredictionCache | Literal["default"] | None = "default",
    ) -> None:
        path = Path(model_path)
        data = read_model_bytes(path)
        check_external_data(data, path)
        session, used, note = create_session(data, provider, threads)
        meta = dict(session.get_modelmeta().custom_metadata_map)
        info = parse_metadata(meta, path, sha256_bytes(data))
        check_io(session.get_inputs(), session.get_outputs(), info)
        self.info = info
        self.requested_provider = provider
        self.provider = used
        self.provider_note = note
        self._session = session
        self._lock = threading.Lock()
        self.cache: PredictionCache | None = PredictionCache() if cache == "default" else cache
        log.info("Model %s (%s) ready on %s", info.label, info.short_hash, provider_label(used))

    # --- checks ------------------------------------------------------------------------------------
    def check_stack(self, stack: Stack) -> None:
        """Raise :class:`OutOfScopeError` (a :class:`StackNotSupportedError`) when the header alone
        refuses ``stack`` (modality, colour, too few slices, localizer, not axial): no pixels needed."""
        info = self.info
        reasons = check_header(
            stack,
            modality=info.modality,
            min_slices=info.min_slices,
            trained_range=info.trained_range,
            tags=ScopeTags(),
        )
        refused = Applicability.from_reasons(reasons)
        if refused.refused:
            raise OutOfScopeError(refused)

    def applicability(
        self, stack: Stack, hu: np.ndarray | None, bad_slices: Sequence[int] = ()
    ) -> Applicability:
        """The applicability check for this model (its modality, minimum slices and trained range)."""
        info = self.info
        return assess_applicability(
            stack,
            hu,
            modality=info.modality,
            min_slices=info.min_slices,
            trained_range=info.trained_range,
            bad_slices=bad_slices,
            tags=read_scope_tags(stack),
        )

    def cache_key(self, hu: np.ndarray) -> str:
        return cache_key(pixel_digest(hu), self.info.sha256, self.info.preprocessing_key)

    def cached(self, stack: Stack, hu: np.ndarray) -> StackPrediction | None:
        """The cached result for these pixels with this model, or None (never runs the model)."""
        if self.cache is None:
            return None
        entry = self.cache.get(self.cache_key(hu))
        if entry is None or entry["slice_probs"].shape != (len(stack), len(self.info.class_names)):
            return None
        meta = entry["meta"]
        spec = self.info.maps
        maps = entry.get("maps")
        shape = None if spec is None else (len(stack), len(spec.class_names), spec.size, spec.size)
        if shape is not None and (maps is None or maps.shape != shape):
            return None  # a result without this model's maps: run the model again
        return self._prediction(
            stack,
            entry["slice_probs"],
            entry["study_probs"],
            provider=str(meta.get("provider", self.provider)),
            note=str(meta.get("provider_note", "")),
            elapsed=float(meta.get("elapsed_s", 0.0)),
            from_cache=True,
            bad_slices=tuple(int(i) for i in meta.get("bad_slices", [])),
            maps=maps if spec is not None else None,
            grid=self.head_grid(stack, hu) if spec is not None else None,
        )

    # --- running -----------------------------------------------------------------------------------
    def predict_volume(
        self,
        volume: StackVolume,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        use_cache: bool = True,
    ) -> StackPrediction:
        """:meth:`analyse_volume` for a slice classification model (the viewer's analysis panel);
        a ModelContractError naming the task for a model of another task."""
        self.require_classification()
        return _as_stack_prediction(
            self.analyse_volume(volume, progress=progress, cancel=cancel, use_cache=use_cache)
        )

    def predict_hu(
        self,
        stack: Stack,
        hu: np.ndarray,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        use_cache: bool = True,
        bad_slices: tuple[int, ...] = (),
    ) -> StackPrediction:
        """:meth:`analyse_hu` for a slice classification model (see :meth:`predict_volume`)."""
        self.require_classification()
        return _as_stack_prediction(
            self.analyse_hu(
                stack, hu, progress=progress, cancel=cancel, use_cache=use_cache, bad_slices=bad_slices
            )
        )

    def require_classification(self) -> None:
        """Raise ModelContractError unless the model's results are slice classifications (the parts of
        the viewer that show probabilities per slice take no other task's results)."""
        from viewer.core.tasks import task_named

        task = task_named(self.info.task)
        if not issubclass(task.result_type, StackPrediction):
            raise ModelContractError(
                f"this model's task is {task.name!r} ({task.description}); this part of Slicewise shows "
                "slice classification results only. Run it with `slicewise predict --model ...`"
            )

    def analyse_volume(
        self,
        volume: StackVolume,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        use_cache: bool = True,
    ) -> TaskResult:
        """Analyse an open stack: decode all slices, check applicability, then the cache, else run."""
        stack = volume.stack
        self.check_stack(stack)
        _check_cancel(cancel)
        start = time.perf_counter()

        def load_progress(done: int, total: int) -> None:
            if progress is not None:
                progress("Loading slices", done, total)

        hu = volume.load_all(progress=load_progress, cancel=cancel)
        _check_cancel(cancel)
        bad = tuple(sorted(int(i) for i in volume.bad_slices))
        if len(bad) * 2 > len(stack):
            raise StackNotSupportedError(
                f"{len(bad)} of {len(stack)} slices could not be decoded; the stack was not analysed."
            )
        return self.analyse_hu(
            stack, hu, progress=progress, cancel=cancel, use_cache=use_cache, bad_slices=bad, _start=start
        )

    def analyse_hu(
        self,
        stack: Stack,
        hu: np.ndarray,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        use_cache: bool = True,
        bad_slices: tuple[int, ...] = (),
        _start: float | None = None,
    ) -> TaskResult:
        """Analyse ``hu`` (S, rows, cols) float32 HU, the pixels of ``stack`` in its slice order; the
        result is the model's task's (:mod:`viewer.core.tasks`).

        The applicability check runs first: an out-of-scope stack raises :class:`OutOfScopeError` and
        is never run (nor served from the cache). The cache is keyed by the pixels' content.
        """
        from viewer.core.tasks import ResultContext, task_named

        task = task_named(self.info.task)
        self.check_stack(stack)
        if hu.ndim != 3 or hu.shape[0] != len(stack):
            raise StackNotSupportedError(
                f"expected {len(stack)} greyscale slices, got an array of shape {hu.shape}"
            )
        start = time.perf_counter() if _start is None else _start
        scope = self.applicability(stack, hu, bad_slices)
        if scope.refused:
            log.info("Stack out of scope (%s)", ", ".join(scope.codes))
            raise OutOfScopeError(scope)
        cacheable = task.caches(self.info)
        if use_cache and cacheable:
            hit = self.cached(stack, hu)
            if hit is not None:
                return replace(hit, applicability=scope)
        grid = self.head_grid(stack, hu)
        x = self.preprocess(hu, progress=progress, cancel=cancel, stack=stack, grid=grid)
        arrays = self.run_outputs(x, progress=progress, cancel=cancel)
        ctx = ResultContext(
            stack=stack,
            info=self.info,
            slice_order=self.slice_order(stack),
            provider=self.provider,
            provider_note=self.provider_note,
            elapsed_s=time.perf_counter() - start,
            bad_slices=bad_slices,
            applicability=scope,
            head_grid=grid,
        )
        result = task.build_result(ctx, arrays)
        if self.cache is not None and cacheable and task.cache_arrays is not None:
            slice_probs, study_probs, maps = task.cache_arrays(result)
            meta = {
                "provider": self.provider,
                "provider_note": self.provider_note,
                "elapsed_s": ctx.elapsed_s,
                "bad_slices": list(bad_slices),
            }
            self.cache.put(self.cache_key(hu), slice_probs, study_probs, meta, maps)
        return result

    def preprocess(
        self,
        hu: np.ndarray,
        *,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
        stack: Stack | None = None,
        grid: HeadGrid | None = None,
    ) -> np.ndarray:
        """(S, H, W) HU -> (1, S, C, size, size) model input with the model's preprocessing version.

        Progress and cancel per chunk of slices; version 2 needs ``stack`` (its geometry in mm) and
        returns the slices in the model's order (:meth:`slice_order`; undo it on the outputs); ``grid``:
        the stack's :meth:`head_grid` when the caller has it.
        """
        spec = self.info.preprocessing
        geometry = geometry_from_stack(stack) if spec.version >= 2 and stack is not None else None

        def step(done: int, total: int) -> None:
            _check_cancel(cancel)
            if progress is not None:
                progress("Preprocessing", done, total)

        _check_cancel(cancel)
        x = preprocess(hu, spec, geometry, progress=step, grid=grid)
        return x[model_slice_order(geometry, len(x))][None]

    def head_grid(self, stack: Stack, hu: np.ndarray) -> HeadGrid | None:
        """Where a version-2 model's input grid lies on ``stack``'s pixels ``hu`` (the head centre over
        the whole stack); None for version 1, whose geometry the matrix alone fixes."""
        spec = self.info.preprocessing
        if spec.version < 2:
            return None
        return head_grid(hu, geometry_from_stack(stack), spec)

    def slice_order(self, stack: Stack) -> np.ndarray:
        """Stack index of each model input slice (version 2 reads inferior to superior)."""
        if self.info.preprocessing.version < 2:
            return np.arange(len(stack))
        return model_slice_order(geometry_from_stack(stack), len(stack))

    def run(
        self, x: np.ndarray, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`run_outputs` of a slice classification model: (slice_probs (S, K), study_probs (K,)),
        float32, clipped to [0, 1], in the model's slice order."""
        self.require_classification()
        slice_probs, study_probs = self.run_outputs(x, progress=progress, cancel=cancel)
        return slice_probs, study_probs

    def run_outputs(
        self, x: np.ndarray, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None
    ) -> tuple[np.ndarray, ...]:
        """Run the whole sequence through the model once (the GRU needs all slices); the outputs parsed
        by the model's task (model slice order).

        Cancellable mid-run: a watcher thread polls ``cancel`` and sets ``RunOptions.terminate``.
        """
        import onnxruntime as ort

        from viewer.core.tasks import task_named

        _check_cancel(cancel)
        task = task_named(self.info.task)  # the task's outputs and how to read them
        n = x.shape[1]
        if progress is not None:
            progress("Running model", 0, 1)
        run_options = ort.RunOptions()
        run_options.log_severity_level = 4  # failures and cancellation surface as exceptions, not log spam
        done = threading.Event()
        cancelled = threading.Event()

        def watch() -> None:
            while not done.wait(CANCEL_POLL_S):
                if cancel is not None and cancel():
                    cancelled.set()
                    run_options.terminate = True
                    return

        watcher = threading.Thread(target=watch, name="ort-cancel-watch", daemon=True)
        watcher.start()
        try:
            with self._lock:
                names = [o.name for o in task.outputs_for(self.info)]
                outputs = self._session.run(names, {MODEL_INPUT_NAME: x}, run_options)
        except Exception as exc:
            if cancelled.is_set() or (cancel is not None and cancel()):
                raise InferenceCancelled("Analysis cancelled") from exc
            raise ModelError(f"The model failed on this stack: {exc}") from exc
        finally:
            done.set()
            watcher.join()
        if cancelled.is_set():
            raise InferenceCancelled("Analysis cancelled")
        arrays = task.parse_outputs(outputs, n, len(self.info.class_names))
        if progress is not None:
            progress("Running model", 1, 1)
        return arrays

    def _prediction(
        self,
        stack: Stack,
        slice_probs: np.ndarray,
        study_probs: np.ndarray,
        *,
        provider: str,
        note: str,
        elapsed: float,
        from_cache: bool = False,
        bad_slices: tuple[int, ...] = (),
        maps: np.ndarray | None = None,
        grid: HeadGrid | None = None,
    ) -> StackPrediction:
        from viewer.core.tasks import ResultContext
        from viewer.core.tasks.slice_classification import build_prediction, with_localisation_maps

        ctx = ResultContext(
            stack=stack,
            info=self.info,
            slice_order=np.arange(len(stack)),
            provider=provider,
            provider_note=note,
            elapsed_s=elapsed,
            bad_slices=bad_slices,
            head_grid=grid,
        )
        pred = build_prediction(ctx, slice_probs, study_probs, from_cache=from_cache)
        return pred if maps is None else with_localisation_maps(ctx, pred, maps)


def _as_stack_prediction(result: object) -> StackPrediction:
    if not isinstance(result, StackPrediction):  # pragma: no cover - require_classification ran first
        raise ModelContractError(f"expected a slice classification result, got {type(result).__name__}")
    return result


def _check_cancel(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise InferenceCancelled("Analysis cancelled")
