import numpy as np
import pytest
import scipy.sparse as sp
import torch

from metrickit.recsys.models import MatrixFactorization, TwoTower, build_features


def test_mf_scores_pairs_and_catalogue():
    torch.manual_seed(0)
    m = MatrixFactorization(5, 7, dim=3)
    with torch.no_grad():
        m.user_weight[:, 3] = torch.arange(5.0)
        m.item_weight[:, 3] = torch.arange(7.0) / 10
    u, i = torch.tensor([0, 4, 2]), torch.tensor([6, 0, 3])
    P, Q = m.user_weight[:, :3], m.item_weight[:, :3]
    want = (P[u] * Q[i]).sum(1) + u + i / 10
    torch.testing.assert_close(m(u, i), want)
    full = m.score_all(torch.arange(5))
    assert full.shape == (5, 7)
    torch.testing.assert_close(full[u, i], want.detach())
    many = m(u, torch.tensor([[1, 2], [3, 4], [5, 6]]))
    assert many.shape == (3, 2)
    torch.testing.assert_close(many[1, 0], full[4, 3])


def test_mf_without_bias():
    m = MatrixFactorization(2, 3, dim=4, bias=False)
    assert m.user_weight.shape == (2, 4)
    torch.testing.assert_close(m.score_all(torch.tensor([1]))[0], m.item_weight @ m.user_weight[1])


def test_two_tower_sums_feature_embeddings():
    torch.manual_seed(0)
    uf = sp.csr_matrix(np.array([[1, 0, 0.5], [0, 1, 0.5]], dtype=np.float32))
    itf = sp.csr_matrix(np.array([[1, 0], [0.3, 0.7], [0, 1]], dtype=np.float32))
    m = TwoTower(uf, itf, dim=4)
    with torch.no_grad():
        m.item_tower.weight[:, 4] = torch.tensor([1.0, -2.0])
    Eu, Ei = m.user_tower.weight[:, :4], m.item_tower.weight[:, :4]
    pu = torch.tensor(uf.toarray()) @ Eu
    qi = torch.tensor(itf.toarray()) @ Ei
    bi = torch.tensor(itf.toarray()) @ torch.tensor([1.0, -2.0])
    torch.testing.assert_close(m.score_all(torch.tensor([0, 1])), (pu @ qi.T + bi).detach())
    assert (m.n_users, m.n_items) == (2, 3)
    m(torch.tensor([0, 1]), torch.tensor([2, 1])).sum().backward()
    assert m.item_tower.weight.grad.abs().sum() > 0


def test_build_features_identity_and_multi_valued_columns():
    m, names = build_features(3, {"g": [["a", "b"], ["b"], []], "s": ["x", "y", "x"]})
    assert names[:3] == ["id=0", "id=1", "id=2"] and set(names[3:]) == {"g=a", "g=b", "s=x",
                                                                         "s=y"}
    dense = m.toarray()
    np.testing.assert_allclose(dense.sum(1), 1.0, rtol=1e-6)
    assert (dense[0] > 0).sum() == 4 and (dense[2] > 0).sum() == 2
    with pytest.raises(ValueError, match="has 2 rows, expected 3"):
        build_features(3, {"g": ["a", "b"]})


def test_bad_inputs():
    m = MatrixFactorization(3, 4)
    with pytest.raises(IndexError, match="items contains index 4, outside"):
        m(torch.tensor([0]), torch.tensor([4]))
    with pytest.raises(IndexError, match="users contains index -1"):
        m.score_all(torch.tensor([-1]))
    with pytest.raises(TypeError, match="integer tensor"):
        m(torch.tensor([0.0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        MatrixFactorization(3, 4, dim=0)
    with pytest.raises(ValueError, match="at least one feature"):
        TwoTower(sp.csr_matrix((2, 3)), sp.identity(2, format="csr"))
