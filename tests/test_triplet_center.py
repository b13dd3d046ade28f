import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import random_batch, t64
from reference import numeric_grad, triplet_center_terms


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grads_match_reference(layout, reduction):
    num_classes = int(max(layout)) + 1
    centers = np.random.default_rng(7).normal(size=(num_classes, 4))
    emb = centers[layout] + 0.6 * random_batch(layout, seed=5)  # near their centres, not always
    agg = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    x, c = t64(emb, True), t64(centers, True)
    loss = mk.F.triplet_center_loss(x, torch.tensor(layout), c, 1.5, reduction)
    ref = np.array(triplet_center_terms(emb, layout, centers, 1.5))
    assert (ref == 0).any() and (ref > 0).any()  # both sides of the hinge are exercised
    np.testing.assert_allclose(loss.detach().numpy(), agg(ref), rtol=1e-10, atol=1e-12)
    loss.sum().backward()

    def total(e, c):
        return np.sum(agg(np.array(triplet_center_terms(e, layout, c, 1.5))))

    gx = numeric_grad(lambda v: total(v, centers), emb)
    gc = numeric_grad(lambda v: total(emb, v), centers)
    np.testing.assert_allclose(x.grad.numpy(), gx, atol=1e-6)
    np.testing.assert_allclose(c.grad.numpy(), gc, atol=1e-6)


def test_hinge_both_sides_and_half_squared_distance():
    centers = torch.tensor([[0.0, 0.0], [4.0, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    none = mk.F.triplet_center_loss(x, torch.tensor([0, 0]), centers, margin=1.0, reduction="none")
    # D = ½‖f − c‖²: sample 0: 0.5 + 1 - 4.5 < 0; sample 1: 2 + 1 - 2 = 1
    assert none.tolist() == [0.0, 1.0]


def test_single_centre_gives_zero_with_finite_grads():
    x = torch.randn(3, 2, requires_grad=True)
    c = torch.randn(1, 2, requires_grad=True)
    loss = mk.F.triplet_center_loss(x, torch.zeros(3, dtype=torch.long), c)
    loss.backward()
    assert loss.item() == 0 and torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(c.grad, torch.zeros_like(c))


def test_identical_embeddings_huge_values_and_half_precision():
    x = torch.zeros(4, 3, requires_grad=True)
    c = torch.zeros(2, 3, requires_grad=True)
    loss = mk.F.triplet_center_loss(x, torch.tensor([0, 1, 0, 1]), c, margin=0.25)
    loss.backward()
    assert loss.item() == 0.25 and torch.isfinite(x.grad).all() and torch.isfinite(c.grad).all()
    big = torch.randn(5, 3) * 1e15
    loss = mk.F.triplet_center_loss(big, torch.tensor([0, 1, 2, 0, 1]), torch.randn(3, 3) * 1e15)
    assert torch.isfinite(loss)
    g = torch.Generator().manual_seed(2)
    x, c, y = torch.randn(12, 6, generator=g), torch.randn(4, 6, generator=g), torch.arange(12) % 4
    for dtype in (torch.float16, torch.bfloat16):
        half = mk.F.triplet_center_loss(x.to(dtype), y, c)
        full = mk.F.triplet_center_loss(x.to(dtype).float(), y, c)
        assert half.dtype == dtype
        assert half.float().item() == pytest.approx(full.item(), rel=2e-2)


def test_module_has_learnable_centres_and_is_registered():
    torch.manual_seed(0)
    m = mk.losses.TripletCenterLoss(num_classes=5, embedding_dim=3, margin=0.5)
    assert isinstance(m.centers, torch.nn.Parameter) and m.centers.shape == (5, 3)
    x, y = torch.randn(8, 3), torch.randint(0, 5, (8,))
    assert torch.equal(m(x, y), mk.F.triplet_center_loss(x, y, m.centers, 0.5))
    m(x, y).backward()
    assert m.centers.grad is not None
    built = mk.losses.get_loss("triplet_center", num_classes=3, embedding_dim=2)
    assert isinstance(built, mk.losses.TripletCenterLoss) and built.centers.shape == (3, 2)


def test_bad_inputs():
    x, c = torch.randn(4, 2), torch.randn(3, 2)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\).*\[0, 3\]"):
        mk.F.triplet_center_loss(x, torch.tensor([0, 1, 2, 3]), c)
    with pytest.raises(ValueError, match=r"labels must be class ids in \[0, 3\)"):
        mk.F.triplet_center_loss(x, torch.tensor([0, -1, 2, 1]), c)
    with pytest.raises(ValueError, match=r"centers must be \[num_classes >= 1, 2\]"):
        mk.F.triplet_center_loss(x, torch.tensor([0, 1, 2, 1]), torch.randn(3, 5))
    with pytest.raises(ValueError, match="labels.*length 4, got 2"):
        mk.F.triplet_center_loss(x, torch.tensor([0, 1]), c)
    with pytest.raises(ValueError, match="margin"):
        mk.F.triplet_center_loss(x, torch.tensor([0, 1, 2, 1]), c, margin=-0.5)
    with pytest.raises(ValueError, match="num_classes"):
        mk.losses.TripletCenterLoss(0, 2)
    with pytest.raises(TypeError, match="embedding_dim"):
        mk.losses.TripletCenterLoss(2, 1.5)
