"""The open trainer: objects in, the same loop as the config/CLI path; streaming images through
a backbone; in-memory mode, callbacks, precision, schedules, validation, best checkpoint and
early stopping."""

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import metrickit as mk
from image_folders import write_mnist_pngs
from metrickit.cli import main
from metrickit.data import StreamingImageFolder, load_dataset, split_dataset
from metrickit.losses import get_loss
from metrickit.models import build_model, small_resnet

CONFIG = {
    "dataset": "digits",
    "model": "mlp",
    "embedding_dim": 16,
    "p": 4,
    "k": 4,
    "batches_per_epoch": 4,
    "epochs": 2,
    "device": "cpu",
    "mining": "hard",
    "seed": 3,
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits_splits():
    return split_dataset(load_dataset("digits"), "holdout", None, seed=CONFIG["seed"])


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    return write_mnist_pngs(tmp_path_factory.mktemp("mnist_png"), per_class=24)


def object_trainer(digits_splits, **config):
    train, test = digits_splits
    cfg = mk.TrainConfig.from_dict({**CONFIG, "output": None, **config})
    torch.manual_seed(cfg.seed)
    model = build_model("mlp", (1, 8, 8), embedding_dim=16, normalize=True)
    return mk.Trainer(
        cfg,
        model=model,
        train=train,
        test=test,
        loss=get_loss("triplet", mining="hard"),
        optimizer=lambda groups: torch.optim.Adam(groups, lr=1e-3),
        progress=False,
    )


def test_objects_and_config_give_the_same_loss_history(digits_splits, tmp_path):
    by_config = mk.Trainer(mk.TrainConfig.from_dict({**CONFIG, "output": None}), progress=False)
    by_objects = object_trainer(digits_splits)
    assert by_config.run_dir is None and by_objects.run_dir is None
    assert by_config.fit() and by_objects.fit()
    assert len(by_config.step_losses) == 8
    assert by_objects.step_losses == by_config.step_losses
    assert by_objects.evaluate()["trained"] == by_config.evaluate()["trained"]
    # ... and through the CLI: the same step losses (its checkpoint) and epoch means (history.csv)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in CONFIG.items()]
    assert main(["train", *flags, "-o", str(tmp_path / "cli"), "--quiet", "--threads", "1"]) == 0
    last = torch.load(tmp_path / "cli" / "checkpoints" / "last.pt", weights_only=True)
    assert last["step_losses"] == by_objects.step_losses
    with open(tmp_path / "cli" / "history.csv") as f:
        losses = [float(row["loss"]) for row in csv.DictReader(f)]
    expected = [float(np.mean(by_objects.step_losses[i : i + 4])) for i in (0, 4)]
    assert losses == pytest.approx(expected, rel=1e-12)


def test_in_memory_mode_writes_nothing(digits_splits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    trainer = object_trainer(digits_splits)
    results = trainer.run()
    assert set(results) == {"trained", "untrained", "raw"}
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no run directory"):
        trainer.write_outputs(results)
    with pytest.raises(ValueError, match="resume needs a run directory"):
        trainer.fit(resume=True)


def test_any_dataset_any_labels_and_a_loss_by_name():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([10, 20, 30, 40] * 12)  # not 0..C-1
    x = torch.randn(48, 5, generator=g) + labels[:, None] / 10
    model = nn.Sequential(nn.Linear(5, 7))
    trainer = mk.Trainer(
        mk.TrainConfig(p=4, k=4, epochs=2, output=None, device="cpu"),
        model=model,
        train=TensorDataset(x, labels),
        test=TensorDataset(x, labels),
        loss="triplet_center",  # needs num_classes and the embedding size (7, inferred)
        progress=False,
    )
    assert trainer.loss_fn.centers.shape == (4, 7)
    assert trainer.train_classes == ["10", "20", "30", "40"]
    trainer.fit()
    assert trainer.evaluate()["trained"]["num_queries"] == 48
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        mk.Trainer(train=TensorDataset(x, labels), model="mlp")
    with pytest.raises(TypeError, match="optimizer factory must return"):
        mk.Trainer(train=TensorDataset(x, labels), model=model, optimizer=lambda g: None)
    with pytest.raises(ValueError, match="need a train dataset"):
        mk.Trainer(test=TensorDataset(x, labels))


def test_callbacks_see_every_step_epoch_and_evaluation(digits_splits):
    events = []

    class Recorder:
        def on_step(self, trainer, step, result):
            events.append(("step", step, result.loss))

        def on_epoch(self, trainer, epoch, row):
            events.append(("epoch", epoch))
            if epoch == 2:
                trainer.should_stop = True  # a callback may end training

        def on_evaluate(self, trainer, split, metrics):
            events.append((split, round(metrics["map_at_r"], 6)))

    train, test = digits_splits
    torch.manual_seed(0)
    trainer = mk.Trainer(
        mk.TrainConfig.from_dict({**CONFIG, "epochs": 5, "output": None, "eval_every": 1,
                                  "validation_size": 0.2}),
        callbacks=[Recorder()],
        progress=False,
    )  # fmt: skip
    history = trainer.fit()
    assert len(history) == 2
    steps = [e for e in events if e[0] == "step"]
    assert [e[1] for e in steps] == list(range(1, 9))
    assert [e[2] for e in steps] == trainer.step_losses
    kinds = [e[0] for e in events if e[0] != "step"]
    assert kinds == ["validation", "test", "epoch"] * 2
    assert history[0]["val_map_at_r"] == pytest.approx(events[4][1], abs=1e-6)


def test_validation_best_checkpoint_and_early_stopping(tmp_path, monkeypatch):
    cfg = mk.TrainConfig.from_dict({**CONFIG, "epochs": 6, "output": str(tmp_path / "run"),
                                    "validation_size": 0.2, "patience": 2})  # fmt: skip
    trainer = mk.Trainer(cfg, progress=False)
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9, 0.95])
    real = trainer._metrics

    def fake(model, split="test"):
        metrics = real(model, split)
        if split == "validation":
            metrics["map_at_r"] = next(scores)
        return metrics

    monkeypatch.setattr(trainer, "_metrics", fake)
    history = trainer.run()  # noqa: F841 - run = fit + evaluate + outputs
    assert [row["epoch"] for row in trainer.history] == [1, 2, 3, 4]  # stopped: 2 without gain
    assert trainer.best == {"epoch": 2, "value": 0.7, "bad": 2}
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == 2
    best_model = trainer.best_model()
    assert not torch.equal(
        next(best_model.parameters()), next(trainer.model.parameters())
    )
    from_best = trainer.evaluate("best")["trained"]
    monkeypatch.setattr(trainer, "_metrics", real)
    assert from_best == real(best_model, "test")
    # the CLI evaluates either checkpoint of the saved run
    assert main(["evaluate", str(tmp_path / "run"), "--checkpoint", "best", "--threads", "1"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trained"]["map_at_r"] == pytest.approx(from_best["map_at_r"])
    with pytest.raises(ValueError, match="no best checkpoint"):
        mk.Trainer(mk.TrainConfig.from_dict({**CONFIG, "output": None}), progress=False
                   ).evaluate("best")  # fmt: skip
    with pytest.raises(ValueError, match="best_metric 'nope' is not an evaluation metric"):
        mk.Trainer(mk.TrainConfig.from_dict({**CONFIG, "output": None, "best_metric": "nope",
                                             "validation_size": 0.2}), progress=False).fit()


def test_schedule_clipping_and_resume_with_them(tmp_path):
    options = {"schedule": "cosine", "warmup_steps": 3, "grad_clip": 0.5, "epochs": 3}
    full = mk.Trainer(
        mk.TrainConfig.from_dict({**CONFIG, **options, "output": str(tmp_path / "full")}),
        progress=False,
    ).fit()
    lrs = [row["lr"] for row in full]
    assert lrs[0] < 1e-3 and lrs[0] > lrs[1] > lrs[2] == pytest.approx(0.0, abs=1e-12)
    part_cfg = mk.TrainConfig.from_dict({**CONFIG, **options, "output": str(tmp_path / "part")})

    class Crash:
        def on_epoch(self, trainer, epoch, row):
            raise KeyboardInterrupt  # killed after the first epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        mk.Trainer(part_cfg, callbacks=[Crash()], progress=False).fit()
    resumed = mk.Trainer(part_cfg, progress=False).fit(resume=True)
    strip = [{k: v for k, v in r.items() if k != "time"} for r in resumed]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in full]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_like_float32(precision):
    results = {}
    for p in ("32", precision):
        cfg = mk.TrainConfig.from_dict({**CONFIG, "epochs": 3, "batches_per_epoch": 10,
                                        "output": None, "precision": p})  # fmt: skip
        trainer = mk.Trainer(cfg, progress=False)
        trainer.fit()
        results[p] = trainer.evaluate()["trained"]["map_at_r"]
    assert results[precision] == pytest.approx(results["32"], abs=0.05)


def test_streamed_folder_with_augmentation_and_backbone_from_the_cli(png_folder, tmp_path):
    torch.manual_seed(5)
    torch.save(small_resnet(1).state_dict(), tmp_path / "pretrained.pt")
    args = [
        "train", "--dataset", str(png_folder), "--stream", "--augment", "crop_flip",
        "--model", "metrickit.models:small_resnet", "--weights", str(tmp_path / "pretrained.pt"),
        "--freeze-epochs", "1", "--embedding-dim", "16", "-P", "5", "-K", "4",
        "--batches-per-epoch", "3", "--epochs", "2", "--test-size", "0.25", "--workers", "1",
        "--validation-size", "0.2", "--schedule", "linear", "--warmup-steps", "2",
        "-o", str(tmp_path / "run"), "--quiet", "--threads", "1",
    ]  # fmt: skip
    assert main(args) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"trained", "untrained"} and "raw" not in metrics
    assert metrics["num_test_samples"] == 60
    assert (run / "checkpoints" / "best.pt").exists() and (run / "retrieval_grid.png").exists()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    initial = torch.load(run / "checkpoints" / "init.pt", weights_only=True)["model"]
    pretrained = torch.load(tmp_path / "pretrained.pt", weights_only=True)
    assert torch.equal(initial["backbone.0.weight"], pretrained["0.weight"])
    assert not torch.equal(state["model"]["backbone.0.weight"], pretrained["0.weight"])


def test_frozen_backbone_only_trains_the_head_in_the_first_epochs(png_folder):
    data = StreamingImageFolder(png_folder)
    train, test = split_dataset(data, "holdout", 0.25, seed=0)
    cfg = mk.TrainConfig(model="metrickit.models:small_resnet", embedding_dim=8, p=5, k=2,
                         batches_per_epoch=2, epochs=1, freeze_epochs=1, output=None,
                         device="cpu")  # fmt: skip
    torch.manual_seed(0)
    trainer = mk.Trainer(cfg, train=train, test=test, progress=False, model=None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"head.weight", "head.bias"}
    with pytest.raises(ValueError, match="freeze_epochs needs a backbone model"):
        mk.Trainer(mk.TrainConfig(freeze_epochs=1, output=None), progress=False)


def test_config_and_flags_validate_the_new_options(tmp_path, capsys):
    for bad, match in [
        ({"precision": "16"}, "precision"),
        ({"schedule": "step"}, "schedule"),
        ({"grad_clip": 0}, "grad_clip"),
        ({"validation_size": 1.5}, "validation_size"),
        ({"augment": "mixup"}, "augment"),
        ({"tensorboard": True, "output": None}, "tensorboard logging needs a run directory"),
    ]:
        with pytest.raises(ValueError, match=match):
            mk.TrainConfig.from_dict(bad)
    assert mk.TrainConfig.from_dict({"precision": 32}).precision == "32"
    code = main(["train", "--dataset", "digits", "--stream", "-o", str(tmp_path / "x")])
    assert code == 2 and "stream applies to image folders" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    features = tmp_path / "features.npz"
    np.savez(features, x=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(40) % 4)
    code = main(["train", "--dataset", str(features), "--augment", "crop_flip", "-o",
                 str(tmp_path / "y")])  # fmt: skip
    assert code == 2 and "applies to images" in capsys.readouterr().err
    code = main(["train", "--model", "torchvision:resnet18", "-o", str(tmp_path / "z")])
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        err = capsys.readouterr().err
        assert code == 2 and "needs the torchvision package" in err and len(err.splitlines()) == 1


def test_an_integer_image_size_loads_a_folder_in_memory(png_folder):
    from metrickit.training.datasets import load_config_data

    data = load_config_data(mk.TrainConfig(dataset=str(png_folder), image_size=14))
    assert data.x.shape[1:] == (1, 14, 14) and len(data) == 240
