"""``metrickit text train / evaluate / encode`` end to end with the tiny BERT (offline, fast)."""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")

from metrickit import functional  # noqa: E402
from metrickit.cli import main  # noqa: E402
from metrickit.text import SentenceEncoder  # noqa: E402
from tiny_text import WORDS, tiny_model_dir  # noqa: E402

HAS_LOSSES = hasattr(functional, "cosent_loss") and hasattr(
    functional, "multiple_negatives_ranking_loss"
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny") / "hf")


def _sentences(n, seed):
    g = np.random.default_rng(seed)
    return [" ".join(g.choice(WORDS, size=g.integers(2, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    s1, s2 = _sentences(24, 1), _sentences(24, 2)
    scores = np.linspace(0, 5, 24)
    rows = "".join(f"{a}\t{b}\t{s}\n" for a, b, s in zip(s1, s2, scores, strict=True))
    (d / "train.tsv").write_text("sentence1\tsentence2\tscore\n" + rows)
    (d / "test.tsv").write_text("sentence1\tsentence2\tscore\n" + rows[: len(rows) // 2])
    with (d / "pairs.jsonl").open("w") as f:
        for a, b in zip(s1, s2, strict=True):
            f.write(json.dumps({"anchor": a, "positive": b}) + "\n")
    (d / "texts.txt").write_text("a man is playing\n\nthe dog\r\n")
    return d


def error_of(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_encode_model_dir(model_dir, data_files, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    argv = ["text", "encode", str(model_dir), "--input", str(data_files / "texts.txt")]
    assert main([*argv, "--output", str(out), "--threads", "1"]) == 0
    emb = np.load(out)
    want = SentenceEncoder.from_pretrained(model_dir).encode(["a man is playing", "the dog"])
    np.testing.assert_allclose(emb, want, atol=1e-6)
    assert "2 embeddings of dimension 32" in capsys.readouterr().out


def test_encode_errors(model_dir, data_files, tmp_path, capsys):
    base = ["text", "encode", str(model_dir), "--input"]
    assert "does not exist" in error_of(capsys, [*base, str(tmp_path / "no.txt"), "-o", "x.npy"])
    err = error_of(capsys, [*base, str(data_files / "texts.txt"), "-o", str(tmp_path / "e.txt")])
    assert ".npy" in err
    err = error_of(
        capsys,
        [
            "text",
            "encode",
            str(tmp_path / "nothing"),
            "--input",
            str(data_files / "texts.txt"),
            "-o",
            str(tmp_path / "e.npy"),
        ],
    )
    assert "neither a built-in model" in err
    assert not list(tmp_path.iterdir())


def test_train_errors_write_nothing(model_dir, data_files, tmp_path, capsys):
    out = tmp_path / "run"
    base = ["text", "train", "--model", str(model_dir), "-o", str(out), "--quiet"]
    assert "loss" in error_of(
        capsys,
        [
            *base,
            "--dataset",
            str(data_files / "train.tsv"),
            "--loss",
            "nope",
            "--score-range",
            "0",
            "5",
        ],
    )
    if HAS_LOSSES:
        err = error_of(capsys, [*base, "--dataset", str(data_files / "train.tsv")])
        assert "score_range" in err
        assert "does not exist" in error_of(capsys, [*base, "--dataset", str(tmp_path / "x.csv")])
    assert not out.exists()
    out.mkdir()
    (out / "keep").write_text("x")
    assert "not empty" in error_of(capsys, [*base, "--dataset", str(data_files / "train.tsv")])
    missing_eval = [
        *base[:-3],
        "-o",
        str(tmp_path / "r3"),
        "--dataset",
        str(data_files / "pairs.jsonl"),
    ]
    if HAS_LOSSES:  # fails after the run directory was created: it is removed again
        err = error_of(capsys, [*missing_eval, "--loss", "mnrl", "--eval-data", "no.tsv"])
        assert "does not exist" in err and not (tmp_path / "r3").exists()
    assert "--loss-param" in error_of(
        capsys, [*base[:-3], "-o", str(tmp_path / "r2"), "--loss-param", "scale"]
    )


@pytest.mark.skipif(not HAS_LOSSES, reason="the contract's text losses are not in this metrickit")
def test_train_evaluate_encode_scored(model_dir, data_files, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "text", "train", "--model", str(model_dir), "--dataset", str(data_files / "train.tsv"),
        "--eval-data", str(data_files / "test.tsv"), "--score-range", "0", "5",
        "--loss", "cosent", "--batch-size", "8", "--lr", "1e-3", "--epochs", "2",
        "--threads", "1", "--quiet", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "zero_shot" in printed and "fine_tuned" in printed and "spearman" in printed
    for name in (
        "config.json",
        "history.json",
        "metrics.json",
        "learning_curve.png",
        "cosine_histograms.png",
        "model/modules.json",
        "model/model.safetensors",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert len(history["step_loss"]) == 6 and len(history["epoch_seconds"]) == 2
    assert main(["text", "evaluate", str(out), "--threads", "1"]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    for key in ("zero_shot", "fine_tuned"):
        assert evaluation[key]["spearman"] == pytest.approx(metrics[key]["spearman"], abs=1e-4)
    assert (
        main(
            [
                "text",
                "encode",
                str(out),
                "--input",
                str(data_files / "texts.txt"),
                "-o",
                str(tmp_path / "e.npy"),
            ]
        )
        == 0
    )
    want = SentenceEncoder.from_pretrained(out / "model").encode(["a man is playing", "the dog"])
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), want, atol=1e-6)


@pytest.mark.skipif(not HAS_LOSSES, reason="the contract's text losses are not in this metrickit")
def test_train_pairs_cached(model_dir, data_files, tmp_path, capsys):
    out = tmp_path / "pairs"
    argv = [
        "text", "train", "--model", str(model_dir), "--data", str(data_files / "pairs.jsonl"),
        "--loss", "mnrl", "--batch-size", "12", "--mini-batch-size", "5", "--threads", "1",
        "--quiet", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0  # --data is accepted for --dataset
    assert json.loads((out / "config.json").read_text())["fit"]["mini_batch_size"] == 5
    assert "no test data" in error_of(capsys, ["text", "evaluate", str(out)])


@pytest.mark.skipif(not HAS_LOSSES, reason="the contract's text losses are not in this metrickit")
def test_train_with_dev_curve_best_and_precision(model_dir, data_files, tmp_path, monkeypatch):
    from metrickit import plots

    drawn = []

    def spy(steps, at, scores, path, title=None):
        drawn.append((list(steps), list(at), {k: list(v) for k, v in scores.items()}))
        return real(steps, at, scores, path, title)

    real = plots.plot_eval_curve
    monkeypatch.setattr(plots, "plot_eval_curve", spy)
    out = tmp_path / "dev"
    argv = [
        "text", "train", "--model", str(model_dir), "--dataset", str(data_files / "train.tsv"),
        "--dev-data", str(data_files / "test.tsv"), "--eval-data", str(data_files / "test.tsv"),
        "--score-range", "0", "5", "--loss", "cosent", "--batch-size", "8", "--lr", "1e-3",
        "--epochs", "2", "--eval-steps", "2", "--best-metric", "spearman", "--precision", "bf16",
        "--threads", "1", "--quiet", "-o", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    history = json.loads((out / "history.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert config["fit"]["precision"] == "bf16" and config["dev_data"].endswith("test.tsv")
    # the zero-shot model at step 0, then steps 2, 3 (end of epoch 1), 4, 6 (end of epoch 2)
    assert [row["step"] for row in history["eval"]] == [0, 2, 3, 4, 6]
    best = max(history["eval"][1:], key=lambda row: row["spearman"])
    assert history["best"] == {"step": best["step"], "metric": "spearman",
                               "value": pytest.approx(best["spearman"])}  # fmt: skip
    assert drawn == [(
        pytest.approx(history["step_loss"]), [0, 2, 3, 4, 6],
        {"dev spearman": pytest.approx([row["spearman"] for row in history["eval"]])},
    )]  # fmt: skip
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the saved model is the best evaluation's: its test score is that dev score (dev = test)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fine_tuned"]["spearman"] == pytest.approx(best["spearman"], abs=1e-3)
