"""The compiled (numba) engine against the sparse engine on the same draws, and its sampler
against the NegativeSampler's distributions."""

import numpy as np
import pytest
import torch

from metrickit.recsys.data import IdMap, from_arrays
from metrickit.recsys.models import MatrixFactorization, TwoTower, build_features
from metrickit.recsys.sampling import NegativeSampler
from metrickit.recsys.sparse import SPARSE_LOSSES, RowAdagrad, apply, sparse_grad
from metrickit.recsys.train import FitConfig, fit, resolve_engine
from recsys_checks import random_interactions

compiled = pytest.importorskip("metrickit.recsys.compiled")


class FixedDraws:
    """A NegativeSampler whose draws are given (the compiled step's, for the same seed)."""

    def __init__(self, sampler: NegativeSampler, negatives: torch.Tensor,
                 positives: torch.Tensor | None) -> None:
        self.sampler, self.negatives, self.positives = sampler, negatives, positives

    def sample(self, users, n=1, generator=None):
        assert n <= self.negatives.shape[1]
        return self.negatives[:, :n]

    def sample_positives(self, users, n, generator=None):
        return self.positives[:, :n], self.sampler._degree[users].clamp_max(n)

    def n_negatives(self, users):
        return self.sampler.n_negatives(users)


def _data():
    return random_interactions(7, 13, seed=0, max_per_user=9)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("loss", SPARSE_LOSSES)
@pytest.mark.parametrize("strategy", ["uniform", "popularity"])
def test_compiled_step_updates_as_the_sparse_engine_on_the_same_draws(loss, l2, bias, strategy):
    data = _data()
    torch.manual_seed(1)
    model = MatrixFactorization(data.n_users, data.n_items, dim=3, bias=bias,
                                init_std=0.7).double()
    twin = MatrixFactorization(data.n_users, data.n_items, dim=3, bias=bias).double()
    twin.load_state_dict(model.state_dict())
    sampler = NegativeSampler(data, strategy)
    cfg = FitConfig(loss=loss, l2=l2, n_negatives=3, max_sampled=4, kos_k=2, kos_n=5,
                    margin=0.5).validate()
    users = torch.as_tensor(data.user).repeat(3)  # duplicates of every user and item
    items = torch.as_tensor(data.item).repeat(3)
    step = compiled.CompiledStep(model, sampler, cfg, lr=0.2)
    opts = RowAdagrad(twin.user_weight, 0.2), RowAdagrad(twin.item_weight, 0.2)
    moved = False
    for seed in (11, 12):  # the second step starts from updated tables and accumulators
        m = cfg.max_sampled if "warp" in loss else cfg.n_negatives
        draws = FixedDraws(sampler, compiled.negatives(sampler, users, m, seed),
                           compiled.kos_positives(sampler, users, cfg.kos_n, seed))
        g = sparse_grad(twin, draws, users, items, cfg, None)
        apply(g, twin, *opts, l2)
        terms = step(users, items, seed)
        torch.testing.assert_close(terms, g.terms)
        moved |= bool((g.terms > 0).any())
    assert moved
    torch.testing.assert_close(model.user_weight, twin.user_weight)
    torch.testing.assert_close(model.item_weight, twin.item_weight)
    torch.testing.assert_close(step.acc_u, opts[0].acc)
    torch.testing.assert_close(step.acc_v, opts[1].acc)


def test_compiled_negatives_are_never_positives_and_uniform_over_the_rest():
    # user 0 owns 10 of 12 items: most draws hit a positive and need the exact replacement
    users = [0] * 10 + [1, 1, 2]
    items = list(range(10)) + [3, 11, 5]
    data = from_arrays(users, items, user_map=IdMap(range(3)), item_map=IdMap(range(12)))
    sampler = NegativeSampler(data)
    draws = compiled.negatives(sampler, torch.tensor([0, 1, 2]), 6000, seed=3)
    for u, own in enumerate([set(range(10)), {3, 11}, {5}]):
        counts = np.bincount(draws[u].numpy(), minlength=12)
        assert not any(counts[j] for j in own)
        rest = counts[[j for j in range(12) if j not in own]]
        expect = 6000 / len(rest)
        assert ((rest - expect) ** 2 / expect).sum() < 40, rest  # chi², p ≈ 1e-4 at 11 df
    assert torch.equal(draws, compiled.negatives(sampler, torch.tensor([0, 1, 2]), 6000, 3))
    assert not torch.equal(draws, compiled.negatives(sampler, torch.tensor([0, 1, 2]), 6000, 4))
    plain = compiled.negatives(NegativeSampler(data, exclude_positives=False),
                               torch.tensor([0]), 3000, seed=3)
    assert np.bincount(plain[0].numpy(), minlength=12)[:10].sum() > 2000  # positives allowed


def test_compiled_popularity_draws_follow_the_weights():
    users = [0, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    items = [0, 0, 1, 0, 1, 2, 0, 1, 2, 3]
    data = from_arrays(users, items, user_map=IdMap(range(5)), item_map=IdMap(range(5)))
    sampler = NegativeSampler(data, "popularity", exclude_positives=False, alpha=1.0)
    draws = compiled.negatives(sampler, torch.tensor([4]), 20000, seed=0)[0].numpy()
    freq = np.bincount(draws, minlength=5) / 20000
    np.testing.assert_allclose(freq, [0.4, 0.3, 0.2, 0.1, 0.0], atol=0.015)


def test_binary_search_membership_draws_as_the_bitset(monkeypatch):
    data = random_interactions(9, 70, seed=2, max_per_user=60)  # rows over several words
    sampler = NegativeSampler(data, "popularity")
    users = torch.arange(9).repeat(5)
    with_bits = compiled.negatives(sampler, users, 50, seed=8)
    monkeypatch.setattr(compiled, "_BITS_MAX", 0)
    assert compiled.SamplerArrays(sampler).bits.shape[1] == 0
    torch.testing.assert_close(compiled.negatives(sampler, users, 50, seed=8), with_bits)
    assert not sampler.is_positive(users[:, None], with_bits).any()


def test_auto_picks_numba_where_it_applies_and_numba_is_explicit(monkeypatch):
    import metrickit.recsys.train as train

    data = _data()
    mf = MatrixFactorization(data.n_users, data.n_items, dim=2)
    feats = build_features(data.n_users, {})[0], build_features(data.n_items, {})[0]
    assert resolve_engine(mf, FitConfig()) == "numba"
    assert resolve_engine(mf, FitConfig(engine="sparse")) == "sparse"
    assert resolve_engine(mf, FitConfig(loss="sampled_softmax")) == "autograd"
    with pytest.raises(ValueError, match="engine='numba' needs a MatrixFactorization"):
        fit(TwoTower(*feats, dim=2), data, FitConfig(engine="numba", progress=False))
    monkeypatch.setattr(train, "numba_installed", lambda: False)
    assert resolve_engine(mf, FitConfig()) == "sparse"
    with pytest.raises(ValueError, match="needs the numba package"):
        fit(mf, data, FitConfig(engine="numba", progress=False))
