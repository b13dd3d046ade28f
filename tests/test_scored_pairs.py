"""Scored-pair losses (cosine_similarity, cosent, angle): loops, sentence-transformers, edges."""

import math

import numpy as np
import pytest
import torch

from metrickit.functional import angle_loss, cosent_loss, cosine_similarity_loss
from metrickit.losses import AnglELoss, CoSENTLoss, CosineSimilarityLoss
from reference import numeric_grad

REDUCTIONS = ("mean", "sum", "none")


def cos(x, y):
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))


def angle(x, y):
    """|Σ_k Re(z1 conj z2) + Im(z1 conj z2)| with complex z = first half + i·second half."""
    x, y = list(x), list(y)
    if len(x) % 2:
        x, y = x + [0.0], y + [0.0]
    nx, ny = math.sqrt(sum(v * v for v in x)), math.sqrt(sum(v * v for v in y))
    h = len(x) // 2
    total = 0.0
    for k in range(h):
        z1 = complex(x[k], x[h + k]) / nx
        z2 = complex(y[k], y[h + k]) / ny
        w = z1 * z2.conjugate()
        total += w.real + w.imag
    return abs(total)


def ref_ranking(x1, x2, score, scale, sim):
    sims = [sim(a, b) for a, b in zip(x1, x2, strict=True)]
    total = 1.0
    for i in range(len(sims)):
        for j in range(len(sims)):
            if score[i] < score[j]:
                total += math.exp(scale * (sims[i] - sims[j]))
    return math.log(total)


def ref_mse(x1, x2, score):
    return [(cos(a, b) - s) ** 2 for a, b, s in zip(x1, x2, score, strict=True)]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def t64(x, grad=False):
    return torch.tensor(np.asarray(x), dtype=torch.float64, requires_grad=grad)


RANKING = {"cosent": (cosent_loss, cos), "angle": (angle_loss, angle)}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", sorted(RANKING))
@pytest.mark.parametrize("d", [6, 5])
def test_ranking_losses_match_loops(reduction, name, d):
    fn, sim = RANKING[name]
    x1, x2 = rand(9, d, seed=1), rand(9, d, seed=2)
    score = np.array([0.1, 0.5, 0.5, 0.9, 0.0, 0.5, 1.0, 0.3, 0.1])  # ties are no pairs
    got = fn(t64(x1), t64(x2), t64(score), scale=3.0, reduction=reduction)
    want = ref_ranking(x1, x2, score, 3.0, sim)
    assert got.shape == ((1,) if reduction == "none" else ())
    assert got.sum().item() == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cosine_similarity_matches_loops(reduction):
    x1, x2, score = rand(7, 4, seed=3), rand(7, 4, seed=4), np.linspace(-1, 1, 7)
    got = cosine_similarity_loss(t64(x1), t64(x2), t64(score), reduction=reduction)
    terms = ref_mse(x1, x2, score)
    want = {"mean": np.mean(terms), "sum": np.sum(terms), "none": terms}[reduction]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12)


@pytest.mark.parametrize("name", ["cosent", "angle", "cosine_similarity"])
def test_float64_gradients_match_finite_differences(name):
    x1, x2 = rand(6, 4, seed=5), rand(6, 4, seed=6)
    score = np.array([0.2, 0.8, 0.2, 0.4, 1.0, 0.0])
    if name == "cosine_similarity":
        fn, ref = cosine_similarity_loss, lambda u, v: np.mean(ref_mse(u, v, score))
    else:
        fn = RANKING[name][0]
        ref = lambda u, v: ref_ranking(u, v, score, 2.0, RANKING[name][1])  # noqa: E731
    kwargs = {} if name == "cosine_similarity" else {"scale": 2.0}
    t1, t2 = t64(x1, True), t64(x2, True)
    fn(t1, t2, t64(score), **kwargs).backward()
    np.testing.assert_allclose(t1.grad.numpy(), numeric_grad(lambda v: ref(v, x2), x1),
                               atol=1e-7)
    np.testing.assert_allclose(t2.grad.numpy(), numeric_grad(lambda v: ref(x1, v), x2),
                               atol=1e-7)
    assert torch.autograd.gradcheck(lambda u, v: fn(u, v, t64(score), **kwargs),
                                    (t64(x1, True), t64(x2, True)))


@pytest.mark.parametrize("fn", [cosent_loss, angle_loss, cosine_similarity_loss])
def test_edges(fn):
    empty = torch.zeros(0, 4, requires_grad=True)
    out = fn(empty, empty, torch.zeros(0))
    out.backward()
    assert out.item() == 0
    one = torch.randn(1, 4)
    assert torch.isfinite(fn(one, one, torch.ones(1)))
    same = torch.ones(5, 4, requires_grad=True)
    out = fn(same, same, torch.linspace(0, 1, 5))
    out.backward()
    assert torch.isfinite(same.grad).all()
    for dtype in (torch.float16, torch.bfloat16):
        x1, x2, s = torch.randn(16, 8), torch.randn(16, 8), torch.rand(16)
        want = fn(x1.to(dtype).float(), x2.to(dtype).float(), s)
        got = fn(x1.to(dtype), x2.to(dtype), s.to(dtype))
        assert got.dtype == dtype and got.float().item() == pytest.approx(want.item(), rel=2e-2,
                                                                          abs=1e-3)


@pytest.mark.parametrize("fn", [cosent_loss, angle_loss])
def test_large_scale_stays_finite(fn):
    x1 = torch.randn(64, 8, dtype=torch.float64, requires_grad=True)
    x2, s = torch.randn(64, 8, dtype=torch.float64), torch.rand(64, dtype=torch.float64)
    out = fn(x1, x2, s, scale=1e5)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x1.grad).all() and out.item() > 100


def test_a_perfect_ranking_costs_almost_nothing():
    score = torch.linspace(0, 1, 8, dtype=torch.float64)
    # x2 at angles that grow as the score falls: cosines ordered like the scores
    x2 = torch.stack([torch.cos(1.5 * (1 - score)), torch.sin(1.5 * (1 - score))], 1)
    x1 = torch.zeros(8, 2, dtype=torch.float64)
    x1[:, 0] = 1
    assert cosent_loss(x1, x2, score, scale=2000.0).item() < 1e-6
    assert cosent_loss(x1, x2, score.flip(0), scale=200.0).item() > 10


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="scale must be a finite number > 0"):
        CoSENTLoss(scale=-1)
    with pytest.raises(TypeError, match="scale must be a real number"):
        AnglELoss(scale=True)
    with pytest.raises(ValueError, match="reduction must be one of"):
        CosineSimilarityLoss(reduction="avg")
    assert CoSENTLoss(scale=np.float32(20)).scale == 20.0
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="score must have one entry per pair"):
        cosent_loss(x, x, torch.rand(3))
    with pytest.raises(TypeError, match="score must be a floating-point tensor"):
        angle_loss(x, x, torch.arange(4))
    with pytest.raises(ValueError, match="same shape"):
        cosine_similarity_loss(x, x[:, :2], torch.rand(4))


# --- equality with sentence-transformers on identical inputs --------------------------------


@pytest.mark.parametrize("name", ["CoSENTLoss", "AnglELoss", "CosineSimilarityLoss"])
@pytest.mark.parametrize("d", [12, 7])
def test_equals_sentence_transformers(name, d):
    losses = pytest.importorskip(
        "sentence_transformers.sentence_transformer.losses",
        reason="sentence-transformers is not installed (pip install -e '.[dev]')")
    ours = {"CoSENTLoss": CoSENTLoss(), "AnglELoss": AnglELoss(),
            "CosineSimilarityLoss": CosineSimilarityLoss()}[name]
    g = torch.Generator().manual_seed(d)
    x1, x2 = (torch.randn(32, d, generator=g, dtype=torch.float64) for _ in range(2))
    # float32-exact scores with ties (ST casts CosineSimilarityLoss labels to float32)
    score = torch.randint(0, 5, (32,), generator=g).to(torch.float64) / 4
    ours_in = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
    st_in = [x1.clone().requires_grad_(), x2.clone().requires_grad_()]
    want = getattr(losses, name)(model=None).compute_loss_from_embeddings(st_in, score)
    got = ours(*ours_in, score)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-12, atol=1e-12)
    want.backward()
    got.backward()
    for x, y in zip(ours_in, st_in, strict=True):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-10, atol=1e-12)
