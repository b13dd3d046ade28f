import dataclasses
import functools

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

import metrickit as mk
import pair_checks as checks
import pair_reference
from metrickit import miners
from metrickit.losses import fastap

CASE = checks.LossCase(
    fn=mk.F.fastap_loss,
    module=mk.losses.FastAPLoss,
    name="fastap",
    reference=pair_reference.fastap,
    hyper=dict(num_bins=7),
    bad=[({"num_bins": 0}, ValueError, "num_bins"), ({"num_bins": 2.5}, TypeError, "num_bins"),
         ({"num_bins": True}, TypeError, "num_bins")],
)


class TestContract(checks.PairLossContract):
    CASE = CASE  # 7 bins: "auto" runs "threshold"


class TestContractScatter(checks.PairLossContract):
    CASE = dataclasses.replace(
        CASE, fn=functools.partial(mk.F.fastap_loss, algorithm="scatter"))

    def test_module_and_registry(self):
        x = torch.randn(10, 4)
        labels = torch.randint(0, 3, (10,))
        module = mk.losses.FastAPLoss(num_bins=7, algorithm="scatter")
        assert torch.equal(module(x, labels), self.CASE.fn(x, labels, num_bins=7))


@pytest.mark.parametrize("algorithm", ["threshold", "scatter"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pml(dtype, tol, algorithm):
    # PML: FastAPLoss(num_bins) with LpDistance(power=2) (its default normalises embeddings:
    # squared distances in [0, 4]) and MeanReducer over the anchors with a positive
    for bins in (10, 4):
        theirs = pml_losses.FastAPLoss(num_bins=bins, distance=pml_distances.LpDistance(power=2))
        checks.assert_equals_pml(
            lambda x, y, b=bins: mk.F.fastap_loss(x, y, num_bins=b, algorithm=algorithm),
            theirs, dtype, tol, True)


@pytest.mark.parametrize("num_bins", [1, 2, 7, 10, 12, 13, 40])
def test_algorithms_agree(num_bins):
    # both algorithms on a batch whose positives fill many bins (a class spread out, a class
    # clustered), with references and with mined pairs; "auto" is "threshold" up to 12 bins
    g = torch.Generator().manual_seed(num_bins)
    labels = torch.randint(0, 5, (40,), generator=g)
    x = torch.randn(40, 6, dtype=torch.float64, generator=g)
    x[labels == 0] = x[labels == 0] * 0.1 + torch.randn(6, dtype=torch.float64, generator=g)
    memory = torch.randn(30, 6, dtype=torch.float64, generator=g)
    calls = {
        "batch": {},
        "references": dict(ref_embeddings=torch.cat([x, memory]),
                           ref_labels=torch.cat([labels, torch.randint(0, 5, (30,))]),
                           ref_offset=0),
        "mined": dict(indices_tuple=miners.MultiSimilarityMiner(epsilon=0.2)(x, labels)),
    }
    for name, kw in calls.items():
        results = {}
        for algorithm in ("threshold", "scatter", "auto"):
            leaf = x.clone().requires_grad_(True)
            loss = mk.F.fastap_loss(leaf, labels, num_bins, "none", algorithm=algorithm, **kw)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
            results[algorithm] = (loss.detach(), grad)
        auto = results.pop("auto")
        chosen = results["threshold" if num_bins <= fastap.THRESHOLD_MAX_BINS else "scatter"]
        assert torch.equal(auto[0], chosen[0]) and torch.equal(auto[1], chosen[1]), name
        (loss_t, grad_t), (loss_s, grad_s) = results.values()
        torch.testing.assert_close(loss_t, loss_s, rtol=1e-12, atol=1e-14, msg=name)
        torch.testing.assert_close(grad_t, grad_s, rtol=1e-10, atol=1e-13, msg=name)
        assert loss_t.gt(0).any() and grad_t.abs().sum() > 0, name


def test_bad_algorithm():
    x, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="algorithm must be one of"):
        mk.F.fastap_loss(x, labels, algorithm="sorted")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        mk.losses.FastAPLoss(algorithm="dense")
    assert torch.equal(mk.losses.FastAPLoss(algorithm="scatter")(x, labels),
                       mk.F.fastap_loss(x, labels, algorithm="scatter"))


@pytest.mark.parametrize("algorithm", ["threshold", "scatter"])
def test_duplicated_and_opposite_embeddings_match_reference(algorithm):
    # duplicates put d² at 0 (here S rounds to just above 1 for the negative pairs (1, 6) and
    # (4, 9), beyond the clamp) and opposite rows at 4 (the last bin's upper end): the dense
    # binning's edge slots
    g = torch.Generator().manual_seed(10)
    base = torch.randn(5, 6, dtype=torch.float64, generator=g)
    near = base[1:2] + 0.01 * torch.randn(1, 6, dtype=torch.float64, generator=g)
    emb = torch.cat([base, base[:2] * 2, -base[2:4], base[4:] * 3, near])
    labels = torch.tensor([0, 1, 2, 3, 0, 0, 2, 0, 3, 2, 1])  # row 10: 1's positive in bin 0
    x = emb.clone().requires_grad_(True)
    ours = mk.F.fastap_loss(x, labels, num_bins=5, reduction="none", algorithm=algorithm)
    x_ref = emb.clone().requires_grad_(True)
    ref = checks.expected(CASE, x_ref, labels, "none", num_bins=5)
    checks.assert_close(ours, ref, 1e-10)
    mask = torch.ones(11, dtype=torch.bool)
    mask[[2, 3, 7, 8]] = False  # rows at d² = 4 exactly: a kink, the reference's subgradient
    (g_ours,) = torch.autograd.grad(ours[mask].sum(), x)
    (g_ref,) = torch.autograd.grad(ref[mask].sum(), x_ref)
    assert torch.isfinite(g_ours).all()
    checks.assert_close(g_ours, g_ref, 1e-7)


@pytest.mark.parametrize("algorithm", ["threshold", "scatter"])
@pytest.mark.parametrize("mined", [False, True])
def test_any_bin_block_gives_the_one_block_loss(mined, algorithm, monkeypatch):
    # the dense binning runs in sub-blocks of BIN_BLOCK_ELEMENTS within each row block
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 4, (15,), generator=g)
    x = torch.randn(15, 5, dtype=torch.float64, generator=g)
    pairs = miners.MultiSimilarityMiner(epsilon=0.2)(x, labels) if mined else None
    results = []
    for elements in (1 << 20, 1, 20, 45):  # one sub-block; 1, 1 and 3 rows per sub-block
        monkeypatch.setattr(fastap, "BIN_BLOCK_ELEMENTS", elements)
        leaf = x.clone().requires_grad_(True)
        loss = mk.F.fastap_loss(leaf, labels, reduction="none", indices_tuple=pairs,
                                algorithm=algorithm)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        results.append((loss.detach(), grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])
    assert results[0][1].abs().sum() > 0
