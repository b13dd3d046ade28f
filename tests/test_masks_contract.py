"""The batch-loss contract helpers in metrickit.masks, against plain loops."""

import numpy as np
import pytest
import torch

from metrickit._validation import check_bool, check_int, check_positive, check_real
from metrickit.masks import (
    mined_pair_masks,
    mined_triplets,
    reference_pair_masks,
    resolve_references,
    unordered_pair_mask,
)


def test_resolve_references_defaults_to_the_batch():
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    refs = resolve_references(x, y)
    assert refs.embeddings is x and refs.labels is y and refs.offset == 0


@pytest.mark.parametrize("offset", [None, 0, 2, np.int64(3)])
def test_reference_masks_match_loops(offset):
    y = torch.tensor([0, 1, 0])
    ry = torch.tensor([1, 0, 0, 1, 0, 2])
    refs = resolve_references(torch.randn(3, 2), y, torch.randn(6, 2), ry, offset)
    pos, neg = reference_pair_masks(y, refs)
    after = unordered_pair_mask(3, 6, refs.offset)
    for i in range(3):
        for j in range(6):
            own = offset is not None and j == int(offset) + i
            assert pos[i, j] == (y[i] == ry[j] and not own)
            assert neg[i, j] == (y[i] != ry[j])
            assert after[i, j] == (offset is None or j > int(offset) + i)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ref_labels": torch.zeros(3, dtype=torch.long)}, "only meaningful"),
        ({"ref_embeddings": torch.randn(5, 2)}, "ref_labels is required"),
        ({"ref_embeddings": torch.randn(5, 3), "ref_labels": torch.zeros(5, dtype=torch.long)},
         "same embedding size"),
        ({"ref_embeddings": torch.randn(5, 2), "ref_labels": torch.zeros(5, dtype=torch.long),
          "ref_offset": 3}, "ref_offset=3"),
    ],
)
def test_resolve_references_errors_name_the_argument(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        resolve_references(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), **kwargs)


def test_resolve_references_refuses_bool_offset():
    with pytest.raises(TypeError, match="ref_offset"):
        resolve_references(torch.randn(3, 2), torch.zeros(3, dtype=torch.long),
                           torch.randn(5, 2), torch.zeros(5, dtype=torch.long), True)


def test_mined_pairs_and_triplets_match_loops():
    a1, p = torch.tensor([0, 0, 2]), torch.tensor([1, 3, 4])
    a2, n = torch.tensor([0, 2, 2, 1]), torch.tensor([2, 0, 1, 4])
    pos, neg = mined_pair_masks((a1, p, a2, n), 3, 5)
    assert {tuple(t) for t in pos.nonzero().tolist()} == {(0, 1), (0, 3), (2, 4)}
    assert {tuple(t) for t in neg.nonzero().tolist()} == {(0, 2), (2, 0), (2, 1), (1, 4)}
    a, pp, nn_ = mined_triplets((a1, p, a2, n), 3, 5)
    got = sorted(zip(a.tolist(), pp.tolist(), nn_.tolist(), strict=True))
    want = sorted((i, j, k) for i, j in zip(a1.tolist(), p.tolist(), strict=True)
                  for i2, k in zip(a2.tolist(), n.tolist(), strict=True) if i2 == i)
    assert got == want
    t = (torch.tensor([1]), torch.tensor([2]), torch.tensor([0]))
    assert [x.tolist() for x in mined_triplets(t, 3, 5)] == [[1], [2], [0]]


def test_mined_indices_are_checked():
    with pytest.raises(ValueError, match="indices_tuple"):
        mined_pair_masks((torch.tensor([0]), torch.tensor([1])), 3, 3)
    with pytest.raises(ValueError, match=r"positive indices must lie in \[0, 3\)"):
        mined_pair_masks((torch.tensor([0]), torch.tensor([5]), torch.tensor([0])), 3, 3)
    with pytest.raises(TypeError, match="integer tensor"):
        mined_pair_masks((torch.tensor([0.0]), torch.tensor([1]), torch.tensor([0])), 3, 3)


def test_scalar_checks_accept_numpy_and_refuse_bools_and_strings():
    assert check_real(np.float32(0.5), "m") == 0.5
    assert check_int(np.int64(7), "n", low=1) == 7
    assert check_positive(np.float64(2.0), "t") == 2.0
    assert check_bool(np.bool_(True), "soft") is True
    for bad in ("False", 0, 1.0, None):
        with pytest.raises(TypeError, match="soft must be a bool"):
            check_bool(bad, "soft")
    with pytest.raises(TypeError, match="m must be a real number"):
        check_real(True, "m")
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        check_positive(0.0, "t")
    with pytest.raises(ValueError, match="m must be a finite number"):
        check_real(float("nan"), "m")
