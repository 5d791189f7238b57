from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from training.cli import main


def test_synth_then_bad_inputs_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "d"
    assert (
        main(
            [
                "synth",
                "--out",
                str(data),
                "--studies",
                "1",
                "--size",
                "32",
                "--min-slices",
                "3",
                "--max-slices",
                "3",
                "--rle",
            ]
        )
        == 0
    )
    assert (data / "labels.csv").is_file()
    capsys.readouterr()

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("image,target\nx,1\n")
    cases = [
        (
            [
                "train",
                "--data",
                str(tmp_path / "missing"),
                "--labels",
                str(data / "labels.csv"),
                "--out",
                str(tmp_path / "r"),
            ],
            "data folder not found",
        ),
        (["train", "--data", str(data), "--labels", str(bad_csv), "--out", str(tmp_path / "r")], "ID,Label"),
        (
            ["evaluate", str(tmp_path / "none.onnx"), "--data", str(data), "--labels", str(bad_csv)],
            "model not found",
        ),
        (["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx")], "checkpoint not found"),
    ]
    for argv, expected in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
