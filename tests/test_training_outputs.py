"""The Trainer's results and outputs: no import circle, a named step result, truthful figures,
data options, P chosen from the data and a test split checked before training."""

import ast
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit.cli import main
from metrickit.training import outputs
from metrickit.training.trainer import StepResult

SMALL = {"dataset": "digits", "model": "mlp", "embedding_dim": 8, "k": 4,
         "batches_per_epoch": 2, "device": "cpu", "epochs": 1}  # fmt: skip
FLAGS = ["--model", "mlp", "--embedding-dim", "8", "--batches-per-epoch", "2", "--device", "cpu",
         "--quiet", "--threads", "1", "--epochs", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_outputs_never_import_the_trainer():
    source = Path(outputs.__file__).read_text()
    imported = [
        node.module for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and node.module
    ]  # fmt: skip
    assert not any("trainer" in m for m in imported) and "Trainer" not in source.split('"""')[-1]


def test_a_step_returns_a_named_result(tmp_path):
    trainer = mk.Trainer({**SMALL, "output": str(tmp_path / "r"), "mining": "hard"}, False)
    result = trainer._step(*next(iter(trainer.loader)))
    assert isinstance(result, StepResult) and result.total > 0
    assert result.easy + result.semihard + result.hard == result.total
    trainer = mk.Trainer({**SMALL, "output": str(tmp_path / "c"), "loss": "contrastive"}, False)
    result = trainer._step(*next(iter(trainer.loader)))
    assert result.total is None and result.loss > 0


def test_triplet_shares_are_logged_for_the_triplet_loss_only(tmp_path):
    history = mk.Trainer(
        {**SMALL, "output": str(tmp_path / "tc"), "loss": "triplet_center"}, False
    ).fit()
    assert "easy" not in history[0] and "hard" not in history[0]
    history = mk.Trainer({**SMALL, "output": str(tmp_path / "t"), "loss": "triplet"}, False).fit()
    assert {"easy", "semihard", "hard"} <= set(history[0])


def test_single_point_curves_are_not_plotted():
    one = [{"epoch": 1, "loss": 1.0, "test_map_at_r": 0.5}, {"epoch": 2, "loss": 0.5}]
    assert outputs._curves(one) == {}
    two = [{"epoch": 1, "test_map_at_r": 0.4}, {"epoch": 2, "test_map_at_r": 0.5}]
    assert list(outputs._curves(two)) == ["test_map_at_r"]


def test_retrieval_grid_uses_the_run_distance_and_shows_failures():
    # cosine neighbours differ from Euclidean ones: scaled copies of one direction
    x = torch.tensor([[1.0, 0.0], [10.0, 0.1], [1.2, 1.0], [0.0, 1.0], [0.1, 10.0], [1.0, 1.2]])
    labels = torch.tensor([0, 0, 1, 1, 1, 0])
    _, euclid, _ = outputs.grid_queries(x, labels, "euclidean", 6, seed=0)
    queries, cos, failures = outputs.grid_queries(x, labels, "cosine", 6, seed=0)
    first = dict(zip(queries.tolist(), cos[:, 0].tolist(), strict=True))
    assert first[0] == 1  # same direction, far away in Euclidean terms
    assert not torch.equal(euclid, cos)
    wrong = (labels[cos[:, 0]] != labels[queries]).sum().item()
    assert failures == wrong >= 1
    # when mistakes exist, the first queries shown are mistakes
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(200, 4, generator=g)
    lab = torch.arange(200) % 10
    q, nb, failures = outputs.grid_queries(emb, lab, "euclidean", 6, seed=1)
    assert failures >= 3 and bool((lab[nb[:3, 0]] != lab[q[:3]]).all())


def test_zero_shot_with_five_training_classes_chooses_p_from_the_data(tmp_path, capsys):
    out = tmp_path / "zs"
    assert main(["train", "--dataset", "digits", "--protocol", "zero_shot", *FLAGS, "-o",
                 str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    inputs = json.loads((out / "config.json").read_text())["inputs"]
    assert inputs["p"] == 5 and inputs["input_shape"] == [1, 8, 8]
    assert main(["train", "--dataset", "digits", "--protocol", "zero_shot", *FLAGS, "-P", "8",
                 "-o", str(tmp_path / "p8")]) == 2  # fmt: skip
    assert "-P 5 or fewer" in capsys.readouterr().err


def test_a_test_split_too_small_for_the_evaluation_is_refused_before_training(tmp_path, capsys):
    labels = np.array([0] * 10 + [1] * 10 + [2] * 10 + [3, 3, 4, 4, 5, 5])
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).normal(size=(len(labels), 4)), y=labels)
    assert main(["train", "--dataset", str(data), "--protocol", "zero_shot", "-P", "2", *FLAGS,
                 "-o", str(tmp_path / "r")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "the test split has 6 samples" in err and "needs at least 9" in err
    assert not (tmp_path / "r").exists()


def write_csv(path: Path, label="species", scale=1000.0) -> Path:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["f1", "f2", "f3", label])
        for i in range(90):
            c = i % 3
            w.writerow([c * scale + rng.normal() * scale, rng.normal(), c + rng.normal() * 0.1,
                        f"class{c}"])  # fmt: skip
    return path


def test_csv_label_column_and_standardization_from_the_cli(tmp_path, capsys):
    data = write_csv(tmp_path / "d.csv")
    err_argv = ["train", "--dataset", str(data), *FLAGS, "-o", str(tmp_path / "x")]
    assert main(err_argv) == 2
    assert "--label-column" in capsys.readouterr().err
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--label-column", "species", "--standardize",
                 *FLAGS, "-o", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    stats = json.loads((out / "config.json").read_text())["inputs"]["standardization"]
    assert len(stats["mean"]) == 3 and stats["std"][0] > 100
    assert main(["train", "--dataset", "digits", "--standardize", *FLAGS, "-o",
                 str(tmp_path / "img")]) == 2  # fmt: skip
    assert "standardize applies to feature vectors" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--image-size", "4", *FLAGS, "-o",
                 str(tmp_path / "img")]) == 2  # fmt: skip
    assert "do not apply to dataset 'digits'" in capsys.readouterr().err


def test_image_folder_rgb_and_resize_from_the_cli(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "imgs" / f"c{c}").mkdir(parents=True)
        for i in range(8):
            size = (10 + i, 12)  # sizes differ: needs --image-size
            arr = (rng.random((size[1], size[0], 3)) * 80 + c * 80).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(tmp_path / "imgs" / f"c{c}" / f"{i}.png")
    argv = ["train", "--dataset", str(tmp_path / "imgs"), "--test-size", "12", *FLAGS]
    assert main([*argv, "-o", str(tmp_path / "a")]) == 2
    assert "--image-size" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main([*argv, "--image-size", "8x6", "--image-mode", "RGB", "-o", str(out)]) == 0
    capsys.readouterr()
    assert json.loads((out / "config.json").read_text())["inputs"]["input_shape"] == [3, 8, 6]
    config = mk.TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    assert (config.image_size, config.image_mode) == ([8, 6], "RGB")
