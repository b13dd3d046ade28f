"""Text runs: train a sentence encoder, evaluate it beside the zero-shot model, encode files.

A run directory holds ``config.json`` (the options), ``model/`` (a sentence-transformers model
directory: the last weights, or the best dev evaluation's with ``best_metric``), ``history.json``
(loss and learning rate per step, seconds per epoch, one row of dev scores per evaluation, the
zero-shot model's at step 0), ``metrics.json`` (zero-shot and fine-tuned scores on the test data)
and the report: ``learning_curve.png`` (training loss per step above the dev Spearman per
evaluation; the loss alone without dev data) and ``cosine_histograms.png`` (cosine distance of
similar and dissimilar test pairs before and after training).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..rundir import RunDir, atomic_write, locked
from .data import ScoredPairs, TextPairs, load_stsb, read_text_file
from .encoder import SentenceEncoder
from .evaluation import cosine_pairs, evaluate_retrieval, sts_scores
from .fit import FitConfig, fit

KIND = "text"
BUILTIN_DATA = ("stsb",)
SIMILAR_FRACTION = 0.8  # of the score range: pairs at least this similar count as matches


def load_data(
    name_or_path: str, score_range: tuple[float, float] | None = None
) -> tuple[TextPairs | ScoredPairs, ScoredPairs | None, TextPairs | ScoredPairs | None]:
    """(train, dev, test) of a built-in data set (``stsb``) or (data, None, None) of a file."""
    if name_or_path.lower() == "stsb":
        return load_stsb("train"), load_stsb("dev"), load_stsb("test")
    return read_text_file(name_or_path, score_range), None, None


def similar_threshold(pairs: ScoredPairs) -> float:
    low, high = pairs.score_range
    return low + SIMILAR_FRACTION * (high - low)


def evaluate_encoder(
    encoder: SentenceEncoder, data: TextPairs | ScoredPairs, batch_size: int = 64
) -> tuple[dict[str, float], np.ndarray | None]:
    """Scores of ``encoder`` on test data and the pairs' cosines (scored pairs only).

    Scored pairs: STS Spearman/Pearson, and retrieval of the second sentences of the similar
    pairs (score ≥ 80 % of the range, e.g. 4 of 5) from the first. Pairs: retrieval of the
    positives from the anchors.
    """
    if isinstance(data, TextPairs):
        return evaluate_retrieval(encoder, data.anchors, data.positives, batch_size), None
    emb1 = encoder.encode(data.sentences1, batch_size=batch_size)
    emb2 = encoder.encode(data.sentences2, batch_size=batch_size)
    metrics = sts_scores(emb1, emb2, data.scores)
    similar = data.positive_pairs(similar_threshold(data))
    if len(similar):
        metrics |= evaluate_retrieval(encoder, similar.anchors, similar.positives, batch_size)
    return metrics, cosine_pairs(emb1, emb2)


CURVE_METRICS = ("spearman", "mrr_at_10")  # the first the dev rows have is drawn


def _report(out: Path, history: dict, test: ScoredPairs, before, after) -> None:
    from ..plots import plot_distance_histograms, plot_eval_curve, plot_loss_curve

    steps = np.asarray(history["step_loss"])
    rows = history["eval"]
    names = [k for k in CURVE_METRICS if rows and k in rows[0]][:1]
    scores = {f"dev {k}": [r[k] for r in rows] for k in names}
    if scores:
        plot_eval_curve(steps, [r["step"] for r in rows], scores, out / "learning_curve.png",
                        title="text training: loss and dev score")  # fmt: skip
    else:
        chunks = np.array_split(steps, len(history["epoch_seconds"]))
        plot_loss_curve(steps, [c.mean() for c in chunks], out / "learning_curve.png",
                        title="text training loss")  # fmt: skip
    if before is None:
        return
    similar = test.scores >= similar_threshold(test)
    low, high = test.score_range
    dissimilar = test.scores <= low + (1 - SIMILAR_FRACTION) * (high - low)
    plot_distance_histograms(
        1 - before[similar],
        1 - before[dissimilar],
        1 - after[similar],
        1 - after[dissimilar],
        out / "cosine_histograms.png",
    )


def train_run(
    run: RunDir,
    model: str,
    data: str,
    config: FitConfig,
    eval_data: str | None = None,
    score_range: tuple[float, float] | None = None,
    max_seq_length: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] = print,
    dev_data: str | None = None,
) -> dict[str, dict[str, float]]:
    """Train ``model`` on ``data`` into the new run directory ``run`` (see
    :meth:`metrickit.rundir.RunDir.create`); return the zero-shot and fine-tuned test metrics.

    ``eval_data`` / ``dev_data``: files replacing the data set's test / dev split."""
    train, dev, test = load_data(data, score_range)
    if eval_data is not None:
        test = read_text_file(eval_data, score_range)
    if dev_data is not None:
        dev = read_text_file(dev_data, score_range)
    if config.min_score is None and isinstance(train, ScoredPairs):
        config.min_score = similar_threshold(train)  # only used by pair losses
    encoder = SentenceEncoder.from_pretrained(model, max_seq_length=max_seq_length)
    options = {"model": model, "data": data, "eval_data": eval_data, "dev_data": dev_data,
               "score_range": score_range}  # fmt: skip
    options |= {"max_seq_length": encoder.max_seq_length, "fit": config.to_dict()}
    run.write_json("config.json", options)
    metrics: dict[str, dict[str, float]] = {}
    before = after = None
    if test is not None:
        log(f"evaluating the zero-shot model on {test.name} ...")
        metrics["zero_shot"], before = evaluate_encoder(encoder, test)
    evaluate, zero_shot_dev = None, None
    if dev is not None:

        def evaluate(enc: SentenceEncoder) -> dict[str, float]:
            return evaluate_encoder(enc, dev)[0]

        log(f"evaluating the zero-shot model on {dev.name} (dev) ...")
        zero_shot_dev = {"step": 0, "epoch": 0, **evaluate(encoder)}
    history = fit(encoder, train, config, evaluate=evaluate, progress=progress)
    if zero_shot_dev is not None:
        history["eval"].insert(0, zero_shot_dev)
    encoder.save(run.file("model"))
    run.write_json("history.json", history)
    if test is not None:
        metrics["fine_tuned"], after = evaluate_encoder(encoder, test)
    run.write_json("metrics.json", metrics)
    _report(run.path, history, test, before, after)
    return metrics


def run_model_dir(run_or_model: str) -> str:
    """The model of a run directory (its ``model/``), or the argument itself."""
    path = Path(run_or_model)
    return str(path / "model") if (path / "model" / "modules.json").is_file() else run_or_model


def evaluate_run(run_dir: Path, eval_data: str | None = None) -> dict[str, dict[str, float]]:
    """Re-evaluate a run's fine-tuned model beside its base model on the run's test data (or
    ``eval_data``); writes ``evaluation.json``."""
    if not (run_dir / "model" / "modules.json").is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} holds no trained model (model/modules.json)")
    with locked(run_dir, KIND, required="metrics.json") as run:
        options = json.loads(run.file("config.json").read_text(encoding="utf-8"))
        metrics = _evaluate_options(run_dir, options, eval_data)
        run.write_json("evaluation.json", metrics)
    return metrics


def _evaluate_options(run_dir: Path, options: dict, eval_data: str | None) -> dict:
    score_range = options.get("score_range")
    if eval_data is not None:
        test = read_text_file(eval_data, score_range)
    elif options.get("eval_data"):
        test = read_text_file(options["eval_data"], score_range)
    else:
        test = load_data(options["data"], score_range)[2]
        if test is None:
            raise ValueError("this run has no test data: give --eval-data FILE")
    metrics = {}
    for key, model in (("zero_shot", options["model"]), ("fine_tuned", str(run_dir / "model"))):
        encoder = SentenceEncoder.from_pretrained(model, max_seq_length=options["max_seq_length"])
        metrics[key] = evaluate_encoder(encoder, test)[0]
    return metrics


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (trailing newline and carriage return removed)."""
    if not path.is_file():
        raise FileNotFoundError(f"input file {str(path)!r} does not exist")
    lines = [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ValueError(f"input file {str(path)!r} has no text lines")
    return lines


def encode_file(model: str, input_path: Path, output: Path, batch_size: int = 64) -> np.ndarray:
    """Embed every non-empty line of ``input_path`` and save the [N, D] float32 array to
    ``output`` (``.npy``, written atomically)."""
    if output.suffix != ".npy":
        raise ValueError(f"--output must name a .npy file, got {str(output)!r}")
    texts = read_lines(input_path)
    encoder = SentenceEncoder.from_pretrained(run_model_dir(model))
    emb = encoder.encode(texts, batch_size=batch_size)
    atomic_write(output, lambda f: np.save(f, emb))
    return emb
