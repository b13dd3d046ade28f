"""The row-sparse engine (closed-form gradients + LightFM's Adagrad) against autograd on the same
draws, and its optimizer against a plain-loop reference."""

import pytest
import torch

from metrickit.recsys.models import MatrixFactorization, TwoTower, build_features
from metrickit.recsys.sampling import NegativeSampler
from metrickit.recsys.sparse import SPARSE_LOSSES, RowAdagrad, row_grads, sparse_grad
from metrickit.recsys.train import FitConfig, _step, fit, numba_installed, resolve_engine
from recsys_checks import random_interactions


def _data(n_users=6, n_items=11, seed=0):
    return random_interactions(n_users, n_items, seed, max_per_user=7)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("loss", SPARSE_LOSSES)
def test_closed_form_gradients_equal_autograd_on_the_same_draws(loss, l2, bias):
    data = _data()
    torch.manual_seed(1)
    model = MatrixFactorization(data.n_users, data.n_items, dim=3, bias=bias,
                                init_std=0.7).double()
    sampler = NegativeSampler(data)
    cfg = FitConfig(loss=loss, l2=l2, n_negatives=3, max_sampled=4, kos_k=2, kos_n=3).validate()
    users = torch.as_tensor(data.user).repeat(3)  # duplicates of every user and item
    items = torch.as_tensor(data.item).repeat(3)
    g = sparse_grad(model, sampler, users, items, cfg, torch.Generator().manual_seed(7))
    terms, used = _step(model, sampler, users, items, cfg, None, torch.Generator().manual_seed(7))
    torch.testing.assert_close(g.terms, terms.detach())
    assert (g.terms > 0).any()
    # the sparse engine's loss is the autograd loss summed over the batch (B × its mean)
    total = terms.sum() + users.shape[0] * l2 * sum(v.pow(2).sum(-1).mean() for v in used)
    model.zero_grad()
    total.backward()
    gu, gq = row_grads(g, model, l2)
    dense_u = torch.zeros_like(model.user_weight).index_add_(0, g.users, gu)
    dense_i = torch.zeros_like(model.item_weight).index_add_(
        0, g.items.reshape(-1), gq.reshape(-1, gq.shape[-1]))
    torch.testing.assert_close(dense_u, model.user_weight.grad)
    torch.testing.assert_close(dense_i, model.item_weight.grad)


def test_row_adagrad_matches_a_plain_loop():
    torch.manual_seed(0)
    table = torch.randn(4, 3, dtype=torch.float64)
    rows = torch.tensor([2, 0, 2, 2, 3])
    grads = torch.randn(5, 3, dtype=torch.float64)
    expect, acc = table.clone().tolist(), [[1.0] * 3 for _ in range(4)]
    for r, gr in zip(rows.tolist(), grads.tolist(), strict=True):
        for c in range(3):
            acc[r][c] += gr[c] ** 2
    for r, gr in zip(rows.tolist(), grads.tolist(), strict=True):
        for c in range(3):
            expect[r][c] -= 0.1 * gr[c] / acc[r][c] ** 0.5
    opt = RowAdagrad(table, lr=0.1)
    opt.step(rows, grads)
    torch.testing.assert_close(table, torch.tensor(expect, dtype=torch.float64))
    torch.testing.assert_close(opt.acc, torch.tensor(acc, dtype=torch.float64))


def test_engine_is_explicit_and_auto_picks_sparse_only_where_it_applies():
    data = _data()
    mf = MatrixFactorization(data.n_users, data.n_items, dim=2)
    feats = build_features(data.n_users, {})[0], build_features(data.n_items, {})[0]
    tower = TwoTower(*feats, dim=2)
    assert resolve_engine(mf, FitConfig()) == ("numba" if numba_installed() else "sparse")
    assert resolve_engine(mf, FitConfig(engine="sparse")) == "sparse"
    assert resolve_engine(mf, FitConfig(optimizer="adam")) == "autograd"
    assert resolve_engine(mf, FitConfig(loss="sampled_softmax")) == "autograd"
    assert resolve_engine(tower, FitConfig()) == "autograd"
    assert resolve_engine(mf, FitConfig(engine="autograd")) == "autograd"
    with pytest.raises(ValueError, match="engine='sparse' needs a MatrixFactorization"):
        fit(tower, data, FitConfig(engine="sparse", progress=False))
    with pytest.raises(ValueError, match="engine"):
        fit(mf, data, FitConfig(engine="dense", progress=False))

