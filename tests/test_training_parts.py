"""Schedules, clipping, mixed precision, callbacks and the trainer's data plumbing."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from metrickit.data import LabelledData
from metrickit.samplers import PKSampler
from metrickit.training.callbacks import CallbackList, TensorBoardLogger
from metrickit.training.loading import batches, dataset_labels, embed_batches, sequential_batches
from metrickit.training.precision import MixedPrecision
from metrickit.training.schedules import clip_gradients, lr_factor, warmup_schedule


def lrs(decay, total=10, warmup=3, min_ratio=0.0, base=0.1):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = warmup_schedule(opt, total, warmup, decay, min_ratio)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_decay_by_hand():
    assert lrs("constant") == pytest.approx([0.1 / 3, 0.2 / 3, 0.1] + [0.1] * 7)
    cosine = lrs("cosine")
    expected = [0.1 / 3, 0.2 / 3] + [
        0.1 * 0.5 * (1 + math.cos(math.pi * (s - 3) / 7)) for s in range(2, 10)
    ]
    expected[2] = 0.1  # step 2 is the last warmup step: (2 + 1) / 3
    assert cosine == pytest.approx(expected)
    linear = lrs("linear", min_ratio=0.1)
    assert linear[3] == pytest.approx(0.1) and linear[-1] == pytest.approx(0.1 * (0.1 + 0.9 / 7))
    assert lr_factor(10, 10, 3, "cosine", 0.2) == pytest.approx(0.2)
    assert lr_factor(50, 10, 0, "linear") == 0.0


def test_schedule_keeps_group_ratios_and_validates():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-1}])
    sched = warmup_schedule(opt, 10, 2, "linear")
    opt.step()
    sched.step()
    assert opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"] == pytest.approx(100)
    with pytest.raises(ValueError, match="decay"):
        warmup_schedule(opt, 10, 0, "step")
    with pytest.raises(ValueError, match="warmup_steps .* must not exceed"):
        warmup_schedule(opt, 5, 6)
    with pytest.raises(ValueError, match="total_steps"):
        warmup_schedule(opt, 0)


def test_clip_gradients():
    p = nn.Parameter(torch.zeros(4))
    p.grad = torch.tensor([3.0, 4.0, 0.0, 0.0])
    assert clip_gradients([p], None) is None
    norm = clip_gradients([p], 1.0)
    assert float(norm) == pytest.approx(5.0)
    assert p.grad.norm().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(ValueError, match="max_norm"):
        clip_gradients([p], 0.0)


def _fit(precision, steps=30, seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    amp = MixedPrecision(precision, "cpu")
    x = torch.randn(64, 8)
    y = x[:, :1] * 2 - x[:, 1:2]
    losses = []
    for _ in range(steps):
        with amp.autocast():
            out = model(x)
            assert out.dtype == amp.dtype
            loss = (out.float() - y).pow(2).mean()
        opt.zero_grad()
        amp.backward(loss)
        amp.step(opt, clip=lambda: clip_gradients(model.parameters(), 10.0))
        losses.append(loss.item())
    return losses, amp


@pytest.mark.parametrize("precision", ["32", "bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(precision):
    losses, amp = _fit(precision)
    reference, _ = _fit("32")
    assert losses[-1] < 0.5 * losses[0]
    assert losses[-1] == pytest.approx(reference[-1], rel=0.2, abs=0.02)
    assert (amp.scaler is not None) == (precision == "fp16")
    state = amp.state_dict()
    assert ("scale" in state) == (precision == "fp16")
    amp.load_state_dict(state)


def test_fp16_scaler_skips_an_overflowing_step():
    amp = MixedPrecision("fp16", "cpu")
    p = nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=1.0)
    loss = (p * torch.tensor(float("inf"))).sum()
    amp.backward(loss)
    scale = amp.scaler.get_scale()
    amp.step(opt)
    assert torch.equal(p.detach(), torch.ones(1)) and amp.scaler.get_scale() < scale
    with pytest.raises(ValueError, match="precision"):
        MixedPrecision("16-mixed", "cpu")


def test_callbacks_dispatch_and_none_returns():
    calls = []

    class OnlyEpoch:
        def on_epoch(self, trainer, epoch, row):
            calls.append(("epoch", epoch, row["loss"]))  # returns None

    class All:
        def on_step(self, trainer, step, result):
            calls.append(("step", step))

        def on_epoch(self, trainer, epoch, row):
            calls.append(("all-epoch", epoch))

        def on_evaluate(self, trainer, split, metrics):
            calls.append((split, metrics["map_at_r"]))

    cbs = CallbackList([OnlyEpoch(), All()])
    cbs.on_step(None, 1, 0.5)
    cbs.on_epoch(None, 1, {"loss": 0.5})
    cbs.on_evaluate(None, "validation", {"map_at_r": 0.9})
    assert calls == [("step", 1), ("epoch", 1, 0.5), ("all-epoch", 1), ("validation", 0.9)]
    with pytest.raises(TypeError, match=r"callbacks\[0\] \(int\) has none of the hooks"):
        CallbackList([3])


def test_tensorboard_logger_needs_tensorboard(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ModuleNotFoundError, match="pip install tensorboard"):
            TensorBoardLogger(tmp_path)
        return
    logger = TensorBoardLogger(tmp_path / "tb")
    logger.on_step(None, 1, 0.5)
    logger.on_epoch(None, 1, {"epoch": 1, "loss": 0.5})
    logger.on_evaluate(None, "validation", {"map_at_r": 0.5})
    logger.close()
    assert any((tmp_path / "tb").iterdir())


class PairsOnly(Dataset):
    """A map-style dataset with no label attribute: labels must be read item by item."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return torch.full((2,), float(i)), i % 3


class Touchy(PairsOnly):
    targets = [0, 1, 2, 0, 1, 2]

    def __getitem__(self, i):
        raise AssertionError("inputs must not be read for the labels")


def test_dataset_labels_without_touching_inputs():
    assert dataset_labels(Touchy(6)).tolist() == [0, 1, 2, 0, 1, 2]
    assert dataset_labels(Subset(Touchy(6), [5, 0])).tolist() == [2, 0]
    tensors = TensorDataset(torch.zeros(4, 2), torch.tensor([1, 1, 0, 0]))
    assert dataset_labels(tensors).tolist() == [1, 1, 0, 0]
    plain = PairsOnly(5)
    assert dataset_labels(plain).tolist() == [0, 1, 2, 0, 1] and plain.reads == 5
    with pytest.raises(ValueError, match=r"\(inputs, labels\)"):
        dataset_labels(TensorDataset(torch.zeros(3)))


def test_tensor_batches_equal_dataloader_batches():
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 3, generator=g), torch.arange(40) % 5
    data = LabelledData(x, y, [str(i) for i in range(5)], "toy")
    sampler = PKSampler(y, p=3, k=2, num_batches=4, seed=0)
    fast = list(batches(data, sampler))
    slow = list(batches(data, sampler, collate_fn=torch.utils.data.default_collate))
    assert len(fast) == len(slow) == 4
    for (xa, ya), (xb, yb) in zip(fast, slow, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    model = nn.Linear(3, 2)
    emb = embed_batches(model, sequential_batches(data, 16), torch.device("cpu"))
    assert torch.allclose(emb, model(x).detach())
    assert not np.shares_memory(emb.numpy(), x.numpy())
