"""Trainer, TrainConfig and checkpoints through the Python API (small "digits" runs, CPU)."""

import os
from pathlib import Path

import pytest
import torch

import metrickit as mk
from metrickit import rundir as rundir_module
from metrickit.training import CheckpointError, build_loss, load_checkpoint, save_checkpoint
from metrickit.training import checkpoint as ckpt_module
from metrickit.training.checkpoint import rng_state, set_rng_state
from metrickit.training.config import read_config_file


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is fastest and immune to CPU oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SMALL = {
    "dataset": "digits",
    "model": "mlp",
    "embedding_dim": 16,
    "p": 4,
    "k": 4,
    "batches_per_epoch": 4,
    "epochs": 3,
    "device": "cpu",
    "mining": "hard",
}


def small(tmp_path: Path, name: str = "run", **overrides) -> mk.TrainConfig:
    return mk.TrainConfig.from_dict({**SMALL, "output": str(tmp_path / name), **overrides})


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time"} for row in history]


def snapshot(directory: Path) -> dict[str, bytes]:
    files = (p for p in directory.rglob("*") if p.is_file())
    return {str(p.relative_to(directory)): p.read_bytes() for p in files}


# ----------------------------------------------------------------------------------- config
def test_config_defaults_validate_and_round_trip():
    cfg = mk.TrainConfig()
    assert mk.TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert mk.TrainConfig.from_dict({"embedding-dim": 8}).embedding_dim == 8


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
        ({"lr": -1.0}, "lr must be a number >= 0"),
        ({"lr": 0}, "lr must be > 0"),
        ({"test_size": 1.5}, "test_size must be a fraction in (0, 1)"),
        ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; valid: adam, adamw, sgd"),
        ({"mining": "easy"}, "unknown mining 'easy'; valid: all, hard, semihard"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
        ({"protocol": "kfold"}, "unknown protocol 'kfold'"),
        ({"normalize": "yes"}, "normalize must be true or false"),
        ({"loss_params": [1]}, "loss_params must be a mapping"),
        ({"colour": 1}, "unknown option(s) 'colour'; valid options: dataset"),
    ],
)
def test_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError) as info:
        mk.TrainConfig.from_dict(values)
    assert message in str(info.value)


def test_config_merge_keeps_loss_params_and_lists_differences():
    cfg = mk.TrainConfig(loss_params={"margin": 0.3, "soft": False})
    merged = cfg.merged({"loss-params": {"soft": True}, "epochs": 4, "seed": 3})
    assert merged.loss_params == {"margin": 0.3, "soft": True}
    assert merged.differences(cfg) == [
        "loss_params: {'margin': 0.3, 'soft': True} != {'margin': 0.3, 'soft': False}",
        "seed: 3 != 0",
    ]  # epochs may differ on resume


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.yaml", "loss: contrastive\nloss_params:\n  margin: 0.5\nepochs: 2\n"),
        ("c.toml", 'loss = "contrastive"\nepochs = 2\n[loss_params]\nmargin = 0.5\n'),
        ("c.json", '{"loss": "contrastive", "epochs": 2, "loss-params": {"margin": 0.5}}'),
    ],
)
def test_config_files(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    assert read_config_file(tmp_path / name) == {
        "loss": "contrastive",
        "epochs": 2,
        "loss_params": {"margin": 0.5},
    }


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_config_file(tmp_path / "missing.yaml")
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ValueError, match="must end in .yaml, .yml, .toml or .json"):
        read_config_file(tmp_path / "c.ini")
    (tmp_path / "bad.toml").write_text("epochs = = 3")
    with pytest.raises(ValueError, match="could not be parsed"):
        read_config_file(tmp_path / "bad.toml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        read_config_file(tmp_path / "list.yaml")


# -------------------------------------------------------------------------------- build_loss
def test_build_loss_maps_the_configs_mining_onto_the_loss():
    loss = build_loss("triplet", {"margin": 0.3}, "semihard", num_classes=5, embedding_dim=8)
    assert (loss.mining, loss.margin) == ("semihard", 0.3)
    assert build_loss("batch_triplet", {}, None, 5, 8).mining == "all"  # alias, loss default


def test_build_loss_fills_class_count_and_size_for_centre_losses():
    loss = build_loss("triplet_center", {"margin": 1.0}, None, num_classes=7, embedding_dim=5)
    assert loss.centers.shape == (7, 5)


@pytest.mark.parametrize(
    ("name", "params", "mining", "message"),
    [
        ("contrastive", {}, "hard", "incompatible loss and mining: loss 'contrastive' has no"),
        ("nope", {}, None, "unknown loss 'nope'; valid names: "),
        ("triplet", {"margn": 1}, None, "loss 'triplet' has no parameter 'margn'; its parameters:"),
        ("triplet", {"mining": "all"}, "hard", "mining 'hard' conflicts with loss parameter"),
        ("triplet", {"margin": "wide"}, None, "invalid parameters for loss 'triplet': margin"),
    ],
)
def test_build_loss_errors(name, params, mining, message):
    with pytest.raises(ValueError) as info:
        build_loss(name, params, mining, 5, 8)
    assert message in str(info.value)


def test_incompatible_mining_error_lists_losses_that_take_one():
    with pytest.raises(ValueError) as info:
        build_loss("contrastive", {}, "hard", 5, 8)
    assert "mining applies to: " in str(info.value) and "triplet" in str(info.value)


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_no_temp_files(tmp_path):
    state = {"epoch": 2, "model": {"w": torch.arange(3.0)}, "history": [{"loss": 0.5}]}
    save_checkpoint(state, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert loaded["history"] == [{"loss": 0.5}]
    assert os.listdir(tmp_path) == ["c.pt"]


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)

    def torn_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_module.torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # the torn temporary file was removed


def test_crash_before_rename_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir_module.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


EXECUTED = []


def _record_execution():
    EXECUTED.append(True)
    return "pwned"


class Payload:
    """An object whose unpickling would run code: a safe loader must refuse it."""

    def __reduce__(self):
        return (_record_execution, ())


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt_module.FORMAT, "epoch": 1, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert EXECUTED == []


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    torch.save({"epoch": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="is not a metrickit checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint({"epoch": 1}, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "torn.pt")


def test_rng_state_round_trip():
    state = rng_state()
    first = torch.rand(5)
    set_rng_state(load_round_trip(state))
    assert torch.equal(torch.rand(5), first)


def load_round_trip(state):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --------------------------------------------------------------------------------- trainer
def test_fit_history_checkpoint_and_reproducibility(tmp_path):
    a = mk.Trainer(small(tmp_path, "a"), progress=False)
    history = a.fit()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row in history:
        assert row["loss"] >= 0 and row["time"] > 0
        assert row["easy"] + row["semihard"] + row["hard"] == pytest.approx(1.0)
    state = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert state["epoch"] == 3 and state["history"] == history
    assert len(state["step_losses"]) == 3 * 4
    b = mk.Trainer(small(tmp_path, "b"), progress=False)
    assert without_time(b.fit()) == without_time(history)
    c = mk.Trainer(small(tmp_path, "c", seed=1), progress=False)
    assert without_time(c.fit()) != without_time(history)


def test_resume_continues_bitwise_like_an_uninterrupted_run(tmp_path):
    full = mk.Trainer(small(tmp_path, "full"), progress=False).fit()
    part = mk.Trainer(small(tmp_path, "part", epochs=1), progress=False).fit()
    assert "test_map_at_r" in part[0]  # the last epoch of the shorter run was evaluated
    resumed = mk.Trainer(small(tmp_path, "part"), progress=False).fit(resume=True)
    assert without_time(resumed[1:]) == without_time(full[1:])
    assert resumed[0]["loss"] == full[0]["loss"]
    assert mk.TrainConfig.from_dict(
        read_config_file(tmp_path / "part" / "config.json")
    ).epochs == 3


def test_resume_removes_temporaries_of_a_save_killed_midway(tmp_path):
    mk.Trainer(small(tmp_path, epochs=1), progress=False).fit()
    torn = tmp_path / "run" / "checkpoints" / ".last.pt.x1y2z3.tmp"
    torn.write_bytes(b"half")
    mk.Trainer(small(tmp_path, epochs=2), progress=False).fit(resume=True)
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["init.pt", "last.pt"]


def test_resume_with_other_config_is_refused_and_writes_nothing(tmp_path):
    mk.Trainer(small(tmp_path, epochs=1), progress=False).fit()
    before = snapshot(tmp_path / "run")
    other = mk.Trainer(small(tmp_path, epochs=2, lr=0.01), progress=False)
    with pytest.raises(ValueError, match=r"cannot resume: .* lr: 0\.01 != 0\.001"):
        other.fit(resume=True)
    assert snapshot(tmp_path / "run") == before


def test_fresh_run_into_non_empty_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty; choose another output directory"):
        mk.Trainer(small(tmp_path), progress=False).fit()
    assert os.listdir(tmp_path / "run") == ["notes.txt"]


def test_learnable_loss_parameters_are_optimised_and_checkpointed(tmp_path):
    trainer = mk.Trainer(
        small(tmp_path, loss="triplet_center", mining=None, epochs=1), progress=False
    )
    centers = trainer.loss_fn.centers
    start = centers.detach().clone()
    assert any(p is centers for group in trainer.optimizer.param_groups for p in group["params"])
    trainer.fit()
    assert not torch.equal(centers.detach(), start)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert torch.equal(state["loss"]["proxies"], centers.detach())


def test_non_triplet_loss_has_no_difficulty_columns(tmp_path):
    trainer = mk.Trainer(small(tmp_path, loss="contrastive", mining=None, epochs=1), progress=False)
    assert {k for k in trainer.fit()[0] if not k.startswith("test_")} == {"epoch", "loss", "time"}


def test_per_epoch_evaluation_adds_test_metrics(tmp_path):
    history = mk.Trainer(small(tmp_path, epochs=5, eval_every=2), progress=False).fit()
    evaluated = ["test_map_at_r" in row for row in history]
    assert evaluated == [False, True, False, True, True]  # every 2nd epoch and the last
    assert all(0 <= row["test_map_at_r"] <= 1 for row in history[1::2])


def test_evaluate_compares_trained_untrained_and_raw(tmp_path):
    trainer = mk.Trainer(small(tmp_path, epochs=1), progress=False)
    untrained_before = trainer._metrics(trainer.model)
    trainer.fit()
    results = trainer.evaluate()
    assert set(results) == {"trained", "untrained", "raw"}
    assert results["untrained"] == untrained_before
    assert results["raw"]["num_queries"] == trainer.y_test.shape[0]


def test_p_larger_than_training_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="p=8 is larger than the 5 classes of the training split"):
        mk.Trainer(small(tmp_path, protocol="zero_shot", test_size=0.5, p=8), progress=False)


def test_cuda_request_without_cuda_is_refused(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        mk.Trainer(small(tmp_path, device="cuda"), progress=False)
