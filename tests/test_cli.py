"""``metrickit train`` / ``evaluate`` / ``demo`` end to end (small "digits" runs on the CPU)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit.cli import demo, main
from metrickit.cli.train import flag_overrides
from metrickit.training import CheckpointError, load_checkpoint


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is fastest and immune to CPU oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FLAGS = [
    "--dataset", "digits", "--model", "mlp", "--embedding-dim", "16", "-P", "4", "-K", "4",
    "--batches-per-epoch", "4", "--device", "cpu", "--quiet",
]  # fmt: skip
RUN_FILES = [
    "config.json", "history.csv", "metrics.json", "report.html", "checkpoints/last.pt",
    "checkpoints/init.pt", "loss_curve.png", "learning_curves.png", "loss_vs_distance.png",
    "distance_histograms.png", "embedding_map.png", "retrieval_grid.png",
]  # fmt: skip


def train(tmp_path, name="run", *extra):
    return main(["train", *FLAGS, "-o", str(tmp_path / name), *extra])


def snapshot(directory: Path) -> dict[str, bytes]:
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def error_of(capsys, argv) -> str:
    """Run the CLI expecting a usage error: exit status 2 and one line on stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# ----------------------------------------------------------------------------- happy paths
def test_train_then_evaluate_writes_and_rewrites_the_run(tmp_path, capsys):
    assert train(tmp_path, "run", "--epochs", "2", "--mining", "hard") == 0
    out = capsys.readouterr().out
    assert "raw input" in out and "untrained" in out and "map_at_r" in out and "elapsed:" in out
    run = tmp_path / "run"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"raw", "untrained", "trained", "epochs_trained"} <= set(metrics)
    assert metrics["trained"]["map_at_r"] > metrics["untrained"]["map_at_r"]
    with open(run / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["epoch", "loss", "easy", "semihard", "hard", "time", "test_precision_at_1"]
    assert list(rows[0])[:7] == columns
    assert len(rows) == 2 and rows[0]["test_map_at_r"] == ""  # test metrics at the end only
    assert float(rows[1]["test_map_at_r"]) == metrics["trained"]["map_at_r"]
    assert "<html" in (run / "report.html").read_text()

    (run / "metrics.json").write_text("{}")
    assert main(["evaluate", str(run)]) == 0
    assert "map_at_r" in capsys.readouterr().out
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_config_file_flags_override_and_resolved_config_is_saved(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "dataset: digits\nloss: contrastive\nloss_params: {margin: 0.5}\nepochs: 3\nseed: 4\n"
    )
    argv = ["train", *FLAGS, "--config", str(config), "--epochs", "1", "--loss-param", "margin=0.7"]
    assert main([*argv, "-o", str(tmp_path / "run")]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["loss"], saved["loss_params"], saved["epochs"], saved["seed"]) == (
        "contrastive", {"margin": 0.7}, 1, 4,
    )  # fmt: skip
    assert saved["embedding_dim"] == 16 and saved["optimizer"] == "adam"  # flag, default
    assert mk.TrainConfig.from_dict(saved).loss_params["margin"] == 0.7


def test_sigkill_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, capsys):
    run = tmp_path / "killed"
    epochs = 30
    argv = [*FLAGS, "--epochs", str(epochs), "--batches-per-epoch", "12", "-o", str(run)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrickit", "train", *argv],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    last = run / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.exists() and load_checkpoint(last)["epoch"] >= 2:
                break
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    stopped_at = load_checkpoint(last)["epoch"]
    assert 2 <= stopped_at < epochs  # killed mid-run; its last checkpoint is intact

    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    capsys.readouterr()
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == epochs
    config = mk.TrainConfig.from_dict({**resumed["config"], "output": str(tmp_path / "straight")})
    straight = mk.Trainer(config, progress=False).fit()
    assert without_time(resumed["history"]) == without_time(straight)


def test_demo_trains_evaluates_and_replaces_only_its_own_runs(tmp_path, capsys, monkeypatch):
    small = {"dataset": "digits", "model": "cnn", "p": 4, "k": 4, "batches_per_epoch": 3}
    monkeypatch.setattr(demo, "DEMO_CONFIG", {**demo.DEMO_CONFIG, **small, "test_size": 0.2})
    out = tmp_path / "demo"
    out.mkdir()
    (out / "config.json").write_text("{}")  # an earlier run there is replaced
    (out / "stale.png").write_text("old")
    assert main(["demo", "--epochs", "1", "-o", str(out), "--quiet", "--device", "cpu"]) == 0
    assert "elapsed:" in capsys.readouterr().out and (out / "report.html").is_file()
    assert json.loads((out / "config.json").read_text())["model"] == "cnn"
    assert not (out / "stale.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    err = error_of(capsys, ["demo", "--epochs", "1", "-o", str(other), "--quiet"])
    assert "holds no metrickit run" in err and (other / "keep.txt").read_text() == "x"


def test_commands_use_only_idle_cpus_by_default(monkeypatch):
    from metrickit import threads

    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.2, 0.0, 0.0), raising=False)
    assert threads.idle_cpus() == 2
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0), raising=False)
    assert threads.idle_cpus() == 1


def test_demo_defaults_follow_the_spec():
    cfg = mk.TrainConfig.from_dict(demo.DEMO_CONFIG)
    assert (cfg.dataset, cfg.model, cfg.loss, cfg.mining, cfg.normalize) == (
        "mnist5k", "cnn", "triplet", "hard", True,
    )  # fmt: skip
    assert cfg.test_size == 1000


# ------------------------------------------------------------------------------ bad input
def write_npz(path: Path, labels) -> Path:
    labels = np.asarray(labels)
    np.savez(path, x=np.random.default_rng(0).normal(size=(len(labels), 4)), y=labels)
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--loss", "nope"], "unknown loss 'nope'; valid names: "),
        (["--mining", "hardest"], "unknown mining 'hardest'; valid: all, hard, semihard"),
        (["--model", "resnet"], "unknown model 'resnet'; valid names: cnn, mlp"),
        (["--loss", "contrastive", "--mining", "hard"], "incompatible loss and mining"),
        (["--loss-param", "margin"], "--loss-param must look like NAME=VALUE"),
        (["--loss-param", "margn=1"], "loss 'triplet' has no parameter 'margn'"),
        (["--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--config", "missing.yaml"], "config file 'missing.yaml' does not exist"),
        (["--dataset", "no/such/dir"], "no such file or directory: 'no/such/dir'"),
        (["--dataset", "nodataset"], "unknown dataset 'nodataset'"),
    ],
)
def test_bad_options_fail_cleanly_before_writing(tmp_path, capsys, extra, message):
    argv = ["train", *FLAGS, "-o", str(tmp_path / "run"), *extra]
    assert message in error_of(capsys, argv)
    assert not (tmp_path / "run").exists()


def test_bad_datasets_fail_cleanly(tmp_path, capsys):
    cases = {
        "one class": (write_npz(tmp_path / "one.npz", [0] * 6), "has only one class"),
        "singleton": (write_npz(tmp_path / "single.npz", [0, 0, 1, 1, 2]), "single sample"),
    }
    empty = tmp_path / "empty"
    empty.mkdir()
    cases["empty"] = (empty, "is empty")
    images = tmp_path / "images"
    for c in ("a", "b"):
        (images / c).mkdir(parents=True)
        (images / c / "x.png").write_bytes(b"not a png")
    cases["unreadable"] = (images, "cannot read image file")
    for path, message in cases.values():
        argv = ["train", *FLAGS, "--dataset", str(path), "-o", str(tmp_path / "run")]
        assert message in error_of(capsys, argv)
        assert not (tmp_path / "run").exists()


def fitted_run(tmp_path) -> Path:
    """A run directory with config and checkpoints (trained, not evaluated: fast)."""
    args = mk.cli.build_parser().parse_args(["train", *FLAGS, "--epochs", "1"])
    config = mk.TrainConfig().merged({**flag_overrides(args), "output": str(tmp_path / "run")})
    mk.Trainer(config, progress=False).fit()
    return tmp_path / "run"


def test_resume_errors_leave_the_run_untouched(tmp_path, capsys):
    run = fitted_run(tmp_path)
    before = snapshot(run)
    err = error_of(capsys, ["train", "--resume", str(run), "--lr", "0.5", "--quiet"])
    assert "cannot resume" in err and "lr: 0.5 != 0.001" in err
    err = error_of(capsys, ["train", *FLAGS, "-o", str(run)])
    assert "holds another run" in err and "--resume" in err
    err = error_of(capsys, ["train", "--resume", str(run), "-o", str(tmp_path / "x")])
    assert "--output and --resume name different run directories" in err
    assert snapshot(run) == before
    err = error_of(capsys, ["train", "--resume", str(tmp_path / "nothing"), "--quiet"])
    assert "holds no metrickit run" in err
    assert "holds no metrickit run" in error_of(capsys, ["evaluate", str(tmp_path)])


def test_evaluate_refuses_an_unsafe_checkpoint(tmp_path, capsys):
    last = fitted_run(tmp_path) / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    torch.save({**state, "extra": CheckpointError("pickled object")}, last)
    assert "cannot be loaded safely" in error_of(capsys, ["evaluate", str(tmp_path / "run")])
