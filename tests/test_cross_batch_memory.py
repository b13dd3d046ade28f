import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import LAYOUTS, random_batch, t64
from metrickit.losses import CrossBatchMemory
from reference import (
    batch_contrastive,
    batch_triplet,
    lifted_structure,
    numeric_grad,
    ref_set_contrastive,
    ref_set_lifted,
    ref_set_masks,
    ref_set_quadruplet,
    triplet_dist_matrix,
    triplet_terms_from_matrix,
)

LOSSES = {
    "triplet_all": lambda: mk.losses.BatchTripletLoss(margin=0.5),
    "triplet_hard": lambda: mk.losses.BatchTripletLoss(margin=0.5, mining="hard"),
    "triplet_semihard": lambda: mk.losses.BatchTripletLoss(margin=0.5, mining="semihard"),
    "contrastive": lambda: mk.losses.BatchContrastiveLoss(margin=1.5),
    "lifted": lambda: mk.losses.LiftedStructureLoss(margin=1.0),
    "quadruplet": lambda: mk.losses.BatchQuadrupletLoss(margin1=1.0, margin2=0.5),
}


def brute(name, refs, ref_labels, offset, b):
    """Brute-force value of the reference-set loss ``name`` (mean reduction)."""
    ref_labels = list(ref_labels)
    if name.startswith("triplet"):
        anchors = refs[offset : offset + b]
        pos, neg = ref_set_masks(ref_labels[offset : offset + b], ref_labels, offset)
        dist = triplet_dist_matrix(anchors, ref=refs)
        terms, divisor, _ = triplet_terms_from_matrix(dist, pos, neg, 0.5, name.split("_")[1])
        return sum(terms) / max(divisor, 1)
    if name == "contrastive":
        terms = ref_set_contrastive(refs, ref_labels, offset, b, 1.5)
        return float(np.mean(terms)) if terms else 0.0
    if name == "lifted":
        terms = ref_set_lifted(refs, ref_labels, offset, b, 1.0)
        return float(np.mean(terms)) if terms else 0.0
    return ref_set_quadruplet(refs, ref_labels, offset, b, 1.0, 0.5)


def library(loss, x, labels, offset, b):
    return mk.F.reference_set_loss(
        loss, x[offset : offset + b], labels[offset : offset + b], x, labels, offset
    )


# (layout, offset, number of anchors): anchors at the start, in the middle, all rows
SLICES = [("pk_4x3", 3, 5), ("uneven", 0, 4), ("singletons_mixed", 2, 5), ("two_classes", 0, 6)]


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("layout_name,offset,b", SLICES)
def test_reference_set_matches_brute_force(name, layout_name, offset, b):
    labels = np.array(LAYOUTS[layout_name])
    if name == "quadruplet":
        labels, b = labels[:8], min(b, 8 - offset)  # O(M⁴) reference: keep it small
    refs = random_batch(labels, seed=11)
    x = t64(refs, True)
    lab = torch.tensor(labels)
    out = library(LOSSES[name](), x, lab, offset, b)
    assert out.item() == pytest.approx(brute(name, refs, labels, offset, b), rel=1e-9, abs=1e-12)
    out.backward()
    num = numeric_grad(lambda v: brute(name, v, labels, offset, b), refs)
    np.testing.assert_allclose(x.grad.numpy(), num, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_reference_set_of_the_batch_itself_is_the_batch_loss(name, layout):
    x = torch.tensor(random_batch(layout, seed=4), dtype=torch.float64)
    lab = torch.tensor(layout)
    loss = LOSSES[name]()
    torch.testing.assert_close(library(loss, x, lab, 0, len(layout)), loss(x, lab))


@pytest.mark.parametrize("mining", ["all", "hard", "semihard"])
def test_triplet_reductions_against_brute_force(mining):
    labels = np.array(LAYOUTS["uneven"])
    refs = random_batch(labels, seed=2)
    x, lab = t64(refs), torch.tensor(labels)
    loss = mk.losses.BatchTripletLoss(margin=0.5, mining=mining, reduction="sum")
    pos, neg = ref_set_masks(labels[2:7].tolist(), labels.tolist(), 2)
    terms, _, _ = triplet_terms_from_matrix(
        triplet_dist_matrix(refs[2:7], ref=refs), pos, neg, 0.5, mining
    )
    assert library(loss, x, lab, 2, 5).item() == pytest.approx(sum(terms), rel=1e-10)


def test_contrastive_none_lists_pairs_in_row_major_order():
    labels = np.array([0, 1, 0, 1, 2])
    refs = random_batch(labels, seed=5)
    loss = mk.losses.BatchContrastiveLoss(margin=1.5, reduction="none")
    out = library(loss, t64(refs), torch.tensor(labels), 1, 2)
    np.testing.assert_allclose(out.numpy(), ref_set_contrastive(refs, labels, 1, 2, 1.5))


def _memory_stream(name, batches, memory_size, start_step=0):
    """Run CrossBatchMemory over ``batches``; brute-force its value and gradient at each step."""
    xbm = CrossBatchMemory(LOSSES[name](), embedding_dim=4, memory_size=memory_size,
                           start_step=start_step).double()
    past_x, past_y = np.zeros((0, 4)), np.zeros(0, dtype=int)
    for step, (emb, labels) in enumerate(batches):
        x = t64(emb, True)
        out = xbm(x, torch.tensor(labels))
        out.backward()
        mem_x, mem_y = past_x[-memory_size:], past_y[-memory_size:]
        if step < start_step:
            mem_x, mem_y = mem_x[:0], mem_y[:0]
        ref_y = np.concatenate([labels, mem_y])
        b = len(labels)

        def f(v, mem_x=mem_x, ref_y=ref_y, b=b):
            return brute(name, np.concatenate([v, mem_x]), ref_y, 0, b)

        assert out.item() == pytest.approx(f(emb), rel=1e-9, abs=1e-12), step
        np.testing.assert_allclose(x.grad.numpy(), numeric_grad(f, emb), atol=1e-6)
        past_x, past_y = np.concatenate([past_x, emb]), np.concatenate([past_y, labels])
    return xbm


@pytest.mark.parametrize("name", ["triplet_all", "triplet_hard", "contrastive", "lifted"])
def test_memory_is_a_fifo_of_past_batches(name):
    g = np.random.default_rng(7)
    batches = [(g.normal(size=(6, 4)), g.integers(0, 3, size=6)) for _ in range(4)]
    xbm = _memory_stream(name, batches, memory_size=9)
    assert xbm.filled == 9
    # the memory holds the last 9 samples (slot order is a ring, compare as sets of rows)
    last = np.concatenate([b[0] for b in batches])[-9:]
    held = xbm.memory_embeddings.numpy()
    assert sorted(map(tuple, held.round(12))) == sorted(map(tuple, last.round(12)))


def test_quadruplet_memory_and_start_step():
    g = np.random.default_rng(8)
    batches = [(g.normal(size=(4, 4)), np.array([0, 0, 1, 2])) for _ in range(3)]
    xbm = _memory_stream("quadruplet", batches, memory_size=3, start_step=1)
    assert xbm.steps == 3


def test_batch_larger_than_memory_keeps_its_last_rows():
    xbm = CrossBatchMemory(mk.losses.BatchTripletLoss(), embedding_dim=2, memory_size=3)
    x = torch.arange(10.0).view(5, 2)
    xbm(x, torch.tensor([0, 0, 1, 1, 2]))
    assert torch.equal(xbm.memory_embeddings, x[2:])
    assert torch.equal(xbm.memory_labels, torch.tensor([1, 1, 2]))


def test_eval_mode_uses_but_does_not_update_memory():
    xbm = CrossBatchMemory(mk.losses.BatchContrastiveLoss(), embedding_dim=3, memory_size=8)
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 0, 1, 1])
    xbm(x1, y)
    xbm.eval()
    with_memory = xbm(x2, y)
    assert xbm.filled == 4 and xbm.steps == 1
    refs = torch.cat([x2, x1])
    expected = mk.F.reference_set_loss(xbm.loss, x2, y, refs, torch.cat([y, y]))
    torch.testing.assert_close(with_memory, expected)
    assert not torch.allclose(with_memory, xbm.loss(x2, y))


def test_state_dict_round_trip_and_reset():
    xbm = CrossBatchMemory(mk.losses.BatchTripletLoss(), embedding_dim=3, memory_size=5)
    xbm(torch.randn(4, 3), torch.tensor([0, 0, 1, 1]))
    xbm(torch.randn(4, 3), torch.tensor([2, 2, 1, 1]))
    other = CrossBatchMemory(mk.losses.BatchTripletLoss(), embedding_dim=3, memory_size=5)
    other.load_state_dict(xbm.state_dict())
    assert (other.filled, other.position, other.steps) == (5, 3, 2)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 2])
    torch.testing.assert_close(other(x, y), xbm(x, y))
    xbm.reset()
    assert xbm.filled == 0
    torch.testing.assert_close(xbm.eval()(x, y), xbm.loss(x, y))


def test_first_step_equals_plain_loss_and_memory_gets_no_gradient():
    xbm = CrossBatchMemory(mk.losses.BatchTripletLoss(mining="hard"), embedding_dim=3)
    x = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(xbm(x, y), xbm.loss(x, y))
    assert not xbm.memory_embeddings.requires_grad


def test_identical_embeddings_give_finite_gradients():
    for name in LOSSES:
        xbm = CrossBatchMemory(LOSSES[name](), embedding_dim=3, memory_size=6)
        y = torch.tensor([0, 0, 1, 1])
        xbm(torch.ones(4, 3), y)
        x = torch.ones(4, 3, requires_grad=True)
        xbm(x, y).backward()
        assert torch.isfinite(x.grad).all(), name


def test_one_sample_and_one_class_give_zero():
    xbm = CrossBatchMemory(mk.losses.BatchTripletLoss(), embedding_dim=2, memory_size=4)
    x = torch.randn(1, 2, requires_grad=True)
    out = xbm(x, torch.tensor([3]))
    out.backward()
    assert out.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    x = torch.randn(3, 2, requires_grad=True)
    out = xbm(x, torch.tensor([3, 3, 3]))  # memory holds only class 3 too: no negative
    assert out.item() == 0


def test_huge_distances_do_not_overflow():
    xbm = CrossBatchMemory(mk.losses.LiftedStructureLoss(), embedding_dim=4, memory_size=8)
    y = torch.tensor([0, 0, 1, 1])
    xbm(torch.randn(4, 4) * 1e15, y)
    x = (torch.randn(4, 4) * 1e15).requires_grad_()
    out = xbm(x, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    xbm = CrossBatchMemory(mk.losses.BatchTripletLoss(margin=0.5), embedding_dim=4, memory_size=8)
    x32 = [torch.randn(6, 4) for _ in range(2)]
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    xbm(x32[0].to(dtype), y)
    x = x32[1].to(dtype).requires_grad_()
    out = xbm(x, y)
    out.backward()
    assert out.dtype == dtype and x.grad.dtype == dtype and torch.isfinite(x.grad).all()
    assert xbm.memory_embeddings.dtype == torch.float32
    refs = torch.cat([x.detach().float(), x32[0].to(dtype).float()])
    expected = mk.F.reference_set_loss(xbm.loss, refs[:6], y, refs, torch.cat([y, y]))
    assert out.float().item() == pytest.approx(expected.item(), rel=1e-2)


def test_bad_inputs():
    triplet = mk.losses.BatchTripletLoss()
    with pytest.raises(TypeError, match="loss must be a pair-based BatchLoss.*TripletCenterLoss"):
        CrossBatchMemory(mk.losses.TripletCenterLoss(3, 4), embedding_dim=4)
    with pytest.raises(TypeError, match="loss must be a pair-based BatchLoss.*got NPairLoss"):
        CrossBatchMemory(mk.losses.NPairLoss(), embedding_dim=4)
    with pytest.raises(ValueError, match="memory_size must be a positive integer"):
        CrossBatchMemory(triplet, embedding_dim=4, memory_size=0)
    with pytest.raises(ValueError, match="start_step"):
        CrossBatchMemory(triplet, embedding_dim=4, start_step=-1)
    xbm = CrossBatchMemory(triplet, embedding_dim=4)
    with pytest.raises(ValueError, match="embedding_dim=4 columns, got shape \\(2, 3\\)"):
        xbm(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels must have one entry per embedding"):
        xbm(torch.randn(2, 4), torch.tensor([0, 1, 1]))
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="rows 2..4 .* has 3 rows"):
        mk.F.reference_set_loss(triplet, x, y, x, y, offset=2)
    with pytest.raises(ValueError, match="same embedding size"):
        mk.F.reference_set_loss(triplet, x, y, torch.randn(3, 2), y)
    with pytest.raises(TypeError, match="loss must be a BatchLoss.*got NPairLoss"):
        mk.F.reference_set_loss(mk.losses.NPairLoss(), x, y, x, y)


def test_brute_force_helpers_agree_with_in_batch_references():
    # the reference-set brute force reduces to the independent in-batch references
    labels = np.array(LAYOUTS["pk_4x3"])
    emb = random_batch(labels, seed=9)
    n = len(labels)
    assert brute("contrastive", emb, labels, 0, n) == pytest.approx(
        np.mean(batch_contrastive(emb, labels, 1.5)))
    assert brute("lifted", emb, labels, 0, n) == pytest.approx(
        np.mean(lifted_structure(emb, labels, 1.0)))
    assert brute("triplet_all", emb, labels, 0, n) == pytest.approx(
        batch_triplet(emb, labels, 0.5)[0])
