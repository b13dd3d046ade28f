import warnings

import numpy as np
import pytest
import torch

import metrickit as mk
from conftest import t64
from reference import numeric_grad, symmetric_triplet_terms


def _data(seed=0, n=8):
    g = np.random.default_rng(seed)
    a, p, n_ = (g.normal(size=(n, 3)) for _ in range(3))
    return a, p, n_, np.array([1, 0, 1, 1, 0, 0, 1, 0][:n])


FORMS = {"hinge": {}, "soft": {"soft": True}, "raw": {"hinge": False}}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_value_and_grad_match_reference(form, reduction):
    a, p, n, y = _data()
    hinge, soft = form == "hinge", form == "soft"
    ref = np.array(symmetric_triplet_terms(a, p, n, y, 2.0, hinge, soft))
    if hinge:
        assert (ref == 0).any() and (ref > 0).any()  # both sides of the hinge are exercised
    agg = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[reduction]
    ts = [t64(v, True) for v in (a, p, n)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the raw form's old keyword
        loss = mk.F.symmetric_triplet_loss(*ts, torch.tensor(y), 2.0, reduction=reduction,
                                           **FORMS[form])
    np.testing.assert_allclose(loss.detach().numpy(), agg(ref), rtol=1e-10, atol=1e-12)
    loss.sum().backward()
    arrays = [a, p, n]
    for i, t in enumerate(ts):

        def f(v, i=i):
            args = [v if j == i else arrays[j] for j in range(3)]
            return np.sum(agg(np.array(symmetric_triplet_terms(*args, y, 2.0, hinge, soft))))

        np.testing.assert_allclose(t.grad.numpy(), numeric_grad(f, arrays[i]), atol=1e-6)


def test_raw_form_is_unbounded_below_and_hinge_clamps():
    a = torch.zeros(1, 2, dtype=torch.float64)
    p = torch.zeros(1, 2, dtype=torch.float64)
    n = torch.tensor([[10.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1])
    # label 1: 2*0 - 100 - 100 + 1
    with pytest.warns(DeprecationWarning, match="hinge= is deprecated"):
        assert mk.F.symmetric_triplet_loss(a, p, n, y, hinge=False).item() == -199.0
    with pytest.warns(DeprecationWarning, match="hinge= is deprecated"):
        assert mk.F.symmetric_triplet_loss(a, p, n, y, hinge=True).item() == 0.0
    assert mk.F.symmetric_triplet_loss(a, p, n, y).item() == 0.0
    # label 0 swaps the roles of positive and negative: 2*100 - 100 - 0 + 1
    assert mk.F.symmetric_triplet_loss(a, p, n, torch.tensor([0])).item() == 101.0


def test_label_dtypes_agree():
    a, p, n, y = _data(1)
    args = [t64(v) for v in (a, p, n)]
    ref = mk.F.symmetric_triplet_loss(*args, torch.tensor(y))
    for lab in (torch.tensor(y).bool(), torch.tensor(y).float()):
        assert torch.equal(mk.F.symmetric_triplet_loss(*args, lab), ref)


def test_identical_embeddings_and_half_precision():
    x = torch.ones(4, 3, requires_grad=True)
    loss = mk.F.symmetric_triplet_loss(x, x, x, torch.tensor([1, 0, 1, 0]), margin=0.5)
    loss.backward()
    assert loss.item() == 0.5 and torch.isfinite(x.grad).all()
    a, p, n = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 2
    for dtype in (torch.float16, torch.bfloat16):
        half = mk.F.symmetric_triplet_loss(a.to(dtype), p.to(dtype), n.to(dtype), y)
        full = mk.F.symmetric_triplet_loss(*(v.to(dtype).float() for v in (a, p, n)), y)
        assert half.dtype == dtype
        assert half.float().item() == pytest.approx(full.item(), rel=2e-2)


def test_module_equals_functional():
    a, p, n = torch.randn(3, 5, 4)
    y = torch.tensor([1, 0, 0, 1, 1])
    with pytest.warns(DeprecationWarning, match="hinge= is deprecated"):
        m = mk.losses.SymmetricTripletLoss(margin=0.3, hinge=False, reduction="none")
    with pytest.warns(DeprecationWarning):
        want = mk.F.symmetric_triplet_loss(a, p, n, y, 0.3, reduction="none", hinge=False)
    assert torch.equal(m(a, p, n, y), want)
    m = mk.losses.SymmetricTripletLoss(margin=0.3, soft=True, reduction="none")
    assert torch.equal(m(a, p, n, y), mk.F.symmetric_triplet_loss(a, p, n, y, 0.3, True, "none"))
    assert "symmetric_triplet" not in mk.losses.list_losses()


def test_bad_inputs():
    a, p, n = torch.randn(3, 4, 2)
    y = torch.tensor([1, 0, 1, 0])
    with pytest.raises(ValueError, match="label must contain only 0 and 1"):
        mk.F.symmetric_triplet_loss(a, p, n, torch.tensor([1, 2, 0, 0]))
    with pytest.raises(ValueError, match="label must be 1-D.*got shape \\(3,\\)"):
        mk.F.symmetric_triplet_loss(a, p, n, y[:3])
    with pytest.raises(ValueError, match="anchor.*positive.*negative"):
        mk.F.symmetric_triplet_loss(a, p, torch.randn(4, 3), y)
    with pytest.raises(ValueError, match="margin"):
        mk.F.symmetric_triplet_loss(a, p, n, y, margin=-1)
    with pytest.raises(ValueError, match="reduction"):
        mk.F.symmetric_triplet_loss(a, p, n, y, reduction="mean_over_batch")
    with pytest.raises(TypeError, match="soft must be a bool"):
        mk.F.symmetric_triplet_loss(a, p, n, y, soft="False")
    with pytest.raises(TypeError, match="soft must be a bool"):
        mk.losses.SymmetricTripletLoss(soft=1)
    with pytest.raises(TypeError, match="label must be a torch.Tensor"):
        mk.F.symmetric_triplet_loss(a, p, n, [1, 0, 1, 0])
