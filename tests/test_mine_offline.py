"""mine_offline over several distance blocks, every distance: plain-loop reference in float64."""

import numpy as np
import pytest
import torch

from metrickit import _offline, miners
from metrickit._offline import semihard_lift


def distance_matrix(x, distance):
    if distance == "cosine":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        return 1 - u @ u.T
    if distance == "dot":
        return -x @ x.T
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.sqrt(sq) if distance == "euclidean" else sq


def reference(x, labels, strategy, margin, distance):
    d = distance_matrix(x, distance)
    out = []
    for a in range(len(labels)):
        ps = [j for j in range(len(labels)) if labels[j] == labels[a] and j != a]
        if not ps:
            continue
        p = max(ps, key=lambda j: (d[a, j], -j))
        ns = [j for j in range(len(labels)) if labels[j] != labels[a]]
        if strategy == "semihard":
            ns = [n for n in ns if d[a, p] < d[a, n] < d[a, p] + margin]
        if ns:
            out.append((a, p, min(ns, key=lambda j: (d[a, j], j))))
    return out


@pytest.mark.parametrize("distance", ["euclidean", "squared_euclidean", "cosine", "dot"])
@pytest.mark.parametrize("strategy", ["hard", "semihard"])
def test_several_blocks_match_the_loops(distance, strategy):
    g = np.random.default_rng(5)
    labels = g.integers(0, 7, size=600)  # classes spread over three 256-anchor blocks
    labels[:3] = [9, 10, 10]  # a singleton (no positive) and a pair
    x = g.normal(size=(600, 5))
    margin = {"dot": 2.0, "squared_euclidean": 1.0}.get(distance, 0.3)
    a, p, n = miners.mine_offline(torch.tensor(x), torch.tensor(labels), strategy, margin,
                                  distance)
    got = list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    want = reference(x, labels, strategy, margin, distance)
    assert got == want and len(got) > 100
    assert a.dtype == torch.int64 and torch.all(a[1:] > a[:-1])


def test_float16_input_and_empty_set():
    x = torch.randn(300, 4)
    labels = torch.arange(300) % 3
    half = miners.mine_offline(x.half(), labels, "hard")
    assert torch.equal(half[0], torch.arange(300))
    assert torch.equal(torch.stack(half), torch.stack(miners.mine_offline(x.half().float(),
                                                                          labels, "hard")))
    empty = miners.mine_offline(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), "hard")
    assert all(t.shape == (0,) and t.dtype == torch.int64 for t in empty)


@pytest.mark.parametrize("distance", ["euclidean", "dot"])
def test_semihard_on_huge_embeddings_takes_the_masked_path_with_the_same_result(distance):
    """Scores above 2**100 cannot be lifted above every score: the masked fill runs instead; a
    power-of-two scale is exact in float64, so both paths must mine the same triplets."""
    g = np.random.default_rng(6)
    labels, x = torch.tensor(g.integers(0, 5, size=400)), torch.tensor(g.normal(size=(400, 6)))
    scale = 2.0**55 if distance == "euclidean" else 2.0**110  # d ∝ scale (dot: ∝ scale²)
    margin = 0.3 if distance == "euclidean" else 2.0
    small = miners.mine_offline(x, labels, "semihard", margin, distance)
    huge = miners.mine_offline(x * 2.0**55, labels, "semihard", margin * scale, distance)
    assert torch.equal(torch.stack(small), torch.stack(huge)) and small[0].numel() > 50
    assert semihard_lift(x * 2.0**55) is None and semihard_lift(x) is not None


def test_semihard_without_any_negative_beyond_the_positive_mines_nothing():
    labels = torch.arange(300) % 3
    for x in (torch.zeros(300, 4), torch.ones(300, 4)):  # every distance 0: d(a,n) > d(a,p) fails
        assert miners.mine_offline(x, labels, "semihard", margin=1.0)[0].numel() == 0
        assert miners.mine_offline(x, labels, "hard")[0].numel() == 300


@pytest.mark.parametrize("strategy", ["hard", "semihard"])
@pytest.mark.parametrize("tile, columns", [(8, 16), (32, 8), (5, 7)])
def test_small_tiles_and_blocks_match_the_loops_with_exact_ties(monkeypatch, strategy, tile,
                                                                 columns):
    """Tiny anchor tiles and column blocks: classes split over several tiles and packed into
    one, every class spread over several blocks; integer points (exact ties within and
    across blocks and classes) must still follow the lowest-index rule."""
    monkeypatch.setattr(_offline, "TILE", tile)
    monkeypatch.setattr(_offline, "COLUMNS", columns)
    g = np.random.default_rng(tile * columns)
    labels = np.concatenate([g.integers(0, 4, size=150), g.integers(4, 30, size=50)])
    x = g.integers(-2, 3, size=(200, 2)).astype(float)
    for distance in ("euclidean", "dot"):
        margin = 2.0 if distance == "dot" else 0.7
        a, p, n = miners.mine_offline(torch.tensor(x), torch.tensor(labels), strategy, margin,
                                      distance)
        got = list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
        assert got == reference(x, labels, strategy, margin, distance) and len(got) > 20
