import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import metrickit as mk
from conftest import random_batch
from reference import (
    batch_hard_triplet_list,
    offline_triplet_list,
    pair_lists,
    semihard_triplet_list,
    triplet_difficulty_counts,
    triplet_list,
)

miners = mk.miners


def _tuples(*idx):
    return [tuple(int(v) for v in row) for row in zip(*idx, strict=True)]


def test_all_pairs_match_reference(layout):
    a1, p, a2, n = miners.all_pairs(torch.tensor(layout))
    pos, neg = pair_lists(layout)
    assert _tuples(a1, p) == pos and _tuples(a2, n) == neg
    assert a1.dtype == torch.int64


def test_all_triplets_match_reference(layout):
    got = _tuples(*miners.all_triplets(torch.tensor(layout)))
    assert got == triplet_list(layout)  # same set, and sorted by (a, p, n)


def test_all_triplets_count_for_p_by_k():
    p, k = 4, 3
    a, _, _ = miners.all_triplets(torch.arange(p * k) // k)
    assert a.numel() == p * k * (k - 1) * (p * k - k)


def test_batch_hard_and_semihard_match_reference(layout):
    emb = random_batch(layout, seed=11)
    x, labels = torch.tensor(emb), torch.tensor(layout)
    assert set(_tuples(*miners.batch_hard_triplets(x, labels))) == set(
        batch_hard_triplet_list(emb, layout)
    )
    assert set(_tuples(*miners.semihard_triplets(x, labels))) == set(
        semihard_triplet_list(emb, layout)
    )


def test_semihard_triplets_are_the_ones_the_loss_uses():
    layout = [0, 0, 0, 1, 1, 2, 2, 2]
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor(layout)
    a, p, n = miners.semihard_triplets(x, labels)
    terms = mk.F.triplet_margin_loss(x[a], x[p], x[n], margin=0.3, reduction="none")
    loss = mk.F.batch_triplet_loss(x, labels, 0.3, "semihard", reduction="none")
    torch.testing.assert_close(terms, loss)
    a, p, n = miners.batch_hard_triplets(x, labels)
    terms = mk.F.triplet_margin_loss(x[a], x[p], x[n], margin=0.3, reduction="none")
    loss = mk.F.batch_triplet_loss(x, labels, 0.3, "hard", reduction="none")
    torch.testing.assert_close(terms, loss)


@pytest.mark.parametrize("margin", [0.0, 0.3, 1.0, 5.0])
@pytest.mark.parametrize("squared", [False, True])
def test_difficulty_matches_reference(layout, margin, squared):
    emb = random_batch(layout, seed=12)
    x, labels = torch.tensor(emb), torch.tensor(layout)
    got = miners.triplet_difficulty(x, labels, margin, squared=squared)
    kind = "squared_euclidean" if squared else "euclidean"
    ref = triplet_difficulty_counts(emb, layout, margin, kind)
    assert {k: v.item() for k, v in got.items()} == ref
    assert all(v.dim() == 0 and v.dtype == torch.int64 for v in got.values())


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 2), min_size=1, max_size=9),
    data=st.data(),
    margin=st.sampled_from([0.0, 1.0, 2.0, 0.5]),
)
def test_difficulty_on_grid_with_ties(labels, data, margin):
    coords = data.draw(st.lists(st.integers(-3, 3), min_size=len(labels), max_size=len(labels)))
    emb = np.array(coords, dtype=float)[:, None]
    got = miners.triplet_difficulty(torch.tensor(emb), torch.tensor(labels), margin)
    got = {k: v.item() for k, v in got.items()}
    assert got == triplet_difficulty_counts(emb, labels, margin)
    assert got["easy"] + got["semihard"] + got["hard"] == got["total"]


def test_hard_plus_semihard_is_the_number_of_active_triplets():
    layout = [0, 0, 0, 1, 1, 1, 2, 2]
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    counts = miners.triplet_difficulty(x, torch.tensor(layout), 0.7)
    a, p, n = miners.all_triplets(torch.tensor(layout))
    active = mk.F.triplet_margin_loss(x[a], x[p], x[n], 0.7, reduction="none") > 0
    assert (counts["hard"] + counts["semihard"]).item() == active.sum().item()


@pytest.mark.parametrize("strategy", ["hard", "semihard"])
def test_offline_matches_reference(strategy):
    layout = list(np.random.default_rng(0).integers(0, 5, size=40))
    emb = random_batch(layout, dim=3, seed=13)
    got = miners.mine_offline(torch.tensor(emb), torch.tensor(layout), strategy, margin=0.5)
    assert _tuples(*got) == offline_triplet_list(emb, layout, strategy, 0.5)


@settings(max_examples=40, deadline=None)
@given(
    labels=st.lists(st.integers(0, 2), min_size=1, max_size=10),
    data=st.data(),
    strategy=st.sampled_from(["hard", "semihard"]),
    chunk=st.integers(1, 4),
)
def test_offline_on_grid_with_ties(labels, data, strategy, chunk):
    # exact integer distances: the strict d(a,p) < d(a,n) < d(a,p) + m bounds and the
    # lowest-index tie rule are exercised
    coords = data.draw(st.lists(st.integers(-3, 3), min_size=len(labels), max_size=len(labels)))
    emb = np.array(coords, dtype=float)[:, None]
    x, lab = torch.tensor(emb), torch.tensor(labels)
    got = miners.mine_offline(x, lab, strategy, 2.0, chunk_size=chunk)
    assert _tuples(*got) == offline_triplet_list(emb, labels, strategy, 2.0)


@pytest.mark.parametrize("strategy", ["hard", "semihard"])
def test_offline_does_not_depend_on_chunk_size(strategy):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(500, 8, generator=g)
    labels = torch.randint(0, 20, (500,), generator=g)
    whole = miners.mine_offline(x, labels, strategy, margin=0.3, chunk_size=1024)
    for chunk in (1, 7, 128):
        parts = miners.mine_offline(x, labels, strategy, margin=0.3, chunk_size=chunk)
        assert all(torch.equal(u, v) for u, v in zip(whole, parts, strict=True))
    assert whole[0].numel() > 0


def test_offline_semihard_with_zero_margin_is_empty_and_one_class_has_no_triplet():
    x = torch.randn(6, 2)
    a, p, n = miners.mine_offline(x, torch.tensor([0, 0, 1, 1, 2, 2]), "semihard", margin=0.0)
    assert a.numel() == p.numel() == n.numel() == 0
    assert miners.mine_offline(x, torch.zeros(6, dtype=torch.long), "hard")[0].numel() == 0


@pytest.mark.parametrize("labels", [[0], [3, 3, 3], [0, 1, 2]])
def test_batches_without_triplets(labels):
    x, lab = torch.randn(len(labels), 2), torch.tensor(labels)
    for mined in (
        miners.all_triplets(lab),
        miners.batch_hard_triplets(x, lab),
        miners.semihard_triplets(x, lab),
    ):
        assert all(t.numel() == 0 and t.dtype == torch.int64 for t in mined)
    assert miners.triplet_difficulty(x, lab)["total"].item() == 0


def test_miners_do_not_track_gradients():
    x = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    counts = miners.triplet_difficulty(x, labels)
    assert not any(v.requires_grad for v in counts.values())
    assert not miners.semihard_triplets(x, labels)[0].requires_grad


def test_bad_inputs():
    x, labels = torch.randn(4, 2), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="mining"):
        miners.mine_offline(x, labels, "easy")
    with pytest.raises(ValueError, match="margin"):
        miners.mine_offline(x, labels, margin=-1.0)
    with pytest.raises(ValueError, match="margin"):
        miners.triplet_difficulty(x, labels, margin=float("nan"))
    with pytest.raises(ValueError, match="chunk_size"):
        miners.mine_offline(x, labels, chunk_size=0)
    with pytest.raises(ValueError, match="distance"):
        miners.batch_hard_triplets(x, labels, distance="l1")
    with pytest.raises(ValueError, match="squared"):
        miners.triplet_difficulty(x, labels, squared=True, distance="cosine")
    with pytest.raises(ValueError, match="labels.*length 4, got 3"):
        miners.semihard_triplets(x, labels[:3])
    with pytest.raises(TypeError, match="labels must be an integer"):
        miners.all_pairs(labels.float())
    with pytest.raises(ValueError, match="labels must be 1-D"):
        miners.all_triplets(labels[None])
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        miners.all_triplets([0, 1])
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        miners.mine_offline(torch.tensor([[float("nan"), 0.0]] * 2), torch.tensor([0, 0]))
