"""``slicewise predict``: JSON/CSV output, de-identification, per-stack errors, exit codes."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.core.inference_models import build_model, write_bleed_series
from tests.factories import CANARY_ID, CANARY_NAME, write_ct_series
from viewer.cli import main as cli_main
from viewer.predict_cli import main

pytest.importorskip("viewer.core.dicom.loader")
pytest.importorskip("viewer.core.dicom.volume")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_model(tmp_path_factory.mktemp("m") / "tiny.onnx")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("studies")
    write_bleed_series(root / "a", 6, (2, 3))
    write_bleed_series(root / "b", 5, ())
    return root


def _no_phi(text: str) -> None:
    assert CANARY_NAME not in text and CANARY_ID not in text
    assert "CANARY" not in text.upper()
    assert "19700101" not in text and "20260101" not in text  # birth date, study date
    assert ".dcm" not in text


def test_json_output_deidentified(model: Path, studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    rc = main([str(studies), "--model", str(model), "--provider", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0
    text = out.read_text()
    _no_phi(text)
    doc = json.loads(text)
    assert doc["de_identified"] is True and doc["intended_use"].startswith("Research use only")
    assert doc["model"]["provider"] == "CPUExecutionProvider" and len(doc["model"]["sha256"]) == 64
    stacks = doc["stacks"]
    assert sorted(s["num_slices"] for s in stacks) == [5, 6]
    for s in stacks:
        assert s["status"] == "ok"
        assert len(s["slices"]) == s["num_slices"]
        assert set(s["study_probs"]) == set(doc["model"]["class_names"])
        for sl in s["slices"]:
            assert all(0.0 <= p <= 1.0 for p in sl["probs"].values())
        assert "patient_id" not in s and "series_description" not in s


def test_csv_output_and_identifiers_opt_in(model: Path, studies: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    assert main([str(studies), "--model", str(model), "--out", str(out), "--quiet", "--provider", "cpu"]) == 0
    text = out.read_text()
    _no_phi(text)
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) == 11
    assert {"prob_any", "flag_subdural", "study_prob_any", "sop_instance_uid"} <= set(rows[0])
    assert all(r["status"] == "ok" for r in rows)
    # by the CLI dispatcher, with identifiers opted in
    out2 = tmp_path / "r2.csv"
    rc = cli_main(
        [
            "predict",
            str(studies),
            "--model",
            str(model),
            "--out",
            str(out2),
            "--quiet",
            "--include-identifiers",
            "--no-cache",
        ]
    )
    assert rc == 0
    rows2 = list(csv.DictReader(out2.read_text().splitlines()))
    assert rows2[0]["patient_id"] == CANARY_ID and rows2[0]["patient_name"] == CANARY_NAME


def test_per_stack_error_does_not_stop_batch(studies: Path, tmp_path: Path) -> None:
    # this model fails at run time on an odd number of slices: study b (5 slices) fails, a (6) passes
    odd = build_model(tmp_path / "odd.onnx", fail_on_odd_slices=True)
    out = tmp_path / "r.json"
    rc = main([str(studies), "--model", str(odd), "--out", str(out), "--quiet", "--provider", "cpu"])
    assert rc == 1
    doc = json.loads(out.read_text())
    by_n = {s["num_slices"]: s for s in doc["stacks"]}
    assert by_n[6]["status"] == "ok" and len(by_n[6]["slices"]) == 6
    assert by_n[5]["status"] == "error" and "ModelError" in by_n[5]["error"]


def test_unsupported_stack_is_skipped(tmp_path: Path) -> None:
    model = build_model(tmp_path / "m.onnx", metadata={"min_slices": 10})
    write_ct_series(tmp_path / "s", 4, rows=32, columns=32)
    out = tmp_path / "r.json"
    rc = main([str(tmp_path / "s"), "--model", str(model), "--out", str(out), "--quiet", "--provider", "cpu"])
    assert rc == 1  # nothing could be analysed
    stack = json.loads(out.read_text())["stacks"][0]
    assert stack["status"] == "skipped" and "at least 10 slices" in stack["error"]


def test_usage_and_model_errors_exit_2(
    studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 2
    assert main([str(studies), "--out", str(tmp_path / "r.txt")]) == 2
    assert main([str(studies), "--out", str(tmp_path / "r.json"), "--provider", "tpu"]) == 2
    assert main([str(studies), "--out", str(tmp_path / "r.json"), "--threads", "0"]) == 2
    bad = build_model(tmp_path / "bad.onnx", metadata={"schema_version": 7})
    assert main([str(studies), "--model", str(bad), "--out", str(tmp_path / "r.json")]) == 2
    assert "schema_version" in capsys.readouterr().err
    missing = tmp_path / "missing.onnx"
    assert main([str(studies), "--model", str(missing), "--out", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_headless_run_imports_no_qt(model: Path, studies: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "r.json"
    code = (
        "import sys\n"
        "from viewer.cli import main\n"
        f"argv = ['predict', {str(studies)!r}, '--model', {str(model)!r}, '--out', {str(out)!r}, '--quiet']\n"
        "rc = main(argv)\n"
        "assert rc == 0, rc\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'torch', 'training')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.read_text())["stacks"]


def test_out_of_scope_and_cautioned_stacks_in_json_and_csv(model: Path, tmp_path: Path) -> None:
    """Per stack: the applicability decision with codes and reasons, the study decision and the
    stack's warnings; a refused stack carries no probability (issue 10 item 11)."""
    from tests import scope_cases as sc

    root = tmp_path / "in"
    sc.write_body(root / "chest", "chest")
    hu, ps = sc.synthetic_head(31)
    n, rows, cols = hu.shape
    keep = [i for i in range(n) if i != 5]  # one missing slice -> a load warning and a caution
    positions = sc.axial_positions(n, rows, cols, ps)
    sc.write_volume(root / "head", hu[keep], spacing=(ps, ps), positions=[positions[i] for i in keep])
    out = tmp_path / "r.json"
    assert main([str(root), "--model", str(model), "--out", str(out), "--quiet", "--provider", "cpu"]) == 0
    stacks = {s["num_slices"]: s for s in json.loads(out.read_text())["stacks"]}
    chest, head = stacks[12], stacks[n - 1]
    assert chest["status"] == "skipped" and chest["applicability"]["decision"] == "out_of_scope"
    assert "S-NOT-HEAD" in chest["applicability"]["codes"]
    assert not {"study_probs", "slices", "findings", "badge", "study_decision"} & set(chest)
    assert head["status"] == "ok" and head["applicability"]["decision"] == "caution"
    assert {"S-SPACING", "S-NO-TRAINED-RANGE"} <= set(head["applicability"]["codes"])
    assert any("missing slice" in w for w in head["warnings"])
    assert head["study_decision"]["label"] in ("ICH suspected", "No ICH flagged")
    assert head["study_decision"]["positive"] == head["badge"].startswith("ICH suspected")
    out_csv = tmp_path / "r.csv"
    rc = main([str(root), "--model", str(model), "--out", str(out_csv), "--quiet", "--provider", "cpu"])
    assert rc == 0
    rows = list(csv.DictReader(out_csv.read_text().splitlines()))
    refused = [r for r in rows if r["applicability"] == "out_of_scope"]
    assert len(refused) == 1 and "S-NOT-HEAD" in refused[0]["applicability_codes"]
    assert refused[0]["prob_any"] == "" and refused[0]["study_prob"] == ""
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == n - 1 and all("missing slice" in r["warnings"] for r in ok)
    assert all("S-SPACING" in r["applicability_codes"] and r["study_decision"] for r in ok)


def test_skipped_files_reported_by_code(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from pydicom.data import get_testdata_file

    write_ct_series(tmp_path / "in" / "ct", 4, rows=32, columns=32)
    for name in ("waveform_ecg.dcm", "rtplan.dcm", "rtstruct.dcm"):
        shutil.copy(str(get_testdata_file(name)), tmp_path / "in" / name)
    shutil.copy(str(get_testdata_file("DICOMDIR-bigEnd")), tmp_path / "in" / "INDEX")
    out = tmp_path / "r.json"
    args = ["--model", str(model), "--out", str(out), "--quiet", "--provider", "cpu"]
    main([str(tmp_path / "in"), *args])  # the exit code is about the stacks (this one is out of scope)
    err = capsys.readouterr().err
    by_code = "3 E-NO-PIXELS (no image data), 1 E-DICOMDIR (DICOMDIR index)"
    assert f"4 file(s) skipped while scanning: {by_code}\n" in err
    assert "not DICOM or unreadable" not in err
    doc = json.loads(out.read_text())
    assert doc["files_skipped"] == 4
    assert doc["files_skipped_by_code"] == {"E-NO-PIXELS": 3, "E-DICOMDIR": 1}


def test_undecodable_slices_exit_1_and_name_the_stack(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stack analysed with filler for undecodable slices is not a clean run (it exited 0 before)."""
    import struct

    from tests import scope_cases as sc
    from tests.factories import compress_files
    from viewer.core.dicom.loader import load_paths

    sc.write_head(tmp_path / "s")  # a head CT the model's scope accepts
    paths = sorted((tmp_path / "s").rglob("*.dcm"))
    compress_files(paths)
    (stack,) = load_paths([tmp_path / "s"]).all_stacks()
    bad = next(i for i, info in enumerate(stack.slices) if info.source.path == paths[2])
    data = bytearray(paths[2].read_bytes())
    first_fragment = data.find(b"\xfe\xff\x00\xe0", data.rfind(b"\xe0\x7f\x10\x00") + 20)
    struct.pack_into("<I", data, first_fragment + 8, 15)  # the RLE header claims 15 segments
    paths[2].write_bytes(bytes(data))
    out = tmp_path / "r.json"
    rc = main([str(tmp_path / "s"), "--model", str(model), "--out", str(out), "--quiet", "--provider", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1
    (rec,) = json.loads(out.read_text())["stacks"]
    assert rec["status"] == "ok" and rec["bad_slices"] == [bad]
    assert f"{rec['stack_uid']}: 1 of {len(stack)} slices (E-CODESTREAM-SIZE)" in err
    assert "Traceback" not in err
    _no_phi(err)


def test_pydicom_header_chatter_is_not_printed(model: Path, tmp_path: Path) -> None:
    """A file pydicom warns about ("Expected explicit VR, but found implicit VR") printed that message twice
    between the progress bars, once with a line of pydicom's source, naming no file."""
    folder = tmp_path / "in"
    write_ct_series(folder / "ct", 3)
    shutil.copy(str(get_testdata_file("SC_rgb_jpeg.dcm")), folder / "sc.dcm")
    run = subprocess.run(
        [sys.executable, "-m", "viewer", "predict", str(folder), "--model", str(model), "--provider", "cpu",
         "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert run.returncode in (0, 1), run.stderr  # 1: a stack not analysed (the 3-slice CT is short)
    assert "Expected explicit VR" not in run.stderr and "warn_and_log" not in run.stderr, run.stderr
    assert "stack(s) analysed" in run.stderr
