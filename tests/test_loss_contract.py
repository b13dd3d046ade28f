"""The batch-loss contract, for every registered loss (losses added later are picked up).

(a) refs = the batch, offset 0 equals the in-batch loss (values and float64 gradients);
(b) CrossBatchMemory with every pair-based batch loss equals the loss on batch + memory;
(c) mined index tuples (metrickit.miners) feed every pair- or triplet-based loss;
(d) ``metrickit train --loss NAME`` trains every registered name for one tiny epoch;
plus construction-time validation. DistributedLoss over every loss: tests/test_distributed.py.
"""

import numpy as np
import pytest
import torch

import metrickit as mk
from metrickit import miners
from metrickit.cli import main
from metrickit.losses import BatchLoss, CrossBatchMemory, ProxyLoss, get_loss_class, list_losses
from metrickit.training import outputs

LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 1, 3, 0])
DIM, CLASSES = 5, 4


def build(name: str, **params) -> torch.nn.Module:
    """A registered loss at its defaults (ProxyLoss: num_classes, embedding_dim first)."""
    cls = get_loss_class(name)
    torch.manual_seed(0)
    if issubclass(cls, ProxyLoss):
        return cls(CLASSES, DIM, **params).double()
    return cls(**params).double()


def batch_losses() -> list[str]:
    return [n for n in list_losses() if issubclass(get_loss_class(n), BatchLoss)]


def pair_based() -> list[str]:
    return [n for n in batch_losses() if get_loss_class(n).pair_based]


def data(seed: int = 0, n: int = len(LABELS)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, DIM, generator=g, dtype=torch.float64)


def value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    out = fn(x)
    (grad,) = torch.autograd.grad(out, x, allow_unused=True)
    return out.detach(), torch.zeros_like(x) if grad is None else grad


def test_every_registered_loss_follows_a_base():
    for name in list_losses():
        cls = get_loss_class(name)
        assert issubclass(cls, (BatchLoss, ProxyLoss)), name
        assert get_loss_class(name).__doc__, name


@pytest.mark.parametrize("name", batch_losses())
def test_references_equal_to_the_batch_give_the_in_batch_loss(name):
    loss = build(name)
    x = data()
    want, want_grad = value_and_grad(lambda v: loss(v, LABELS), x)
    # a different tensor holding the batch: the reference-set code path, not the in-batch one
    got, got_grad = value_and_grad(
        lambda v: loss(v, LABELS, ref_embeddings=v * 1.0, ref_labels=LABELS.clone(), ref_offset=0),
        x,
    )
    assert want != 0, "the case must exercise the loss"
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", batch_losses())
def test_reference_set_anchors_in_the_middle_and_outside(name):
    loss = build(name)
    x = data(1)
    # anchors = rows 3..8 of the references: the same as offset None after removing their rows
    # is not true in general, but the value must be finite with finite gradients either way
    for offset in (3, None):
        refs = x if offset is not None else data(2)
        out, grad = value_and_grad(
            lambda v, refs=refs, offset=offset: loss(
                v[3:9], LABELS[3:9], ref_embeddings=refs, ref_labels=LABELS, ref_offset=offset
            ),
            x,
        )
        assert torch.isfinite(out) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", pair_based())
def test_cross_batch_memory_equals_the_loss_on_batch_and_memory(name):
    loss = build(name)
    xbm = CrossBatchMemory(loss, embedding_dim=DIM, memory_size=8).double()
    first, second = data(3), data(4)
    y1, y2 = LABELS, LABELS.roll(3)
    xbm(first, y1)  # fills the memory with the last 8 rows of the first batch
    memory, memory_labels = first[-8:], y1[-8:]
    got, got_grad = value_and_grad(lambda v: xbm(v, y2), second)
    want, want_grad = value_and_grad(
        lambda v: loss(
            v, y2, ref_embeddings=torch.cat([v, memory]),
            ref_labels=torch.cat([y2, memory_labels]), ref_offset=0,
        ),
        second,
    )
    alone = loss(second, y2)
    assert not torch.allclose(want, alone), "the memory must change the loss"
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-14)


def test_cross_batch_memory_refuses_losses_that_are_not_pair_based():
    with pytest.raises(TypeError, match="pair-based BatchLoss"):
        CrossBatchMemory(mk.losses.TripletCenterLoss(3, DIM), embedding_dim=DIM)


MINED = {
    "all_pairs": lambda x, y: miners.all_pairs(y),
    "all_triplets": lambda x, y: miners.all_triplets(y),
    "batch_hard": miners.batch_hard_triplets,
    "semihard": miners.semihard_triplets,
}


@pytest.mark.parametrize("miner", sorted(MINED))
@pytest.mark.parametrize("name", batch_losses())
def test_mined_tuples_feed_every_batch_loss(name, miner):
    loss = build(name)
    x = data(5)
    indices = MINED[miner](x, LABELS)
    out, grad = value_and_grad(lambda v: loss(v, LABELS, indices), x)
    assert torch.isfinite(out) and torch.isfinite(grad).all()
    # an empty miner output leaves nothing to score: 0 with a graph
    empty = tuple(t[:0] for t in indices)
    zero, zero_grad = value_and_grad(lambda v: loss(v, LABELS, empty), x)
    assert zero.item() == 0 and not zero_grad.any()


@pytest.mark.parametrize("name", ["contrastive", "lifted_structure", "quadruplet", "npair"])
def test_every_pair_mined_is_the_in_batch_loss_for_pair_losses(name):
    """Mining every ordered pair changes nothing for the losses over label masks (contrastive:
    each unordered pair then counts twice, which the mean does not see)."""
    loss = build(name)
    x = data(6)
    want = loss(x, LABELS)
    got = loss(x, LABELS, miners.all_pairs(LABELS))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_every_triplet_mined_is_the_batch_all_triplet_loss():
    """all_triplets mines every valid triplet: batch all over them is the batch loss."""
    loss = build("triplet")
    x = data(6)
    want = loss(x, LABELS)
    got = loss(x, LABELS, miners.all_triplets(LABELS))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_multi_pair_miner_feeds_the_contrastive_loss_as_the_masks_say():
    """Contrastive loss over mined pairs = the mean of its terms over exactly those pairs."""
    x = data(7)
    a1, p, a2, n = miners.all_pairs(LABELS)
    keep_p, keep_n = slice(0, None, 3), slice(1, None, 4)  # a subset of each
    idx = (a1[keep_p], p[keep_p], a2[keep_n], n[keep_n])
    got = mk.F.batch_contrastive_loss(x, LABELS, margin=2.0, indices_tuple=idx)
    terms = []
    for i, j in zip(idx[0].tolist(), idx[1].tolist(), strict=True):
        terms.append(0.5 * float(((x[i] - x[j]) ** 2).sum()))
    for i, j in zip(idx[2].tolist(), idx[3].tolist(), strict=True):
        d = float(((x[i] - x[j]) ** 2).sum()) ** 0.5
        terms.append(0.5 * max(2.0 - d, 0.0) ** 2)
    assert got.item() == pytest.approx(np.mean(terms), rel=1e-12)


def test_mined_triplets_drive_the_triplet_loss_term_by_term():
    x = data(8)
    a, p, n = miners.semihard_triplets(x, LABELS)
    got = mk.F.batch_triplet_loss(x, LABELS, margin=0.7, indices_tuple=(a, p, n), reduction="none")
    d = torch.cdist(x, x)
    want = (d[a, p] - d[a, n] + 0.7).clamp_min(0)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", batch_losses())
def test_bad_reference_and_index_inputs_name_the_argument(name):
    loss = build(name)
    x = data()
    with pytest.raises(ValueError, match="ref_labels is required"):
        loss(x, LABELS, ref_embeddings=x)
    with pytest.raises(ValueError, match="ref_offset"):
        loss(x, LABELS, ref_embeddings=x, ref_labels=LABELS, ref_offset=1)
    with pytest.raises(ValueError, match="indices_tuple"):
        loss(x, LABELS, (LABELS,))
    with pytest.raises(ValueError, match="indices_tuple's positive indices must lie in"):
        loss(x, LABELS, (torch.tensor([0]), torch.tensor([99]), torch.tensor([3])))


@pytest.mark.parametrize("name", list_losses())
def test_train_cli_trains_every_registered_loss(name, tmp_path, capsys, monkeypatch):
    # the figures are tested in test_cli.py; here only training and the run directory matter
    monkeypatch.setattr(outputs, "_figures", lambda trainer: ([], []), raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = [
            "train", "--dataset", "digits", "--model", "mlp", "--embedding-dim", "8",
            "-P", "4", "-K", "3", "--batches-per-epoch", "2", "--epochs", "1", "--device",
            "cpu", "--quiet", "--loss", name, "-o", str(tmp_path / "run"),
        ]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def _constructor_cases():
    """(name, parameter, default) for every registered loss's bool and number parameters."""
    import inspect

    cases = []
    for name in list_losses():
        for p in inspect.signature(get_loss_class(name)).parameters.values():
            if p.name in ("num_classes", "embedding_dim"):
                continue
            if isinstance(p.default, bool) or (
                isinstance(p.default, (int, float)) and p.default is not None
            ):
                cases.append((name, p.name, p.default))
    return cases


@pytest.mark.parametrize("name, param, default", _constructor_cases())
def test_constructors_refuse_string_flags_and_accept_numpy_scalars(name, param, default):
    """Every registered loss validates at construction: a bool flag given as a string is a
    TypeError naming it; a numpy scalar of the default's type is accepted as that number."""
    if isinstance(default, bool):
        with pytest.raises(TypeError, match=param):
            build(name, **{param: "False"})
        build(name, **{param: np.bool_(default)})
        return
    numpy_value = np.int64(default) if isinstance(default, int) else np.float32(default)
    loss = build(name, **{param: numpy_value})
    stored = getattr(loss, param, default)
    if isinstance(stored, torch.Tensor):  # a learnable hyper-parameter (margin's β)
        stored = stored.detach().flatten()[0].item()
    assert stored == pytest.approx(float(numpy_value))
    with pytest.raises((TypeError, ValueError), match=param):
        build(name, **{param: "1"})
