"""From a trained run to answers: load_run, embed, index and search (Python and CLI)."""

import csv
import io
import json

import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit.cli import main
from metrickit.inference import Index, build_index

FLAGS = ["--model", "mlp", "--embedding-dim", "8", "--batches-per-epoch", "3", "--device", "cpu",
         "--quiet", "--threads", "1", "--epochs", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    """A run trained on a CSV with standardisation (so preprocessing matters)."""
    root = tmp_path_factory.mktemp("inference")
    rng = np.random.default_rng(0)
    lines = ["a,b,c,label"]
    for i in range(120):
        c = i % 4
        lines.append(f"{c * 1000 + rng.normal() * 50:.3f},{c + rng.normal() * 0.1:.4f},"
                     f"{rng.normal():.4f},k{c}")  # fmt: skip
    data = root / "train.csv"
    data.write_text("\n".join(lines) + "\n")
    run = root / "run"
    torch.set_num_threads(1)
    assert main(["train", "--dataset", str(data), "--standardize", *FLAGS, "-o", str(run)]) == 0
    return run, data, root


def test_load_run_embeds_like_the_trainer(feature_run):
    run, data, _ = feature_run
    embedder = mk.load_run(run)
    assert embedder.input_shape == (3,) and embedder.standardization is not None
    trainer = mk.Trainer.from_run_dir(run, progress=False)
    trainer.restore()
    emb = embedder.embed(data)
    loaded = mk.data.load_dataset(data)
    expected = trainer.embed(mk.training.datasets.standardize(loaded.x, embedder.standardization))
    np.testing.assert_allclose(emb, expected.numpy(), atol=1e-6)
    assert emb.shape == (120, 8) and emb.dtype == np.float32
    # unlabelled inputs: a CSV without the label column, a plain .npy of inputs
    plain = np.loadtxt(data, delimiter=",", skiprows=1, usecols=(0, 1, 2), dtype=np.float32)
    np.save(data.parent / "plain.npy", plain[:5])
    np.testing.assert_allclose(embedder.embed(data.parent / "plain.npy"), emb[:5], atol=1e-6)
    np.testing.assert_allclose(embedder.embed(plain[:5]), emb[:5], atol=1e-6)
    with pytest.raises(ValueError, match="does not fit the run's network"):
        embedder.embed(np.zeros((2, 4), dtype=np.float32))


def test_index_save_load_search_in_python(feature_run, tmp_path):
    run, data, _ = feature_run
    embedder = mk.load_run(run)
    index = build_index(embedder, data)
    assert index.distance == embedder.distance and index.labels is not None
    index.save(tmp_path / "idx")
    assert not list((tmp_path / "idx").glob("*.pkl"))
    loaded = Index.load(tmp_path / "idx")
    result = loaded.search(data, k=3)
    assert result.indices.shape == (120, 3)
    assert (result.indices[:, 0] == np.arange(120)).mean() > 0.9  # a query finds itself first
    assert (result.labels[:, 1] == result.labels[:, 0]).mean() > 0.8
    assert np.all(np.diff(result.distances, axis=1) >= 0)
    with pytest.raises(ValueError, match="holds another run|is not empty"):
        index.save(tmp_path / "idx")


def test_embed_index_search_commands(feature_run, tmp_path, capsys):
    run, data, _ = feature_run
    out = tmp_path / "emb.npy"
    assert main(["embed", str(run), "--dataset", str(data), "-o", str(out), "--quiet",
                 "--threads", "1"]) == 0  # fmt: skip
    assert np.load(out).shape == (120, 8)
    assert main(["index", str(run), "--data", str(data), "-o", str(tmp_path / "idx"),
                 "--quiet", "--threads", "1"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["count"] == 120
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--dataset", str(data), "-k", "2", "--quiet",
                 "--threads", "1"]) == 0  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 240 and rows[0]["query"] == "0" and rows[0]["rank"] == "1"
    assert {"id", "label", "distance"} <= set(rows[0])
    assert main(["search", str(tmp_path / "idx"), "--dataset", str(data), "-k", "2", "-o",
                 str(tmp_path / "n.csv"), "--quiet", "--threads", "1"]) == 0  # fmt: skip
    assert (tmp_path / "n.csv").read_text().count("\n") == 241


def test_inference_errors_are_one_line(feature_run, tmp_path, capsys):
    run, data, root = feature_run
    for argv, message in [
        (["embed", str(tmp_path), "--dataset", str(data), "-o", str(tmp_path / "e.npy")],
         "holds no metrickit run"),
        (["embed", str(run), "--dataset", str(data), "-o", str(tmp_path / "e.txt")],
         "must name a .npy file"),
        (["search", str(run), "--dataset", str(data)],
         "holds a train run; this command needs an index run"),
        (["index", str(run), "--dataset", str(data), "-o", str(root)], "is not empty"),
    ]:
        assert main([*argv, "--threads", "1", "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
