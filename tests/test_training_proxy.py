"""The trainer with proxy losses: class count and size filled in, the proxies' own learning rate."""

import pytest
import torch

import metrickit as mk
from metrickit.training import load_checkpoint
from metrickit.training.trainer import PROXY_LR_FACTOR
from test_training import one_thread, small, without_time  # noqa: F401 (autouse fixture)

PROXY_LOSSES = ["proxy_anchor", "proxy_nca", "normalized_softmax", "cosface", "arcface",
                "subcenter_arcface", "soft_triple"]


def groups(trainer):
    return [(g["lr"], [id(p) for p in g["params"]]) for g in trainer.optimizer.param_groups]


@pytest.mark.parametrize("name", PROXY_LOSSES)
def test_every_proxy_loss_trains_with_its_own_learning_rate(tmp_path, name):
    trainer = mk.Trainer(small(tmp_path, loss=name, mining=None, epochs=1, lr=2e-3), progress=False)
    loss_fn = trainer.loss_fn
    classes = len(trainer.train_classes)
    assert loss_fn.num_classes == classes == int(trainer.y_train.max()) + 1
    assert loss_fn.embedding_dim == 16 and loss_fn.proxies.shape[0] % classes == 0
    model_ids = [id(p) for p in trainer.model.parameters()]
    assert groups(trainer) == [(2e-3, model_ids), (2e-3 * PROXY_LR_FACTOR, [id(loss_fn.proxies)])]
    start = loss_fn.proxies.detach().clone()
    history = trainer.fit()
    assert torch.isfinite(torch.tensor(history[0]["loss"]))
    assert not torch.equal(loss_fn.proxies.detach(), start)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert torch.equal(state["loss"]["proxies"], loss_fn.proxies.detach())


def test_explicit_loss_lr_and_other_losses(tmp_path):
    trainer = mk.Trainer(small(tmp_path, "a", loss="proxy_anchor", mining=None, loss_lr=0.05),
                         progress=False)
    assert [lr for lr, _ in groups(trainer)] == [1e-3, 0.05]
    # a loss with parameters that is not a proxy loss (margin's learnable β) keeps the network's
    # learning rate (triplet_center's centres are proxies: they get loss_lr)
    trainer = mk.Trainer(small(tmp_path, "b", loss="margin", mining=None), progress=False)
    assert [lr for lr, _ in groups(trainer)] == [1e-3, 1e-3]
    # a loss without parameters: one group
    trainer = mk.Trainer(small(tmp_path, "c", optimizer="sgd", loss_lr=0.5), progress=False)
    assert [lr for lr, _ in groups(trainer)] == [1e-3]


def test_resume_with_proxies_is_bitwise(tmp_path):
    options = {"loss": "arcface", "mining": None, "loss_params": {"scale": 16.0}}
    full = mk.Trainer(small(tmp_path, "full", **options), progress=False).fit()
    mk.Trainer(small(tmp_path, "part", epochs=1, **options), progress=False).fit()
    resumed = mk.Trainer(small(tmp_path, "part", **options), progress=False).fit(resume=True)
    assert without_time(resumed[1:]) == without_time(full[1:])


@pytest.mark.parametrize("value", [0, -1.0, True, "0.1"])
def test_loss_lr_is_validated(value):
    with pytest.raises(ValueError, match="loss_lr must be a number > 0 or null"):
        mk.TrainConfig(loss_lr=value)
    assert mk.TrainConfig(loss_lr=1).loss_lr == 1.0
