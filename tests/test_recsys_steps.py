"""k-OS WARP and sampled softmax steps against brute-force references (plain Python loops):
values and float64 gradients, on the same draws."""

import math

import numpy as np
import pytest
import torch

from metrickit.recsys.data import IdMap, from_arrays
from metrickit.recsys.models import MatrixFactorization
from metrickit.recsys.sampling import NegativeSampler
from metrickit.recsys.steps import kos_positives, softmax_step, warp_kos_step
from metrickit.recsys.train import FitConfig, fit
from recsys_checks import random_interactions


def _data(n_users=5, n_items=9, seed=0):
    return random_interactions(n_users, n_items, seed, max_per_user=6)


def _model(data, dim=3, seed=0):
    torch.manual_seed(seed)
    return MatrixFactorization(data.n_users, data.n_items, dim=dim, init_std=0.7).double()


def _score(P, Q, u, i):
    return sum(P[u][d] * Q[i][d] for d in range(len(P[u]) - 1)) + P[u][-1] + Q[i][-1]


def test_sample_positives_draws_only_positives_with_lightfm_counts():
    data = _data()
    sampler = NegativeSampler(data)
    users = torch.arange(data.n_users).repeat_interleave(200)
    drawn, m = sampler.sample_positives(users, 4, torch.Generator().manual_seed(0))
    assert sampler.is_positive(users[:, None], drawn).all()
    np.testing.assert_array_equal(m.numpy(), np.minimum(4, data.user_counts()[users.numpy()]))
    # every positive of user 0 is drawn, about equally often
    csr = data.to_csr()
    got = np.bincount(drawn[users == 0].reshape(-1).numpy(), minlength=data.n_items)
    own = csr[0].indices
    assert set(np.flatnonzero(got)) == set(own.tolist())
    assert got[own].min() > 0.6 * got[own].mean()


@pytest.mark.parametrize("k", [1, 2, 5])
def test_kos_positives_is_the_kth_best_of_the_counted_draws(k):
    data = _data()
    model = _model(data)
    sampler = NegativeSampler(data)
    users = torch.as_tensor(data.user)
    picked = kos_positives(model, sampler, users, k, 4, torch.Generator().manual_seed(3))
    drawn, m = sampler.sample_positives(users, 4, torch.Generator().manual_seed(3))
    P, Q = model.user_weight.tolist(), model.item_weight.tolist()
    for r, u in enumerate(users.tolist()):
        counted = drawn[r, : int(m[r])].tolist()
        ranked = sorted(counted, key=lambda i, u=u: -_score(P, Q, u, i))  # stable: draw order
        assert picked[r].item() == ranked[min(k, len(counted)) - 1]


def _check_grads(model, terms, P, Q, reference, eps=1e-6):
    """float64 autograd gradients of Σ terms = central differences of the reference (a
    function of the nested lists P, Q, which are perturbed in place)."""
    model.zero_grad()
    terms.sum().backward()
    for table, grad in ((P, model.user_weight.grad), (Q, model.item_weight.grad)):
        num = np.zeros(grad.shape)
        for a, b in np.ndindex(grad.shape):
            old = table[a][b]
            table[a][b] = old + eps
            hi = reference()
            table[a][b] = old - eps
            lo = reference()
            table[a][b] = old
            num[a, b] = (hi - lo) / (2 * eps)
        np.testing.assert_allclose(grad.numpy(), num, atol=1e-6)


def _ref_warp(P, Q, users, pos, cand, n_neg, margin):
    terms = []
    for r, u in enumerate(users):
        s_pos = _score(P, Q, u, pos[r])
        term = 0.0
        for n, j in enumerate(cand[r], start=1):
            s_neg = _score(P, Q, u, j)
            if s_neg > s_pos - margin:
                rank = max(1, n_neg[u] // n)
                term = sum(1 / t for t in range(1, rank + 1)) * (margin - s_pos + s_neg)
                break
        terms.append(term)
    return terms


def test_warp_kos_step_matches_brute_force_values_and_float64_gradients():
    data = _data(n_users=6, n_items=10, seed=1)
    model = _model(data, seed=1)
    sampler = NegativeSampler(data)
    users = torch.as_tensor(data.user)
    margin, k, n, m = 0.5, 2, 3, 4
    g = torch.Generator().manual_seed(11)
    pos = kos_positives(model, sampler, users, k, n, g)
    cand = sampler.sample(users, m, g)
    terms, _ = warp_kos_step(model, sampler, users, k, n, margin, m,
                             torch.Generator().manual_seed(11))
    n_neg = (data.n_items - data.user_counts()).tolist()
    P, Q = model.user_weight.tolist(), model.item_weight.tolist()
    ref = _ref_warp(P, Q, users.tolist(), pos.tolist(), cand.tolist(), n_neg, margin)
    np.testing.assert_allclose(terms.detach().numpy(), ref, rtol=1e-12, atol=1e-12)
    assert sum(t > 0 for t in ref) >= 3
    _check_grads(model, terms, P, Q, lambda: sum(
        _ref_warp(P, Q, users.tolist(), pos.tolist(), cand.tolist(), n_neg, margin)))


def _ref_softmax(P, Q, users, items, cand, log_q, positives, temperature, correct, in_batch):
    out = []
    for r, u in enumerate(users):
        def logit(i, u=u):
            s = (sum(P[u][d] * Q[i][d] for d in range(len(P[u]) - 1)) + Q[i][-1]) / temperature
            return s - log_q[i] if correct else s
        pos = logit(items[r])
        others = [j for c, j in enumerate(cand)
                  if not (in_batch and c == r) and j not in positives[u]]
        z = math.exp(pos) + sum(math.exp(logit(j)) for j in others)
        out.append(-(pos - math.log(z)))
    return out


@pytest.mark.parametrize("negatives", ["in_batch", "sampled"])
@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
@pytest.mark.parametrize("correct", [True, False])
def test_softmax_step_matches_brute_force_values_and_float64_gradients(
    negatives, strategy, correct
):
    data = _data(n_users=6, n_items=10, seed=2)
    model = _model(data, seed=2)
    sampler = NegativeSampler(data, strategy, alpha=0.75)
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])
    users, items = torch.as_tensor(data.user)[rows], torch.as_tensor(data.item)[rows]
    pop = sampler.popularity.double()
    in_batch_log_q = torch.log(pop.clamp_min(1) / pop.sum())
    temperature, n_sampled = 0.7, 6

    def step():
        return softmax_step(model, sampler, users, items, negatives, n_sampled, temperature,
                            correct, True, in_batch_log_q, torch.Generator().manual_seed(5))

    terms, _ = step()
    if negatives == "in_batch":
        cand, log_q = items.tolist(), in_batch_log_q.tolist()
    else:
        cand = sampler.draw(n_sampled, torch.Generator().manual_seed(5)).tolist()
        log_q = sampler.log_proposal().double().tolist()
        q = np.exp(log_q)
        want = (data.item_counts() ** 0.75 if strategy == "popularity"
                else np.ones(data.n_items))
        np.testing.assert_allclose(q, want / want.sum(), rtol=1e-6)
    positives = [set(data.to_csr()[u].indices.tolist()) for u in range(data.n_users)]
    P, Q = model.user_weight.tolist(), model.item_weight.tolist()
    args = (users.tolist(), items.tolist(), cand, log_q, positives, temperature, correct,
            negatives == "in_batch")
    ref = _ref_softmax(P, Q, *args)
    np.testing.assert_allclose(terms.detach().numpy(), ref, rtol=1e-6, atol=1e-9)
    _check_grads(model, terms, P, Q, lambda: sum(_ref_softmax(P, Q, *args)))


def test_sampled_softmax_and_warp_kos_learn_a_block_problem():
    g = np.random.default_rng(0)
    users, items = [], []
    for u in range(24):
        block = np.arange(10) + (u % 3) * 10
        chosen = g.choice(block, 5, replace=False)
        users += [u] * 5
        items += chosen.tolist()
    data = from_arrays(users, items, user_map=IdMap(range(24)), item_map=IdMap(range(30)))
    for cfg in (FitConfig(loss="sampled_softmax", softmax_negatives="sampled", n_sampled=16,
                          sampler="popularity", lr=0.1),
                FitConfig(loss="warp_kos", kos_k=2, kos_n=4, lr=0.1)):
        torch.manual_seed(0)
        model = MatrixFactorization(24, 30, dim=8)
        cfg.epochs, cfg.batch_size, cfg.progress, cfg.threads = 15, 32, False, 1
        hist = fit(model, data, cfg)
        assert hist[-1]["loss"] < 0.7 * hist[0]["loss"], hist
        scores = model.score_all(torch.arange(24))
        own = torch.stack([scores[u, (u % 3) * 10:(u % 3) * 10 + 10].mean() for u in range(24)])
        other = torch.stack([scores[u, ((u + 1) % 3) * 10:((u + 1) % 3) * 10 + 10].mean()
                             for u in range(24)])
        assert (own > other).float().mean() > 0.9, cfg.loss


def test_new_options_are_validated():
    for bad, match in ((dict(kos_k=0), "kos_k must be a positive integer"),
                       (dict(kos_n=1.5), "kos_n must be a positive integer"),
                       (dict(n_sampled=0), "n_sampled must be a positive integer"),
                       (dict(softmax_negatives="all"), "softmax_negatives must be one of")):
        with pytest.raises(ValueError, match=match):
            FitConfig(**bad).validate()
