"""``slicewise-train``: synth, train, thresholds, evaluate, export, card.

Bad input -> one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from viewer.core.errors import SlicewiseError


def _parser() -> argparse.ArgumentParser:
    from training.consistency import ConsistencyMode
    from training.metrics import POLICY_CHOICES
    from training.train import TrainConfig

    p = argparse.ArgumentParser(prog="slicewise-train", description="Slicewise CNN-GRU training toolkit")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("synth", help="write synthetic head-CT studies + RSNA-format labels.csv")
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--studies", type=int, default=20)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=256, help="rows = columns (default 256)")
    s.add_argument("--min-slices", type=int, default=24)
    s.add_argument("--max-slices", type=int, default=40)
    s.add_argument("--rle", action="store_true", help="RLE Lossless compressed pixel data")
    s.add_argument(
        "--masks",
        action="store_true",
        help="also write per-subtype lesion masks (blood fraction x 255, uint8) to OUT/masks/study_XXXX.npz",
    )
    s.add_argument(
        "--wide",
        action="store_true",
        help="the training distribution (training.synth.WIDE): 256/512 matrices, 180-400 mm fields, 1-5 mm "
        "slices, rotation, off-centre heads, noise 2-25 HU (correlated), kernels, streaks, motion; "
        "--size is then ignored",
    )
    s.add_argument("--shift", default="none", help="one named acquisition shift (training.synth.SHIFTS)")
    s.add_argument(
        "--noise-hu",
        type=_float_range,
        default=None,
        metavar="LO,HI",
        help="noise standard deviation range in HU, uniform per study (before the kernel; e.g. 0,25)",
    )
    s.add_argument(
        "--noise-corr-mm",
        type=_float_range,
        default=None,
        metavar="LO,HI",
        help="Gaussian correlation length range of the noise in mm (e.g. 0,1.2); 0: white noise",
    )

    t = sub.add_parser("train", help="train the CNN (stage 1) and the CNN-GRU (stage 2)")
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name in ("data", "labels", "out"):
            t.add_argument(flag, required=True)
        elif f.name == "threshold_policy":
            t.add_argument(flag, choices=POLICY_CHOICES, default=default, help=_POLICY_HELP)
        elif f.name == "noise_consistency_mode":
            t.add_argument(flag, choices=[m.value for m in ConsistencyMode], default=default)
        elif isinstance(default, bool):
            t.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            t.add_argument(flag, type=type(default), default=default)

    h = sub.add_parser(
        "thresholds",
        help="re-choose a checkpoint's thresholds on its validation split (no retraining), then re-export",
    )
    h.add_argument("checkpoint", type=Path)
    h.add_argument("--policy", choices=POLICY_CHOICES, default="triage", help=_POLICY_HELP)
    h.add_argument("--sensitivity", type=float, default=None, help="default: the checkpoint's (0.95)")
    h.add_argument("--out", type=Path, default=None, help="write a copy here (default: update in place)")
    h.add_argument("--data", default=None, help="override the data folder recorded in the checkpoint")
    h.add_argument("--labels", default=None, help="override the labels.csv recorded in the checkpoint")
    h.add_argument("--cache", default=None, help="override the preprocessing cache in the checkpoint")
    h.add_argument("--threads", type=int, default=2)

    st = sub.add_parser(
        "study-thresholds",
        help="choose an exported model's STUDY thresholds on validation studies (study level); --write "
        "rewrites only its metadata",
    )
    st.add_argument("model", type=Path)
    st.add_argument("--data", required=True, type=Path, help="validation studies never used in training")
    st.add_argument("--labels", required=True, type=Path)
    st.add_argument("--sensitivity", type=float, default=0.95, help="study-level sensitivity of `any`")
    st.add_argument("--write", action="store_true", help="store them in the model's metadata (weights kept)")
    st.add_argument("--chosen-on", default="", help="where the studies come from (recorded in the metadata)")
    st.add_argument(
        "--slice-policy",
        choices=POLICY_CHOICES,
        default=None,
        help="also choose the SLICE thresholds on these studies' labelled slices under this policy (slice "
        "`any` at sensitivity >= 0.95); with --write they replace the metadata's thresholds",
    )
    st.add_argument("--threads", type=int, default=2)

    ca = sub.add_parser(
        "calibrate",
        help="refit a checkpoint's temperatures and thresholds on labelled studies it was never trained on",
    )
    ca.add_argument("checkpoint", type=Path)
    ca.add_argument("--data", required=True, type=Path, help="validation studies never used in training")
    ca.add_argument("--labels", required=True, type=Path)
    ca.add_argument("--out", required=True, type=Path, help="the recalibrated checkpoint (then export it)")
    ca.add_argument("--cache", type=Path, default=None, help="preprocessing cache (default: <out dir>/cache)")
    ca.add_argument("--fitted-on", default="", help="where the studies come from (recorded in the metadata)")
    ca.add_argument("--threads", type=int, default=1)

    tr = sub.add_parser(
        "trained-range",
        help="a model's trained_range (pixel spacing, thickness, field of view, matrix, slices) from its "
        "training studies or given as JSON; --write rewrites only its metadata",
    )
    tr.add_argument("model", type=Path)
    src = tr.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--data", type=Path, help="the model's training studies (labelled stacks, with --labels)"
    )
    src.add_argument("--range", dest="range_json", help='JSON {"field_of_view_mm": [lo, hi], ...}')
    tr.add_argument("--labels", type=Path)
    tr.add_argument("--write", action="store_true", help="store it in the model's metadata (weights kept)")

    e = sub.add_parser(
        "evaluate",
        help="evaluate .onnx models through onnxruntime, as the viewer runs them, on DICOM studies or "
        "on fresh synthetic studies under named acquisition shifts",
    )
    e.add_argument("model", type=Path)
    e.add_argument("--data", type=Path, help="folder of labelled DICOM studies (with --labels)")
    e.add_argument("--labels", type=Path)
    e.add_argument(
        "--shift",
        default=None,
        help="comma-separated shift names, or 'all' (" + ", ".join(_shift_names()) + "): renders "
        "--studies fresh studies per shift (seeds from --seed, paired across shifts) instead of --data",
    )
    e.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="more models side by side, e.g. cnn_only=runs/x/cnn_only.onnx (repeatable)",
    )
    e.add_argument("--studies", type=int, default=40)
    e.add_argument("--seed", type=int, default=424242, help="study seeds (never a training seed)")
    e.add_argument("--out", type=Path, default=None, help="also write the full JSON here")
    e.add_argument("--threads", type=int, default=2)

    c = sub.add_parser(
        "card", help="write a model card from a run, its exported model and a shift evaluation"
    )
    c.add_argument("run_dir", type=Path, help="the training run folder (metrics.json)")
    c.add_argument("--model", required=True, type=Path, help="the exported .onnx")
    c.add_argument("--shifts", type=Path, default=None, help="JSON written by `evaluate --shift ... --out`")
    c.add_argument("--maps", type=Path, default=None, help="JSON written by `maps-eval ... --out`")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--command", action="append", default=[], help="a reproduce line (repeatable)")
    c.add_argument("--note", action="append", default=[], help="a line for the Limits section (repeatable)")

    g = sub.add_parser(
        "segment",
        help="train the small segmentation-only model (task slice_segmentation) on fresh synthetic studies "
        "and their masks, export it to OUT/slicewise_seg.onnx with a parity check",
    )
    g.add_argument("--out", required=True, type=Path)
    for name, default in (
        ("studies", 120),
        ("seed", 1_100_011),
        ("val_studies", 16),
        ("input_size", 128),
        ("synth_size", 256),
        ("min_slices", 20),
        ("max_slices", 30),
        ("base", 8),
        ("batch", 32),
        ("crop", 64),
        ("lr", 5e-3),
        ("max_minutes", 10.0),
        ("max_epochs", 40),
        ("threads", 2),
    ):
        g.add_argument("--" + name.replace("_", "-"), dest=name, type=type(default), default=default)

    ge = sub.add_parser(
        "segment-eval",
        help="per-class Dice and volume error of a slice_segmentation model on fresh synthetic studies, run "
        "through the viewer's engine",
    )
    ge.add_argument("model", type=Path)
    ge.add_argument("--studies", type=int, default=24)
    ge.add_argument("--seed", type=int, default=1_100_013, help="study seeds (never a training seed)")
    ge.add_argument("--out", type=Path, default=None, help="also write the full JSON here")
    ge.add_argument("--threads", type=int, default=2)

    mp = sub.add_parser(
        "maps",
        help="train the localisation-map decoder on a frozen ICH checkpoint (fresh synthetic studies and "
        "their masks) and export the model with the optional slice_maps output to OUT/slicewise_ich.onnx",
    )
    mp.add_argument("checkpoint", type=Path, help="the base model's checkpoint (its CNN and GRU stay frozen)")
    mp.add_argument("--base-model", required=True, type=Path, help="the base model's ONNX (metadata kept)")
    mp.add_argument("--out", required=True, type=Path)
    mp.add_argument("--init", type=Path, default=None, help="continue from this run's maps.pt decoder")
    for name, default in (
        ("studies", 100),
        ("val_studies", 20),
        ("seed", 7_100_001),
        ("dim", 16),
        ("batch", 32),
        ("lr", 3e-3),
        ("max_minutes", 12.0),
        ("max_epochs", 60),
        ("threads", 2),
        ("workers", 2),
        ("map_stride", 2),
        ("fine_dim", 8),
        ("tversky_alpha", 0.5),
        ("tversky_beta", 0.5),
        ("synth_size", 0),
        ("max_slices", 0),
        ("model_version", "0.2.0"),
    ):
        mp.add_argument("--" + name.replace("_", "-"), dest=name, type=type(default), default=default)
    mp.add_argument(
        "--acquisitions",
        default="standard,noisy",
        help="comma-separated training.maps.TRAIN_ACQUISITIONS (standard, noisy, wide), --studies of each",
    )
    mp.add_argument(
        "--pos-weight",
        default="",
        help="comma-separated BCE weights of positive targets per subtype (epidural, intraparenchymal, "
        "intraventricular, subarachnoid, subdural); empty: 1 each",
    )

    ma = sub.add_parser(
        "maps-attach",
        help="put a trained map decoder on another model with the same CNN (e.g. a retrained GRU) without "
        "training: OUT gets the base model's metadata and outputs plus MAPS_MODEL's maps and their metadata",
    )
    ma.add_argument("maps_model", type=Path, help="the ONNX the decoder was exported in ('maps' metadata)")
    ma.add_argument("--decoder", required=True, type=Path, help="that run's maps.pt (the decoder's weights)")
    ma.add_argument("--checkpoint", required=True, type=Path, help="the new base model's checkpoint")
    ma.add_argument("--base-model", required=True, type=Path, help="the new base model's ONNX")
    ma.add_argument("--out", required=True, type=Path)
    ma.add_argument("--model-version", required=True)

    me = sub.add_parser(
        "maps-eval",
        help="localisation maps and volumes of a model with slice_maps on fresh synthetic studies, written "
        "as DICOM and run through the viewer's engine: Dice, map peak inside the lesion, volume error",
    )
    me.add_argument("model", type=Path)
    me.add_argument("--studies", type=int, default=20, help="per acquisition (standard and noisy)")
    me.add_argument("--seed", type=int, default=7_100_003, help="study seeds (never a training seed)")
    me.add_argument("--out", type=Path, default=None, help="also write the full JSON here")
    me.add_argument("--threads", type=int, default=2)

    mt = sub.add_parser(
        "maps-thresholds",
        help="choose a maps model's map thresholds on fresh validation studies (pixel grid, through the "
        "viewer's engine); --write rewrites only the metadata",
    )
    mt.add_argument("model", type=Path)
    mt.add_argument("--studies", type=int, default=10, help="per acquisition (standard and noisy)")
    mt.add_argument("--seed", type=int, default=7_100_002, help="validation study seeds (never a test seed)")
    mt.add_argument("--write", action="store_true", help="write the thresholds into the model's metadata")
    mt.add_argument("--threads", type=int, default=2)

    mv = sub.add_parser(
        "maps-volume",
        help="fit a maps model's bleed volume estimator (summed probability x per-class scale) on fresh "
        "validation studies through the viewer's engine; --write rewrites only the metadata (maps.volume)",
    )
    mv.add_argument("model", type=Path)
    mv.add_argument("--studies", type=int, default=20, help="per acquisition (standard and noisy) and seed")
    mv.add_argument(
        "--seeds", default="7100005", help="comma-separated validation study seeds (never a test seed)"
    )
    mv.add_argument("--floor", type=float, default=0.05, help="probabilities below it count 0")
    mv.add_argument("--write", action="store_true", help="write the estimator into the model's metadata")
    mv.add_argument("--threads", type=int, default=2)

    x = sub.add_parser("export", help="export a checkpoint to one .onnx file and check parity")
    x.add_argument("checkpoint", type=Path)
    x.add_argument("--out", required=True, type=Path)
    x.add_argument("--no-parity", action="store_true")
    x.add_argument("--train-data", default=None, help="training-data description for the metadata")
    x.add_argument("--intended-use", default=None)
    x.add_argument(
        "--model-version",
        default=None,
        help="the metadata's model_version (default: 0.1.2 for preprocessing v1, the current one for v2)",
    )
    return p


_POLICY_HELP = (
    "operating points chosen on the validation slices: triage-f1 (default; alias triage) = `any` at "
    "sensitivity >= --sensitivity, each subtype at the F1 maximum (model 0.1.2); triage-youden = `any` "
    "likewise, each subtype at the Youden-J maximum (model 0.1.1; recorded as `triage` in older "
    "checkpoints); sensitivity = every class at sensitivity >= --sensitivity (model 0.1.0); youden = every "
    "class at the Youden-J maximum"
)


def _float_range(text: str) -> tuple[float, float]:
    """'LO,HI' -> (lo, hi) with 0 <= lo <= hi (argparse type)."""
    parts = text.split(",")
    try:
        lo, hi = (float(v) for v in parts) if len(parts) == 2 else (float("nan"),) * 2
    except ValueError:
        lo = hi = float("nan")
    if not 0.0 <= lo <= hi < float("inf"):
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO <= HI, got {text!r}")
    return lo, hi


def _shift_names() -> list[str]:
    from training.synth import SHIFTS

    return list(SHIFTS)


def _num(v: object) -> str:
    return f"{v:.4f}  " if isinstance(v, float) else "n/a     "


def _shift_table(result: dict[str, object]) -> str:
    shifts = result["shifts"]
    assert isinstance(shifts, dict)
    lines = ["shift        model       AUC(any) wLL      ECE(any) studyAUC minSubAUC studySens normUnfl"]
    keys = (
        "auc_any",
        "weighted_log_loss",
        "ece_any",
        "study_auc_any",
        "min_subtype_auc",
        "study_sensitivity",
        "normal_unflagged",
    )
    for shift, per_model in shifts.items():
        for name, entry in per_model.items():
            s = entry["summary"]
            cells = [s.get(k) for k in keys]
            lines.append(f"{shift:<12} {name:<11} " + "  ".join(_num(v) for v in cells))
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> dict[str, object]:
    from training.evaluate import evaluate_onnx, evaluate_shifts

    models = {"model": args.model}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--compare takes NAME=PATH, got {item!r}")
        models[name] = Path(path)
    for path in models.values():
        if not path.is_file():
            raise FileNotFoundError(f"model not found: {path}")
    if args.shift is None:
        if args.data is None or args.labels is None:
            raise ValueError("give --data and --labels, or --shift NAME[,NAME]")
        return {
            name: evaluate_onnx(path, args.data, args.labels, threads=args.threads)
            for name, path in models.items()
        }
    names = _shift_names() if args.shift == "all" else [s.strip() for s in args.shift.split(",") if s.strip()]
    unknown = [n for n in names if n not in _shift_names()]
    if unknown or not names:
        raise ValueError(f"unknown shift(s) {unknown}; known: {', '.join(_shift_names())}")
    if args.studies < 2:
        raise ValueError("--studies must be at least 2")
    return evaluate_shifts(models, names, studies=args.studies, seed=args.seed, threads=args.threads)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose or args.cmd in ("train", "maps") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.cmd == "synth":
            from training.synth import SynthConfig, generate_dataset

            if args.studies < 1 or not 1 <= args.min_slices <= args.max_slices:
                raise ValueError("need --studies >= 1 and 1 <= --min-slices <= --max-slices")
            from training.synth import WIDE, shifted_config

            base = WIDE if args.wide else shifted_config(args.shift, SynthConfig(size=args.size))
            cfg = dataclasses.replace(base, min_slices=args.min_slices, max_slices=args.max_slices)
            if args.noise_hu is not None:
                cfg = dataclasses.replace(cfg, noise_hu=args.noise_hu)
            if args.noise_corr_mm is not None:
                cfg = dataclasses.replace(cfg, noise_corr_mm=args.noise_corr_mm)
            labels = generate_dataset(
                args.out, args.studies, seed=args.seed, cfg=cfg, rle=args.rle, progress=True, masks=args.masks
            )
            print(f"wrote {args.studies} studies and {labels}")
        elif args.cmd == "train":
            from training.train import TrainConfig, train

            cfg_t = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
            ckpt = train(cfg_t)
            print(f"checkpoint: {ckpt}")
        elif args.cmd == "thresholds":
            from training.thresholds import recompute_thresholds

            if args.sensitivity is not None and not 0.0 < args.sensitivity <= 1.0:
                raise ValueError("--sensitivity must be in (0, 1]")
            entry = recompute_thresholds(
                args.checkpoint,
                policy=args.policy,
                sensitivity=args.sensitivity,
                out=args.out,
                data=args.data,
                labels=args.labels,
                cache=args.cache,
                threads=args.threads,
            )
            from training.export import json_safe

            summary = {
                "threshold_policy": entry["threshold_policy"],
                "thresholds": entry["thresholds"],
                "val_at_thresholds": entry["val"].get("at_thresholds"),
                "test_at_thresholds": entry["test"].get("at_thresholds"),
            }
            print(json.dumps(json_safe(summary), indent=2, allow_nan=False))
            written = args.out or args.checkpoint
            print(f"wrote {written}; re-export it with `slicewise-train export`", file=sys.stderr)
        elif args.cmd == "study-thresholds":
            from training.export import json_safe
            from training.study_thresholds import choose_for_model

            if not args.model.is_file():
                raise FileNotFoundError(f"model not found: {args.model}")
            if not 0.0 < args.sensitivity <= 1.0:
                raise ValueError("--sensitivity must be in (0, 1]")
            report = choose_for_model(
                args.model,
                args.data,
                args.labels,
                sensitivity=args.sensitivity,
                write=args.write,
                chosen_on=args.chosen_on,
                threads=args.threads,
                slice_policy=args.slice_policy,
            )
            print(json.dumps(json_safe(report), indent=2, allow_nan=False))
        elif args.cmd == "calibrate":
            from training.export import json_safe
            from training.recalibrate import recalibrate_checkpoint

            result = recalibrate_checkpoint(
                args.checkpoint,
                args.data,
                args.labels,
                out=args.out,
                cache=args.cache or args.out.parent / "cache",
                fitted_on=args.fitted_on,
                threads=args.threads,
            )
            print(json.dumps(json_safe(result), indent=2, allow_nan=False))
            print(f"wrote {args.out}; export it with `slicewise-train export`", file=sys.stderr)
        elif args.cmd == "trained-range":
            from training.trained_range import folder_range, write_trained_range

            if not args.model.is_file():
                raise FileNotFoundError(f"model not found: {args.model}")
            if args.data is not None:
                if args.labels is None:
                    raise ValueError("--data needs --labels (the training label file)")
                value = folder_range(args.data, args.labels)
            else:
                value = json.loads(args.range_json)
                if not isinstance(value, dict):
                    raise ValueError('--range must be a JSON object {"key": [lo, hi], ...}')
            if args.write:
                write_trained_range(args.model, value)
            print(json.dumps({"trained_range": value, "written": bool(args.write)}, indent=2))
        elif args.cmd == "evaluate":
            from training.export import json_safe

            result = _evaluate(args)
            if args.out is not None:
                args.out.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False))
            if args.shift is not None:  # a compact table on stdout; the full metrics in --out
                print(_shift_table(result))
            else:
                print(
                    json.dumps(
                        json_safe(result if len(result) > 1 else result["model"]), indent=2, allow_nan=False
                    )
                )
        elif args.cmd == "card":
            from training.card import write_card

            for path in (args.run_dir / "metrics.json", args.model, args.shifts, args.maps):
                if path is not None and not path.is_file():
                    raise FileNotFoundError(f"not found: {path}")
            write_card(
                args.run_dir,
                args.model,
                args.out,
                shifts_path=args.shifts,
                maps_path=args.maps,
                commands=args.command,
                notes=args.note,
            )
            print(f"wrote {args.out}")
        elif args.cmd == "segment":
            from training.seg import SegConfig, train_segmentation

            if args.studies < 2 or args.val_studies < 1 or args.input_size % 16 or args.crop % 16:
                raise ValueError(
                    "need --studies >= 2, --val-studies >= 1, --input-size and --crop divisible by 16"
                )
            fields = {f.name for f in dataclasses.fields(SegConfig)}
            seg_cfg = SegConfig(**{k: v for k, v in vars(args).items() if k in fields})
            path, seg_metrics = train_segmentation(seg_cfg)
            print(json.dumps(seg_metrics, indent=2, default=str))
            print(f"wrote {path}")
        elif args.cmd == "segment-eval":
            from training.seg import evaluate_segmentation

            if not args.model.is_file():
                raise FileNotFoundError(f"model not found: {args.model}")
            result = evaluate_segmentation(
                args.model, studies=args.studies, seed=args.seed, threads=args.threads
            )
            if args.out is not None:
                args.out.write_text(json.dumps(result, indent=2))
            print(json.dumps({k: v for k, v in result.items() if k != "volumes"}, indent=2))
        elif args.cmd == "maps":
            from training.maps import MapsConfig, train_maps

            if args.studies < 2 or args.val_studies < 1:
                raise ValueError("need --studies >= 2 and --val-studies >= 1")
            fields = {f.name for f in dataclasses.fields(MapsConfig)}
            values = {k: v for k, v in vars(args).items() if k in fields}
            values["acquisitions"] = tuple(a.strip() for a in str(args.acquisitions).split(",") if a.strip())
            values["pos_weight"] = tuple(float(v) for v in str(args.pos_weight).split(",") if v.strip())
            maps_cfg = MapsConfig(**values)
            path, maps_metrics = train_maps(maps_cfg)
            print(json.dumps(maps_metrics, indent=2, default=str))
            print(f"wrote {path}")
        elif args.cmd == "maps-attach":
            from training.maps import attach_decoder

            for path in (args.maps_model, args.decoder, args.checkpoint, args.base_model):
                if not path.is_file():
                    raise FileNotFoundError(f"not found: {path.name}")
            report = attach_decoder(
                args.decoder,
                args.maps_model,
                args.checkpoint,
                args.base_model,
                args.out,
                model_version=args.model_version,
            )
            print(json.dumps(report, indent=2))
            print(f"wrote {args.out}")
        elif args.cmd == "maps-eval":
            from training.maps_eval import evaluate_maps

            if not args.model.is_file():
                raise FileNotFoundError(f"model not found: {args.model}")
            result = evaluate_maps(args.model, studies=args.studies, seed=args.seed, threads=args.threads)
            if args.out is not None:
                args.out.write_text(json.dumps(result, indent=2))
            print(json.dumps({k: v for k, v in result.items() if k != "volumes"}, indent=2))
        elif args.cmd == "maps-thresholds":
            from training.export import read_metadata, rewrite_metadata
            from training.maps_eval import choose_map_thresholds

            if not args.model.is_file():
                raise FileNotFoundError(f"model not found: {args.model}")
            chosen = choose_map_thresholds(
                args.model, studies=args.studies, seed=args.seed, threads=args.threads
            )
            if args.write:
                maps_meta = dict(read_metadata(args.model)["maps"])
                maps_meta.update(thresholds=chosen["thresholds"], thresholds_chosen_on=chosen["chosen_on"])
                rewrite_metadata(args.model, {"maps": maps_meta})
            print(json.dumps(chosen, indent=2))
        elif args.cmd == "maps-volume":
            from training.export import read_metadata, rewrite_metadata
            from training.maps_eval import choose_volume_estimator

            if not args.model.is_file():
                raise FileNotFoundError(f"model not found: {args.model}")
            seeds = [int(v) for v in str(args.seeds).split(",") if v.strip()]
            fitted = choose_volume_estimator(
                args.model, studies=args.studies, seeds=seeds, floor=args.floor, threads=args.threads
            )
            if args.write:
                maps_meta = dict(read_metadata(args.model)["maps"])
                maps_meta["volume"] = fitted["volume"]
                rewrite_metadata(args.model, {"maps": maps_meta})
            print(json.dumps(fitted, indent=2))
        elif args.cmd == "export":
            from training.export import DEFAULT_INTENDED_USE, DEFAULT_TRAIN_DATA, export_checkpoint

            diff = export_checkpoint(
                args.checkpoint,
                args.out,
                parity=not args.no_parity,
                train_data=args.train_data or DEFAULT_TRAIN_DATA,
                intended_use=args.intended_use or DEFAULT_INTENDED_USE,
                model_version=args.model_version,
            )
            print(f"wrote {args.out}" + ("" if args.no_parity else f" (parity max abs diff {diff:.2e})"))
    except (SlicewiseError, FileNotFoundError, ValueError) as exc:
        print(f"slicewise-train {args.cmd}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
