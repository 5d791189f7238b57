"""``slicewise predict PATH... --out results.json|results.csv``: the inference engine without Qt.

``--dicom-out DIR`` also writes each analysed stack's DICOM objects of the model's task (the AI Result
SR and Key Object Selection of slice classification, the DICOM Segmentation of slice segmentation;
:mod:`viewer.core.airesults`), de-identified unless ``--include-identifiers``. The model's task
(:mod:`viewer.core.tasks`) makes each stack's JSON fields; CSV needs a task with per-slice probabilities.

Exit codes: 0 every analysable stack was analysed; 1 some stacks failed, some slices could not be
decoded (the stacks are listed) or none could be analysed;
2 usage error or unusable model. Output is de-identified by default: UIDs only, no names, patient
IDs, dates, descriptions or file paths (``--include-identifiers`` opts in).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from viewer.core.errors import (
    DicomError,
    InferenceCancelled,
    ModelError,
    SlicewiseError,
    StackNotSupportedError,
)

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
OUTPUT_SCHEMA = "slicewise-predictions/2"  # 2: applicability, study decision and stack warnings per stack
IDENTIFIER_COLUMNS = (
    "patient_name",
    "patient_id",
    "patient_birth_date",
    "study_date",
    "accession_number",
    "series_description",
)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would sys.exit(2); we return 2 instead
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="slicewise predict",
        description="Run the Slicewise model on DICOM files, folders, zip archives or DICOMDIRs "
        "(research use only).",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, folders, .zip archives or DICOMDIR")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the bundled model)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto", help="execution provider")
    p.add_argument("--out", type=Path, required=True, help="results file: .json or .csv")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime")
    p.add_argument(
        "--include-identifiers",
        action="store_true",
        help="also write patient name/ID, study date, accession number and series description",
    )
    p.add_argument(
        "--dicom-out",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each analysed stack's AI Result SR and Key Object Selection (DICOM, named by "
        "SOP Instance UID) into DIR; de-identified unless --include-identifiers",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the prediction cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _stack_context(report: Any) -> dict[str, tuple[Any, Any]]:
    """stack uid -> (patient, study)."""
    ctx: dict[str, tuple[Any, Any]] = {}
    for patient in report.patients:
        for study in patient.studies:
            for series in study.series:
                for stack in series.stacks:
                    ctx[stack.uid] = (patient, study)
    return ctx


def _safe_error(exc: BaseException, identifiers: bool) -> str:
    """Error text for the output: our own model/stack messages carry no PHI; DICOM ones may name files."""
    if isinstance(exc, (ModelError, InferenceCancelled)) or identifiers:
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, DicomError):
        return f"{type(exc).__name__}: the stack's pixel data could not be read"
    return f"{type(exc).__name__}"


def _bad_slice_line(stack: Any, bad: Sequence[int], reasons: dict[int, str]) -> str:
    """'<stack uid>: k of n slices (codes)': error codes only, never the reasons' file names."""
    from viewer.core.codes import code_in

    codes = sorted({code_in(reasons.get(i, "")) for i in bad})
    return f"{stack.uid}: {len(bad)} of {len(stack)} slices ({', '.join(codes)})"


def _stack_record(stack: Any, patient: Any, study: Any, identifiers: bool) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "study_instance_uid": stack.study_instance_uid,
        "series_instance_uid": stack.series_instance_uid,
        "stack_uid": stack.uid,
        "modality": stack.modality,
        "num_slices": len(stack),
        "sort_method": stack.sort_method,
        "warnings": list(stack.warnings),  # missing slices, uneven spacing, gantry tilt... (no identifiers)
    }
    if identifiers:
        rec.update(
            {
                "patient_name": getattr(patient, "name", ""),
                "patient_id": getattr(patient, "patient_id", ""),
                "patient_birth_date": getattr(patient, "birth_date", ""),
                "study_date": getattr(study, "date", ""),
                "accession_number": getattr(study, "accession_number", ""),
                "series_description": stack.series_description,
            }
        )
    return rec


def _write_dicom_objects(stack: Any, pred: Any, task: str, folder: Path, identifiers: bool) -> dict[str, Any]:
    """The DICOM objects of the model's task (AI SR + KOS) in ``folder``; the record's
    ``dicom_objects`` (file names are UIDs)."""
    from viewer.core.airesults.identity import read_first_header, source_from_stack
    from viewer.core.tasks import task_named

    try:
        source = source_from_stack(stack, read_first_header(stack))
        paths = task_named(task).dicom_outputs(pred, source, folder, identifiers)
    except (SlicewiseError, OSError, ValueError) as exc:
        log.warning("The AI DICOM objects of a stack could not be written (%s)", type(exc).__name__)
        return {"dicom_objects": [], "dicom_error": _safe_error(exc, identifiers)}
    return {"dicom_objects": [p.name for p in paths]}


def _refusal_fields(exc: StackNotSupportedError) -> dict[str, Any]:
    """A stack the model does not take: status "skipped", the reason, and the applicability decision
    with its codes when the scope check refused it. Never any probability."""
    from viewer.core.applicability import OutOfScopeError

    fields: dict[str, Any] = {"status": "skipped", "error": str(exc)}
    if isinstance(exc, OutOfScopeError):
        fields["applicability"] = exc.applicability.as_dict()
    return fields


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    _atomic_write(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def _write_csv(path: Path, doc: dict[str, Any], class_names: Sequence[str], identifiers: bool) -> None:
    """One row per slice; a model with localisation maps adds the stack's bleed volumes per class
    (``volume_ml_<class>``, ``any`` = the union of the map classes) to every row of the stack."""
    maps = doc["model"].get("maps")
    volume_names = ["any", *[n for n in maps["classes"] if n != "any"]] if maps else []
    id_cols = list(IDENTIFIER_COLUMNS) if identifiers else []
    base = ["study_instance_uid", "series_instance_uid", "stack_uid", "modality", "num_slices"]
    cols = [
        *base,
        *id_cols,
        "status",
        "error",
        "applicability",
        "applicability_codes",
        "applicability_reasons",
        "study_decision",
        "study_prob",
        "warnings",
        "slice_index",
        "sop_instance_uid",
        *[f"prob_{n}" for n in class_names],
        *[f"flag_{n}" for n in class_names],
        *[f"study_prob_{n}" for n in class_names],
        *[f"volume_ml_{n}" for n in volume_names],
        "model_sha256",
    ]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    thresholds = doc["model"]["thresholds"]
    for rec in doc["stacks"]:
        common = {c: rec.get(c, "") for c in base + id_cols}
        common.update(status=rec["status"], error=rec.get("error", ""), model_sha256=doc["model"]["sha256"])
        scope = rec.get("applicability") or {}
        decision = rec.get("study_decision") or {}
        common.update(
            applicability=scope.get("decision", ""),
            applicability_codes=";".join(scope.get("codes", [])),
            applicability_reasons="; ".join(r["message"] for r in scope.get("reasons", [])),
            study_decision=decision.get("label", ""),
            study_prob=decision.get("study_prob", ""),
            warnings="; ".join(rec.get("warnings", [])),
        )
        if rec["status"] != "ok":
            writer.writerow(common)
            continue
        study = {f"study_prob_{n}": rec["study_probs"][n] for n in class_names}
        volumes = (rec.get("maps") or {}).get("volumes_ml", {})
        study.update({f"volume_ml_{n}": volumes.get(n, "") for n in volume_names})
        for sl in rec["slices"]:
            row = dict(common, **study)
            row["slice_index"] = sl["index"]
            row["sop_instance_uid"] = sl["sop_instance_uid"]
            for n in class_names:
                row[f"prob_{n}"] = sl["probs"][n]
                row[f"flag_{n}"] = int(sl["probs"][n] >= thresholds[n])
            writer.writerow(row)
    _atomic_write(path, buf.getvalue())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        _say(f"slicewise predict: error: {exc}")
        return EXIT_USAGE
    out: Path = args.out
    if args.threads is not None and args.threads < 1:
        _say("slicewise predict: error: --threads must be at least 1")
        return EXIT_USAGE
    if out.suffix.lower() not in (".json", ".csv"):
        _say("slicewise predict: error: --out must end in .json or .csv")
        return EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # pydicom both logs and warns about what it meets in a header ("Expected explicit VR, but found
    # implicit VR"): printed twice, the second time with a line of pydicom's source, between the progress
    # bars, naming no file; what cannot be used is in the skipped-files line and each stack's warnings.
    # A filter, not a level: importing pydicom sets its logger's level
    logging.getLogger("pydicom").addFilter(lambda record: record.levelno >= logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")

    from tqdm import tqdm

    from viewer.core.inference.cache import PredictionCache
    from viewer.core.inference.engine import InferenceEngine, provider_label
    from viewer.core.paths import bundled_model_path

    model_path = args.model if args.model is not None else bundled_model_path()
    try:
        engine = InferenceEngine(
            model_path,
            provider=args.provider,
            threads=args.threads,
            cache=None if args.no_cache else PredictionCache(),
        )
    except ModelError as exc:
        _say(f"slicewise predict: model error: {exc}")
        return EXIT_USAGE
    info = engine.info
    from viewer.core.tasks import task_named

    task = task_named(info.task)
    if out.suffix.lower() == ".csv" and not task.tabular:
        _say(
            f"slicewise predict: error: the model's task {task.name!r} has no per-slice probabilities "
            "for CSV rows; use --out results.json"
        )
        return EXIT_USAGE
    _say(f"Model {info.label} ({info.short_hash}) on {provider_label(engine.provider)}. {info.intended_use}")
    if engine.provider_note:
        _say(f"{'warning' if args.provider == 'cuda' else 'note'}: {engine.provider_note}")

    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    t0 = time.perf_counter()
    with tqdm(desc="Scanning", unit="file", file=sys.stderr, disable=args.quiet, leave=False) as bar:

        def scan_progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        # every CT stack is loaded whole next: a compressed folder's decoders start during the scan
        report = load_paths(args.paths, progress=scan_progress, whole_volume=True)
    if report.skipped:
        from viewer.core.codes import summarise

        reasons = summarise(s.code for s in report.skipped)
        _say(f"{len(report.skipped)} file(s) skipped while scanning: {reasons}")
    stacks = report.all_stacks()
    context = _stack_context(report)
    records: list[dict[str, Any]] = []
    failed = analysed = 0
    incomplete: list[str] = []  # stacks analysed with slices that could not be decoded
    for stack in tqdm(stacks, desc="Analysing", unit="stack", file=sys.stderr, disable=args.quiet):
        patient, study = context.get(stack.uid, (None, None))
        rec = _stack_record(stack, patient, study, args.include_identifiers)
        try:
            engine.check_stack(stack)
        except StackNotSupportedError as exc:
            rec.update(_refusal_fields(exc))
            records.append(rec)
            continue
        volume = None
        try:
            volume = StackVolume(stack, preread=report.preread)
            pred = engine.analyse_volume(volume, use_cache=not args.no_cache)
            rec.update(task.summary(pred))
            if args.dicom_out is not None:
                identifiers = args.include_identifiers
                rec.update(_write_dicom_objects(stack, pred, info.task, args.dicom_out, identifiers))
                failed += "dicom_error" in rec
            if pred.bad_slices:
                rec["bad_slices"] = list(pred.bad_slices)
                incomplete.append(_bad_slice_line(stack, pred.bad_slices, volume.bad_slices))
            analysed += 1
        except StackNotSupportedError as exc:  # refused after the pixel check: no probabilities
            rec.update(_refusal_fields(exc))
        except (SlicewiseError, MemoryError, OSError, ValueError) as exc:
            failed += 1
            rec.update(status="error", error=_safe_error(exc, args.include_identifiers))
            log.warning("A stack failed (%s)", type(exc).__name__)
        finally:
            if volume is not None:
                volume.close()
        records.append(rec)
    if report.preread is not None:
        report.preread.release()  # pixels read during the scan that no stack took

    doc: dict[str, Any] = {
        "schema": OUTPUT_SCHEMA,
        "intended_use": info.intended_use,
        "model": {
            "name": info.name,
            "version": info.version,
            "sha256": info.sha256,
            "provider": engine.provider,
            "provider_note": engine.provider_note,
            "task": info.task,
            "class_names": list(info.class_names),
            "thresholds": dict(zip(info.class_names, info.thresholds)),
            "study_thresholds": dict(zip(info.class_names, info.decision_thresholds)),
            "study_thresholds_recorded": bool(info.study_thresholds),
            "trained_range_recorded": info.trained_range is not None,
            "contract_version": info.contract_version,
            "maps": None
            if info.maps is None
            else {
                "classes": list(info.maps.class_names),
                "size": info.maps.size,
                "thresholds": dict(zip(info.maps.class_names, info.maps.thresholds)),
                "volume": info.maps.volume.to_metadata(info.maps.class_names),
            },
        },
        "de_identified": not args.include_identifiers,
        "files_seen": report.files_seen,
        "files_skipped": len(report.skipped),
        "files_skipped_by_code": report.skipped_by_code(),
        "elapsed_s": round(time.perf_counter() - t0, 3),
        "stacks": records,
    }
    try:
        if out.suffix.lower() == ".json":
            _write_json(out, doc)
        else:
            _write_csv(out, doc, info.class_names, args.include_identifiers)
    except OSError as exc:
        _say(f"slicewise predict: cannot write the results file ({exc.strerror})")
        return EXIT_USAGE
    skipped = sum(1 for r in records if r["status"] == "skipped")
    cautioned = sum(1 for r in records if (r.get("applicability") or {}).get("decision") == "caution")
    _say(
        f"{analysed} stack(s) analysed ({cautioned} with a caution), {skipped} skipped (out of scope or "
        f"not supported), {failed} failed -> {out.name}"
    )
    if incomplete:
        _say(f"{len(incomplete)} stack(s) had slices that could not be decoded (filled, see bad_slices):")
        for line in incomplete:
            _say(f"  {line}")
    if failed or analysed == 0 or incomplete:
        return EXIT_SOME_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
