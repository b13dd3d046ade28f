import math

import numpy as np
import pytest
import torch

from metrickit.recsys.data import IdMap, from_arrays
from metrickit.recsys.models import MatrixFactorization
from metrickit.recsys.sampling import NegativeSampler
from metrickit.recsys.sparse import SPARSE_LOSSES
from metrickit.recsys.steps import harmonic, warp_step
from metrickit.recsys.train import LOSSES, FitConfig, fit


def _blocks(n_users=24, n_items=30, groups=3, seed=0):
    """Users of group g like a random half of group g's items: a learnable low-rank problem."""
    g = np.random.default_rng(seed)
    users, items = [], []
    per = n_items // groups
    for u in range(n_users):
        block = np.arange(per) + (u % groups) * per
        chosen = g.choice(block, per // 2, replace=False)
        users += [u] * len(chosen)
        items += chosen.tolist()
    return from_arrays(users, items, user_map=IdMap(range(n_users)),
                       item_map=IdMap(range(n_items)))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize(("optimizer", "engine"),
                         [("adagrad", "auto"), ("adagrad", "sparse"), ("adam", "auto")])
def test_each_loss_decreases_on_a_tiny_problem(loss, optimizer, engine):
    if engine == "sparse" and loss not in SPARSE_LOSSES:
        pytest.skip("the sparse engine trains the pairwise losses")
    data = _blocks()
    torch.manual_seed(0)
    model = MatrixFactorization(data.n_users, data.n_items, dim=8, init_std=0.1)
    lr = 0.1 if optimizer == "adagrad" else 0.02
    cfg = FitConfig(loss=loss, epochs=15, batch_size=32, lr=lr, optimizer=optimizer,
                    l2=1e-4, progress=False, engine=engine)
    hist = fit(model, data, cfg)
    losses = [h["loss"] for h in hist]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses
    # the model ranks an own-group item above an other-group item for most users
    scores = model.score_all(torch.arange(data.n_users))
    own = torch.stack([scores[u, (u % 3) * 10:(u % 3) * 10 + 10].mean() for u in range(24)])
    other = torch.stack([scores[u, ((u + 1) % 3) * 10:((u + 1) % 3) * 10 + 10].mean()
                         for u in range(24)])
    assert (own > other).float().mean() > 0.9


@pytest.mark.parametrize("engine", ["auto", "sparse", "autograd"])
def test_fit_is_reproducible_and_reports_epoch_callbacks(engine):
    data = _blocks()
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = MatrixFactorization(data.n_users, data.n_items, dim=4)
        cfg = FitConfig(epochs=2, batch_size=16, seed=5, progress=False, engine=engine)
        hist = fit(model, data, cfg, on_epoch=lambda e, m: {"twice": 2.0 * e})
        runs.append((model.user_weight.detach().clone(), hist))
    assert torch.equal(runs[0][0], runs[1][0])
    assert [h["twice"] for h in runs[0][1]] == [2.0, 4.0]
    assert runs[0][1][0]["loss"] == runs[1][1][0]["loss"]


def _ref_warp_terms(P, Q, users, items, cand, n_neg, margin):
    out = []
    for r in range(len(users)):
        u, i = users[r], items[r]
        s_pos = float(P[u, :-1] @ Q[i, :-1] + P[u, -1] + Q[i, -1])
        term = 0.0
        for n, j in enumerate(cand[r], start=1):
            s_neg = float(P[u, :-1] @ Q[j, :-1] + P[u, -1] + Q[j, -1])
            if s_neg > s_pos - margin:
                rank = max(1, n_neg[u] // n)
                term = sum(1 / t for t in range(1, rank + 1)) * (margin - s_pos + s_neg)
                break
        out.append(term)
    return np.array(out)


def test_warp_step_matches_brute_force_values_and_gradients():
    data = _blocks(n_users=6, n_items=12, groups=2)
    torch.manual_seed(0)
    model = MatrixFactorization(6, 12, dim=3, init_std=0.5).double()
    sampler = NegativeSampler(data)
    users, items = torch.as_tensor(data.user), torch.as_tensor(data.item)
    cand = sampler.sample(users, 5, torch.Generator().manual_seed(9))
    terms, _ = warp_step(model, sampler, users, items, 0.5, 5, torch.Generator().manual_seed(9))
    n_neg = 12 - data.user_counts()
    P, Q = model.user_weight.detach().numpy(), model.item_weight.detach().numpy()
    ref = _ref_warp_terms(P, Q, data.user, data.item, cand.numpy(), n_neg, 0.5)
    np.testing.assert_allclose(terms.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    assert (ref > 0).any()  # some rows found a violator

    def f(uw, iw):
        model.user_weight.data, model.item_weight.data = uw, iw
        t, _ = warp_step(model, sampler, users, items, 0.5, 5, torch.Generator().manual_seed(9))
        return t.sum()

    uw = model.user_weight.detach().clone().requires_grad_()
    iw = model.item_weight.detach().clone().requires_grad_()
    f(uw, iw).backward()
    # numeric gradient of the brute-force reference (same draws)
    eps = 1e-6
    num = np.zeros_like(P)
    for idx in np.ndindex(P.shape):
        hi, lo = P.copy(), P.copy()
        hi[idx] += eps
        lo[idx] -= eps
        num[idx] = (_ref_warp_terms(hi, Q, data.user, data.item, cand.numpy(), n_neg, 0.5).sum()
                    - _ref_warp_terms(lo, Q, data.user, data.item, cand.numpy(), n_neg,
                                      0.5).sum()) / (2 * eps)
    np.testing.assert_allclose(model.user_weight.grad.numpy(), num, atol=1e-6)


def test_harmonic_is_the_partial_sum():
    k = torch.arange(0, 50, dtype=torch.float64)
    want = torch.tensor([sum(1 / t for t in range(1, int(n) + 1)) for n in k],
                        dtype=torch.float64)
    torch.testing.assert_close(harmonic(k), want)


def test_sampled_softmax_masks_known_positives_in_batch():
    # two users share item 0 as a positive: it must not be a negative for either
    data = from_arrays([0, 1], [0, 0], user_map=IdMap(range(2)), item_map=IdMap(range(3)))
    torch.manual_seed(0)
    model = MatrixFactorization(2, 3, dim=2)
    hist = fit(model, data, FitConfig(loss="sampled_softmax", epochs=1, batch_size=2,
                                      progress=False))
    assert hist[0]["loss"] == pytest.approx(0.0, abs=1e-12)  # only the own item is left


def test_bad_config_and_inputs():
    data = _blocks()
    model = MatrixFactorization(data.n_users, data.n_items, dim=2)
    with pytest.raises(ValueError, match="loss must be one of"):
        fit(model, data, FitConfig(loss="ndcg"))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        fit(model, data, FitConfig(batch_size=0))
    with pytest.raises(ValueError, match="optimizer must be one of"):
        fit(model, data, FitConfig(optimizer="sgd"))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        fit(model, data, FitConfig(temperature=0.0))
    with pytest.raises(ValueError, match="model is for 24 users × 30 items"):
        fit(MatrixFactorization(24, 30), _blocks(n_items=33), FitConfig(progress=False))
