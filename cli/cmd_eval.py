"""`sim2sg eval`: score a checkpoint or a predictions file against a dataset's ground truth."""

from __future__ import annotations

import enum
from pathlib import Path

import typer
from sim2sg.checks import need_file, parse_json
from sim2sg.cli.common import fail, info, user_errors
from sim2sg.errors import InputError

EVAL_FILE = "eval_metrics.json"  # beside the input: a run's own metrics.json is never overwritten


class Difficulty(str, enum.Enum):
    easy = "easy"
    moderate = "moderate"
    hard = "hard"


def eval_cmd(
    data: Path = typer.Option(
        ..., "--data", help="sim2sg dataset dir (labels.json), a COCO instances or Visual-Genome-style "
        "scene-graph JSON file (docs/formats.md), or KITTI dir (label_2/)."
    ),
    train_data: Path | None = typer.Option(
        None, "--train-data", help="The training set (same kinds as --data): adds zero-shot recall zR@K "
        "over the GT triplets (subject class, predicate, object class) it never contains."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="Model checkpoint to run on DATA."),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="Predictions JSON (docs/formats.md) to score instead of a checkpoint."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where to write the metrics (default: eval_metrics.json beside the checkpoint or predictions "
        "file; a run's own metrics.json is never overwritten)."
    ),
    kitti_difficulty: Difficulty | None = typer.Option(
        None, "--kitti-difficulty", help="KITTI ground truth only: evaluate easy, moderate or hard objects."
    ),
    device: str = typer.Option(
        "auto", "--device", help="Device for --checkpoint: auto, cpu, cuda, cuda:1, ..."
    ),
) -> None:
    """Detection mAP@0.5 and triplet Recall@20/50/100 (with and without graph constraint, mean
    recall mR@K, zero-shot recall zR@K with --train-data), each beside its ceiling; prints a table
    and writes metrics.json."""
    if (checkpoint is None) == (predictions is None):
        fail("give exactly one of --checkpoint and --predictions")
    from sim2sg.eval import (
        evaluate,
        format_table,
        load_ground_truth,
        load_predictions,
        parse_predictions,
        training_triplets,
        write_metrics,
    )

    if out is not None:
        _check_out(out, [data, train_data, checkpoint, predictions])
    with user_errors():
        gt = load_ground_truth(data)
        seen = training_triplets(load_ground_truth(train_data)) if train_data is not None else None
        if kitti_difficulty is not None and gt.kind != "kitti":
            fail(f"--kitti-difficulty needs KITTI ground truth (label_2/); {data} is a sim2sg dataset")
        if predictions is not None:
            preds = load_predictions(predictions)
            target = out or predictions.parent / EVAL_FILE
        else:
            need_file(checkpoint, "checkpoint", "checkpoint.pt")
            try:
                from sim2sg.train.predict import (
                    predict_dataset,  # torch: import only on this path
                )
            except ImportError as e:
                fail(f"prediction from a checkpoint is not available: {e}")
            info(f"predicting {data} with {checkpoint} ...")
            preds = parse_predictions(predict_dataset(checkpoint, data, device=device),
                                      f"predictions of {checkpoint}")
            target = out or checkpoint.parent / EVAL_FILE
        metrics = evaluate(gt, preds, kitti_difficulty=kitti_difficulty.value if kitti_difficulty else None,
                           train_triplets=seen)
        metrics["data"] = str(data)
        metrics["source"] = str(predictions if predictions is not None else checkpoint)
        typer.echo(format_table(metrics))
        write_metrics(target, metrics)
        info(f"wrote {target}")


def _check_out(out: Path, inputs: list[Path | None]) -> None:
    """Refuse an --out that would overwrite what is not an earlier eval result: a folder, one of
    the inputs (or a file inside an input folder, such as a dataset's labels.json) or any other
    existing file (a run's checkpoint.pt, config.json, history.json, metrics.json ...)."""
    if out.is_dir():
        fail(f"--out {out}: is a folder; name the metrics file, e.g. {out / EVAL_FILE}")
    resolved = out.resolve()
    for p in (q for q in inputs if q is not None):
        if resolved == p.resolve() or p.is_dir() and p.resolve() in resolved.parents and out.exists():
            fail(f"--out {out}: is an input of this evaluation ({p}); name another file, e.g. {out.parent / EVAL_FILE}")
    if out.exists() and not _is_eval_result(out):
        fail(f"--out {out}: exists and is not an earlier `sim2sg eval` result, so it would be lost; "
             f"name another file, e.g. {out.parent / EVAL_FILE}")


def _is_eval_result(path: Path) -> bool:
    try:
        data = parse_json(path.read_bytes(), path)  # the shared parser: depth and number limits
    except (OSError, InputError):
        return False
    return isinstance(data, dict) and {"data", "source", "detection"} <= set(data)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
