import math

import numpy as np
import pytest
from scipy import stats

from metrickit.text.evaluation import pairs_retrieval_task, retrieval_scores, sts_scores


def test_sts_scores_against_scipy_loops():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(50, 8)), g.normal(size=(50, 8))
    gold = g.uniform(0, 5, size=50)
    cos = [float(x @ y / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b, strict=True)]
    got = sts_scores(a, b, gold)
    assert got["spearman"] == pytest.approx(100 * stats.spearmanr(cos, gold)[0])
    assert got["pearson"] == pytest.approx(100 * stats.pearsonr(cos, gold)[0])
    with pytest.warns(stats.ConstantInputWarning):  # constant gold: undefined correlation
        assert math.isnan(sts_scores(a, a * 2, np.ones(50))["spearman"])
    assert sts_scores(a, b, cos)["spearman"] == pytest.approx(100)
    with pytest.raises(ValueError, match="gold"):
        sts_scores(a, b, gold[:3])


def _brute(q, c, relevant, ks, at):
    out = {f"mrr_at_{at}": 0.0, f"ndcg_at_{at}": 0.0} | {f"recall_at_{k}": 0.0 for k in ks}
    for qi, rel in enumerate(relevant):
        sims = []
        for ci in range(len(c)):
            s = sum(q[qi][d] * c[ci][d] for d in range(len(q[qi])))
            s /= math.sqrt(sum(v * v for v in q[qi])) * math.sqrt(sum(v * v for v in c[ci]))
            sims.append((-s, ci))
        order = [ci for _, ci in sorted(sims)]  # ties: smaller index first
        for rank, ci in enumerate(order[:at], 1):
            if ci in rel:
                out[f"mrr_at_{at}"] += 1 / rank
                break
        dcg = sum(1 / math.log2(r + 1) for r, ci in enumerate(order[:at], 1) if ci in rel)
        idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(rel), at) + 1))
        out[f"ndcg_at_{at}"] += dcg / idcg
        for k in ks:
            out[f"recall_at_{k}"] += len(set(order[:k]) & set(rel)) / len(rel)
    return {k: 100 * v / len(relevant) for k, v in out.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_against_brute_force(seed):
    g = np.random.default_rng(seed)
    c = np.round(g.normal(size=(30, 3)), 0) + 0.0  # rounded: many ties
    c[c.sum(1) == 0] += 1
    q = g.normal(size=(12, 3))
    relevant = [list(g.choice(30, size=g.integers(1, 6), replace=False)) for _ in range(12)]
    got = retrieval_scores(q, c, relevant, ks=(1, 3, 10, 40), at=5)
    want = _brute(q.tolist(), c.tolist(), relevant, (1, 3, 10, 40), 5)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


def test_retrieval_perfect_and_errors():
    e = np.eye(4)
    got = retrieval_scores(e, e, [[0], [1], [2], [3]])
    assert all(v == pytest.approx(100) for v in got.values())
    with pytest.raises(ValueError, match="relevant"):
        retrieval_scores(e, e, [[0]])
    with pytest.raises(ValueError, match=r"relevant\[1\]"):
        retrieval_scores(e, e, [[0], [], [2], [3]])


def test_pairs_retrieval_task():
    queries, corpus, relevant = pairs_retrieval_task(["a", "b", "a"], ["x", "y", "z"])
    assert queries == ["a", "b"] and corpus == ["x", "y", "z"]
    assert relevant == [[0, 2], [1]]
