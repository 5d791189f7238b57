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


def test_synth_noise_range_sets_the_noise_the_applicability_check_measures(tmp_path: Path) -> None:
    from viewer.core.applicability import assess_applicability
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    data = tmp_path / "noisy"
    argv = ["synth", "--out", str(data), "--studies", "1", "--size", "128", "--min-slices", "12"]
    argv += ["--max-slices", "12", "--noise-hu", "20,20", "--noise-corr-mm", "0.8,0.8"]
    assert main(argv) == 0
    (stack,) = load_paths([data]).all_stacks()
    with StackVolume(stack) as volume:
        hu = volume.load_all()
    result = assess_applicability(stack, hu, modality="CT", min_slices=3, trained_range=None)
    assert 16.0 <= result.measures["noise_hu"] <= 24.0  # the estimate's tolerance: 1 HU + 15 %
    for bad in ("25", "5,2", "-1,3", "a,b"):
        with pytest.raises(SystemExit) as exc:
            main(["synth", "--out", str(tmp_path / "x"), "--noise-hu", bad])
        assert exc.value.code == 2


def test_train_widths_option() -> None:
    from training.train import TrainConfig, model_widths

    assert model_widths(TrainConfig(widths="24,32,48,64,96")) == (24, 32, 48, 64, 96)  # the bundled 128 px
    assert model_widths(TrainConfig()) == model_widths(TrainConfig(widths=" "))  # the model's default
    for bad in ("24", "24,x", "24,0"):
        with pytest.raises(ValueError, match="widths"):
            model_widths(TrainConfig(widths=bad))
