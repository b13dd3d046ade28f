from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from metrickit.samplers import PKSampler

# 6 classes of uneven size; class 5 has fewer than k=3 samples.
LABELS = np.repeat([0, 1, 2, 3, 4, 5], [10, 7, 5, 4, 3, 2])


def check_pk(batch, labels, p, k):
    counts = Counter(labels[i] for i in batch)
    assert len(batch) == p * k
    assert len(counts) == p
    assert set(counts.values()) == {k}


@pytest.mark.parametrize("p,k", [(2, 2), (3, 3), (6, 1), (4, 5)])
def test_every_batch_is_p_classes_times_k(p, k):
    sampler = PKSampler(LABELS, p=p, k=k, num_batches=30, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 30
    for b in batches:
        check_pk(b, LABELS, p, k)
        assert all(isinstance(i, int) and 0 <= i < len(LABELS) for i in b)


def test_replacement_only_for_classes_smaller_than_k():
    k = 3
    sampler = PKSampler(LABELS, p=4, k=k, num_batches=200, seed=2)
    sizes = np.bincount(LABELS)
    seen_repeat = set()
    for batch in sampler:
        for c, n in Counter(batch).items():
            if n > 1:
                seen_repeat.add(int(LABELS[c]))
                assert sizes[LABELS[c]] < k
    assert seen_repeat == {5}  # the two-sample class must repeat to fill 3 slots


def test_small_class_contributes_all_its_samples():
    sampler = PKSampler(LABELS, p=6, k=4, num_batches=5)
    for batch in sampler:
        for c in (4, 5):  # 3 and 2 samples, k = 4
            members = set(np.flatnonzero(LABELS == c))
            assert members <= set(batch)


def test_classes_uniform_and_samples_cycled_within_epoch():
    labels = np.repeat(np.arange(5), [20, 8, 8, 8, 8])
    sampler = PKSampler(labels, p=2, k=4, num_batches=50, seed=3)
    batches = list(sampler)
    class_counts = Counter(labels[b[0]] for b in batches) + Counter(labels[b[-1]] for b in batches)
    assert set(class_counts.values()) == {20}  # 100 class slots over 5 classes: exactly 20 each
    # class 1 (8 samples, 20 visits x 4) is used 10 times over: every sample exactly 10 times
    uses = Counter(i for b in batches for i in b if labels[i] == 1)
    assert set(uses.values()) == {10}


def test_reproducible_and_epoch_dependent():
    a = PKSampler(LABELS, p=3, k=2, seed=7)
    b = PKSampler(torch.tensor(LABELS), p=3, k=2, seed=7)
    assert list(a) == list(b)
    assert list(a) == list(a)  # no hidden state advances between passes
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    a.set_epoch(0)
    assert list(a) == first
    assert list(PKSampler(LABELS, p=3, k=2, seed=8)) != first


def test_does_not_touch_torch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(PKSampler(LABELS, p=3, k=2, num_batches=10))
    assert torch.equal(torch.rand(3), expected)


def test_accepts_list_and_string_labels():
    labels = ["cat", "dog", "cat", "dog", "owl", "owl"]
    for batch in PKSampler(labels, p=2, k=2, num_batches=4):
        check_pk(batch, np.array(labels), 2, 2)


def test_default_length():
    assert len(PKSampler(LABELS, p=2, k=3)) == len(LABELS) // 6
    assert len(PKSampler(LABELS, p=6, k=10)) == 1  # fewer samples than one batch: still 1


def test_with_dataloader():
    x = torch.arange(len(LABELS), dtype=torch.float32)[:, None]
    ds = TensorDataset(x, torch.tensor(LABELS))
    loader = DataLoader(ds, batch_sampler=PKSampler(LABELS, p=3, k=2, num_batches=4))
    batches = list(loader)
    assert len(batches) == 4
    for xb, yb in batches:
        assert xb.shape == (6, 1)
        assert torch.equal(yb, torch.tensor(LABELS)[xb[:, 0].long()])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(labels=[], p=2, k=2), "empty"),
        (dict(labels=[[0, 1]], p=2, k=2), "1-D"),
        (dict(labels=LABELS, p=7, k=2), "only 6 distinct"),
        (dict(labels=LABELS, p=1, k=2), "p .*>= 2"),
        (dict(labels=LABELS, p=2, k=0), "k must be a positive integer"),
        (dict(labels=LABELS, p=2, k=2, num_batches=0), "num_batches"),
    ],
)
def test_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PKSampler(**kwargs)


def test_set_epoch_rejects_negative():
    with pytest.raises(ValueError, match="epoch"):
        PKSampler(LABELS, p=2, k=2).set_epoch(-1)
