"""Brute-force references, written independently of the library: plain NumPy/Python loops.

They define each quantity the slow, obvious way, in float64, so the vectorised library code can be
checked against them for values, and (through ``numeric_grad``) for gradients.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def euclid(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.sum((np.asarray(a, float) - np.asarray(b, float)) ** 2)))


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function of an array."""
    x = np.array(x, dtype=float)
    g = np.zeros_like(x)
    for idx in itertools.product(*map(range, x.shape)):
        old = x[idx]
        x[idx] = old + eps
        hi = f(x)
        x[idx] = old - eps
        lo = f(x)
        x[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


def contrastive_pairs(x1, x2, y, margin=1.0) -> list[float]:
    out = []
    for a, b, t in zip(x1, x2, y, strict=True):
        d = euclid(a, b)
        out.append(0.5 * (t * d**2 + (1 - t) * max(margin - d, 0.0) ** 2))
    return out


def batch_contrastive(emb, labels, margin=1.0) -> list[float]:
    out = []
    n = len(emb)
    for i in range(n):
        for j in range(i + 1, n):
            d = euclid(emb[i], emb[j])
            if labels[i] == labels[j]:
                out.append(0.5 * d**2)
            else:
                out.append(0.5 * max(margin - d, 0.0) ** 2)
    return out


def sqeuclid(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum((np.asarray(a, float) - np.asarray(b, float)) ** 2))


def npair_terms(anchors, positives, l2_reg=0.0) -> list[float]:
    """log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i)) + λ(‖a_i‖² + ‖p_i‖²) per pair."""
    out = []
    n = len(anchors)
    for i in range(n):
        own = float(np.dot(anchors[i], positives[i]))
        s = 1.0
        for j in range(n):
            if j != i:
                s += math.exp(float(np.dot(anchors[i], positives[j])) - own)
        reg = float(np.dot(anchors[i], anchors[i]) + np.dot(positives[i], positives[i]))
        out.append(math.log(s) + l2_reg * reg)
    return out


def npair_batch_pairs(labels) -> list[tuple[int, int]]:
    """(anchor, positive): the first two samples of each class having >= 2, by anchor position."""
    seen: dict = {}
    for idx, y in enumerate(labels):
        seen.setdefault(y, []).append(idx)
    pairs = [(v[0], v[1]) for v in seen.values() if len(v) >= 2]
    return sorted(pairs)


def batch_npair(emb, labels, l2_reg=0.0) -> list[float]:
    pairs = npair_batch_pairs(list(labels))
    emb = np.asarray(emb, float)
    return npair_terms([emb[a] for a, _ in pairs], [emb[p] for _, p in pairs], l2_reg)


def quadruplet_tuples(a, p, n1, n2, margin1=1.0, margin2=0.5) -> list[float]:
    out = []
    for w, x, y, z in zip(a, p, n1, n2, strict=True):
        dap = sqeuclid(w, x)
        t1 = max(dap - sqeuclid(w, y) + margin1, 0.0)
        out.append(t1 + max(dap - sqeuclid(y, z) + margin2, 0.0))
    return out


def batch_quadruplet(emb, labels, margin1=1.0, margin2=0.5) -> float:
    """Batch-all quadruplet loss by enumeration: each term averaged over its non-zero tuples."""
    n = len(emb)
    s1 = c1 = s2 = c2 = 0.0
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            dap = sqeuclid(emb[a], emb[p])
            for n1 in range(n):
                if labels[n1] == labels[a]:
                    continue
                v = dap - sqeuclid(emb[a], emb[n1]) + margin1
                if v > 0:
                    s1, c1 = s1 + v, c1 + 1
                for n2 in range(n):
                    if labels[n2] == labels[a] or labels[n2] == labels[n1]:
                        continue
                    v = dap - sqeuclid(emb[n1], emb[n2]) + margin2
                    if v > 0:
                        s2, c2 = s2 + v, c2 + 1
    return (s1 / c1 if c1 else 0.0) + (s2 / c2 if c2 else 0.0)


def lifted_structure(emb, labels, margin=1.0, negatives="mean") -> list[float]:
    """½ max(J_ij, 0)² for each positive pair i < j having at least one negative; "mean" takes
    log(Σ/count) over the count = |N(i)| + |N(j)| terms, "sum" (the paper's) log Σ."""
    n = len(emb)
    out = []
    for i in range(n):
        for j in range(i + 1, n):
            if labels[i] != labels[j]:
                continue
            s, count = 0.0, 0
            for k in range(n):
                if labels[k] != labels[i]:
                    s, count = s + math.exp(margin - euclid(emb[i], emb[k])), count + 1
                if labels[k] != labels[j]:
                    s, count = s + math.exp(margin - euclid(emb[j], emb[k])), count + 1
            if count == 0:
                continue
            jij = math.log(s / count if negatives == "mean" else s) + euclid(emb[i], emb[j])
            out.append(0.5 * max(jij, 0.0) ** 2)
    return out


def harmonic(k: int) -> float:
    return sum(1.0 / t for t in range(1, k + 1))


def warp_exact(scores, positives, margin=1.0) -> list[float]:
    """Φ(r)/r Σ_{violators}(m − s_qi + s_qj) per positive entry (q, i), row-major."""
    out = []
    for q in range(len(scores)):
        for i in range(len(scores[q])):
            if not positives[q][i]:
                continue
            viol = [
                margin - scores[q][i] + scores[q][j]
                for j in range(len(scores[q]))
                if not positives[q][j] and scores[q][j] > scores[q][i] - margin
            ]
            r = len(viol)
            out.append(harmonic(r) / r * sum(viol) if r else 0.0)
    return out


def warp_sampled(scores, positives, margin, max_sampled, rng) -> list[float]:
    """One draw of the WSABIE sampling estimate per positive entry (q, i), row-major."""
    out = []
    for q in range(len(scores)):
        negs = [j for j in range(len(scores[q])) if not positives[q][j]]
        for i in range(len(scores[q])):
            if not positives[q][i]:
                continue
            term = 0.0
            for n in range(1, max_sampled + 1 if negs else 1):
                j = negs[rng.integers(len(negs))]
                if scores[q][j] > scores[q][i] - margin:
                    r = max(1, len(negs) // n)
                    term = harmonic(r) * (margin - scores[q][i] + scores[q][j])
                    break
            out.append(term)
    return out


# --- triplet family and miners -------------------------------------------------------------


def triplet_dist(a, b, kind: str = "euclidean") -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if kind == "euclidean":
        return euclid(a, b)
    if kind == "squared_euclidean":
        return float(np.sum((a - b) ** 2))
    if kind == "cosine":
        return 1.0 - float(a @ b) / (float(np.linalg.norm(a)) * float(np.linalg.norm(b)))
    if kind == "dot":
        return -float(a @ b)
    raise ValueError(kind)


def triplet_dist_matrix(emb, kind: str = "euclidean", ref=None) -> list[list[float]]:
    ref = emb if ref is None else ref
    return [[triplet_dist(x, y, kind) for y in ref] for x in emb]


def triplet_masks(labels, ref_labels=None) -> tuple[list[list[bool]], list[list[bool]]]:
    """Positive / negative relation; without ref_labels a sample is not its own positive."""
    same_set = ref_labels is None
    ref = labels if same_set else ref_labels
    pos = [[li == lj and not (same_set and i == j) for j, lj in enumerate(ref)]
           for i, li in enumerate(labels)]
    neg = [[li != lj for lj in ref] for li in labels]
    return pos, neg


def softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _triplet_term(d_ap: float, d_an: float, margin: float, soft: bool) -> float:
    return softplus(d_ap - d_an) if soft else max(0.0, d_ap - d_an + margin)


def triplet_terms_from_matrix(dist, pos, neg, margin=0.2, mining="all", soft=False):
    """(selected terms, divisor of the mean, per-(a, p) sums for batch all) by plain loops.

    all: one term per valid triplet (a, p, n), divisor = #terms > 0 (soft: all of them);
    hard: per anchor with both, farthest positive vs nearest negative;
    semihard: per (a, p) whose anchor has a negative, the nearest negative farther than p,
    else the farthest negative.
    """
    rows, cols = len(dist), len(dist[0]) if dist else 0
    terms, pair_sums = [], []
    for a in range(rows):
        ps = [j for j in range(cols) if pos[a][j]]
        ns = [j for j in range(cols) if neg[a][j]]
        if not ns:
            continue
        if mining == "hard":
            if ps:
                d_ap = max(dist[a][j] for j in ps)
                d_an = min(dist[a][j] for j in ns)
                terms.append(_triplet_term(d_ap, d_an, margin, soft))
            continue
        for p in ps:
            if mining == "all":
                here = [_triplet_term(dist[a][p], dist[a][n], margin, soft) for n in ns]
                terms.extend(here)
                pair_sums.append(sum(here))
            else:
                farther = [dist[a][n] for n in ns if dist[a][n] > dist[a][p]]
                d_an = min(farther) if farther else max(dist[a][n] for n in ns)
                terms.append(_triplet_term(dist[a][p], d_an, margin, soft))
    if mining == "all":
        divisor = len(terms) if soft else sum(1 for t in terms if t > 0)
    else:
        divisor = len(terms)
    return terms, divisor, pair_sums


def batch_triplet(emb, labels, margin=0.2, mining="all", soft=False, kind="euclidean"):
    """(mean, sum, "none" vector) of the batch triplet loss, by brute force."""
    pos, neg = triplet_masks(labels)
    terms, divisor, pair_sums = triplet_terms_from_matrix(
        triplet_dist_matrix(emb, kind), pos, neg, margin, mining, soft
    )
    total = float(sum(terms))
    none = pair_sums if mining == "all" else terms
    return total / max(divisor, 1), total, np.array(none, dtype=float)


def triplet_list(labels) -> list[tuple[int, int, int]]:
    n = len(labels)
    return [
        (a, p, q)
        for a in range(n)
        for p in range(n)
        for q in range(n)
        if a != p and labels[a] == labels[p] and labels[q] != labels[a]
    ]


def pair_lists(labels) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    n = len(labels)
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]]
    neg = [(i, j) for i in range(n) for j in range(n) if labels[i] != labels[j]]
    return pos, neg


def batch_hard_triplet_list(emb, labels) -> list[tuple[int, int, int]]:
    d = triplet_dist_matrix(emb)
    out = []
    for a, la in enumerate(labels):
        ps = [j for j, lj in enumerate(labels) if lj == la and j != a]
        ns = [j for j, lj in enumerate(labels) if lj != la]
        if ps and ns:
            out.append((a, max(ps, key=lambda j: d[a][j]), min(ns, key=lambda j: d[a][j])))
    return out


def semihard_triplet_list(emb, labels) -> list[tuple[int, int, int]]:
    d = triplet_dist_matrix(emb)
    out = []
    for a, la in enumerate(labels):
        ns = [j for j, lj in enumerate(labels) if lj != la]
        if not ns:
            continue
        for p, lp in enumerate(labels):
            if p == a or lp != la:
                continue
            farther = [n for n in ns if d[a][n] > d[a][p]]
            if farther:
                out.append((a, p, min(farther, key=lambda n: d[a][n])))
            else:
                out.append((a, p, max(ns, key=lambda n: d[a][n])))
    return out


def triplet_difficulty_counts(emb, labels, margin=0.2, kind="euclidean") -> dict[str, int]:
    d = triplet_dist_matrix(emb, kind)
    counts = {"easy": 0, "semihard": 0, "hard": 0, "total": 0}
    for a, p, n in triplet_list(labels):
        counts["total"] += 1
        if d[a][n] < d[a][p]:
            counts["hard"] += 1
        elif d[a][n] < d[a][p] + margin:
            counts["semihard"] += 1
        else:
            counts["easy"] += 1
    return counts


def offline_triplet_list(emb, labels, strategy="semihard", margin=0.2):
    """Farthest positive; hard: nearest negative; semihard: nearest n with d_ap < d_an < d_ap+m."""
    d = triplet_dist_matrix(emb)
    out = []
    for a, la in enumerate(labels):
        ps = [j for j, lj in enumerate(labels) if lj == la and j != a]
        if not ps:
            continue
        p = max(ps, key=lambda j: (d[a][j], -j))
        ns = [j for j, lj in enumerate(labels) if lj != la]
        if strategy == "semihard":
            ns = [n for n in ns if d[a][p] < d[a][n] < d[a][p] + margin]
        if ns:
            out.append((a, p, min(ns, key=lambda j: (d[a][j], j))))
    return out


def symmetric_triplet_terms(
    anc, pos, neg, label, margin=1.0, hinge=True, soft=False
) -> list[float]:
    def sq(u, v):
        return triplet_dist(u, v, "squared_euclidean")

    out = []
    for a, p, n, y in zip(anc, pos, neg, label, strict=True):
        if y == 1:
            t = 2 * sq(p, a) - sq(p, n) - sq(a, n) + margin
        else:
            t = 2 * sq(n, a) - sq(n, p) - sq(a, p) + margin
        out.append(float(np.logaddexp(0.0, t)) if soft else max(t, 0.0) if hinge else t)
    return out


def triplet_center_terms(emb, labels, centers, margin=1.0) -> list[float]:
    out = []
    for f, y in zip(emb, labels, strict=True):
        dd = [0.5 * triplet_dist(f, c, "squared_euclidean") for c in centers]
        others = [v for j, v in enumerate(dd) if j != y]
        out.append(max(0.0, dd[y] + margin - min(others)) if others else 0.0)
    return out


# --- evaluation: kNN, retrieval and verification metrics (brute force, float64) ---------------


def eval_distance(a, b, kind: str = "euclidean") -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if kind == "euclidean":
        return float(np.sqrt(np.sum((a - b) ** 2)))
    if kind == "squared_euclidean":
        return float(np.sum((a - b) ** 2))
    if kind == "cosine":
        return float(1 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(-np.dot(a, b))


def ranked_neighbours(query, reference, qi, kind="euclidean", self_index=None):
    """All references of query ``qi`` as (distance, index), closest first, ties by index."""
    items = [
        (eval_distance(query[qi], r, kind), j)
        for j, r in enumerate(reference)
        if j != self_index
    ]
    return sorted(items)


def knn_bruteforce(query, reference=None, k=1, kind="euclidean"):
    """(distances, indices) lists of lists; reference=None means leave-one-out on query."""
    ref = query if reference is None else reference
    dists, idxs = [], []
    for qi in range(len(query)):
        ranked = ranked_neighbours(query, ref, qi, kind, qi if reference is None else None)[:k]
        dists.append([d for d, _ in ranked])
        idxs.append([j for _, j in ranked])
    return dists, idxs


def retrieval_bruteforce(emb, labels, ks=(1, 2, 4, 8), kind="euclidean", query=None, qlabels=None):
    """Musgrave et al. 2020 metrics by a loop over queries; queries with R = 0 are skipped."""
    loo = query is None
    query = emb if loo else query
    qlabels = labels if loo else qlabels
    rows = []
    for qi in range(len(query)):
        ranked = ranked_neighbours(query, emb, qi, kind, qi if loo else None)
        rel = [int(labels[j] == qlabels[qi]) for _, j in ranked]
        r = sum(rel)
        if r == 0:
            continue
        row = {"precision_at_1": rel[0]}
        for k in ks:
            row[f"recall_at_{k}"] = float(any(rel[:k]))
        row["r_precision"] = sum(rel[:r]) / r
        ap, hits = 0.0, 0
        for i in range(r):
            hits += rel[i]
            if rel[i]:
                ap += hits / (i + 1)
        row["map_at_r"] = ap / r
        rows.append(row)
    out = {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
    out["num_queries"] = len(rows)
    out["num_excluded_queries"] = len(query) - len(rows)
    return out


def roc_points_bruteforce(dist, same):
    """(threshold, FAR, TAR) for t = -inf and each distinct distance; same if d <= t."""
    dist, same = list(map(float, dist)), list(map(bool, same))
    n_pos = sum(same)
    n_neg = len(same) - n_pos
    points = [(float("-inf"), 0.0, 0.0)]
    for t in sorted(set(dist)):
        tp = sum(1 for d, s in zip(dist, same, strict=True) if s and d <= t)
        fp = sum(1 for d, s in zip(dist, same, strict=True) if not s and d <= t)
        points.append((t, fp / n_neg, tp / n_pos))
    return points


def verification_bruteforce(dist, same, fars=(1e-3, 1e-2)):
    """Best accuracy (smallest threshold on ties), EER (linear interpolation), TAR@FAR."""
    points = roc_points_bruteforce(dist, same)
    n = len(same)
    n_pos = int(sum(bool(s) for s in same))
    best = (-1.0, None)
    for t, far, tar in points:
        acc = (tar * n_pos + (1 - far) * (n - n_pos)) / n
        if acc > best[0] + 1e-12:
            best = (acc, t)
    eer = None
    for (_, f0, t0), (_, f1, t1) in zip(points, points[1:], strict=False):
        g0, g1 = f0 - (1 - t0), f1 - (1 - t1)  # FAR - FRR, rises from -1 to 1
        if g0 < 0 <= g1:
            a = -g0 / (g1 - g0)
            eer = f0 + a * (f1 - f0)
            break
    out = {"verification_accuracy": best[0], "verification_threshold": best[1], "eer": eer}
    for far in fars:
        out[far] = max(tar for _, f, tar in points if f <= far)
    return out


def quadruplet_cross(anchors, a_labels, refs, r_labels, margin1=1.0, margin2=0.5) -> float:
    """Batch-all quadruplet loss of anchors against a separate reference set (p, n1, n2 in it)."""
    s1 = c1 = s2 = c2 = 0.0
    for a, ya in zip(anchors, a_labels, strict=True):
        for p, yp in zip(refs, r_labels, strict=True):
            if yp != ya:
                continue
            dap = sqeuclid(a, p)
            for n1, y1 in zip(refs, r_labels, strict=True):
                if y1 == ya:
                    continue
                v = dap - sqeuclid(a, n1) + margin1
                s1, c1 = (s1 + v, c1 + 1) if v > 0 else (s1, c1)
                for n2, y2 in zip(refs, r_labels, strict=True):
                    if y2 in (ya, y1):
                        continue
                    v = dap - sqeuclid(n1, n2) + margin2
                    s2, c2 = (s2 + v, c2 + 1) if v > 0 else (s2, c2)
    return (s1 / c1 if c1 else 0.0) + (s2 / c2 if c2 else 0.0)


def warp_sampled_expectation(scores, positives, margin, max_sampled) -> list[float]:
    """Exact expectation of the sampled WARP term: the first violator comes at draw N with
    probability (1 − p)^(N−1) p, p = r/|neg|, and is a uniformly chosen violator."""
    out = []
    for q in range(len(scores)):
        negs = [j for j in range(len(scores[q])) if not positives[q][j]]
        for i in range(len(scores[q])):
            if not positives[q][i]:
                continue
            viol = [
                margin - scores[q][i] + scores[q][j]
                for j in negs
                if scores[q][j] > scores[q][i] - margin
            ]
            if not viol:
                out.append(0.0)
                continue
            p = len(viol) / len(negs)
            mean_viol = sum(viol) / len(viol)
            out.append(
                sum(
                    (1 - p) ** (n - 1) * p * harmonic(max(1, len(negs) // n)) * mean_viol
                    for n in range(1, max_sampled + 1)
                )
            )
    return out


# ---- anchors against a reference set (cross-batch memory, distributed local anchors) ----------
# Anchor i is reference row offset + i; unordered-pair losses keep (i, j) only if offset + i < j.


def ref_set_masks(labels, ref_labels, offset):
    pos = [[li == lj and j != offset + i for j, lj in enumerate(ref_labels)]
           for i, li in enumerate(labels)]
    neg = [[li != lj for lj in ref_labels] for li in labels]
    return pos, neg


def ref_set_contrastive(refs, ref_labels, offset, b, margin=1.0) -> list[float]:
    out = []
    for i in range(b):
        for j in range(offset + i + 1, len(refs)):
            d = euclid(refs[offset + i], refs[j])
            same = ref_labels[offset + i] == ref_labels[j]
            out.append(0.5 * d**2 if same else 0.5 * max(margin - d, 0.0) ** 2)
    return out


def ref_set_lifted(refs, ref_labels, offset, b, margin=1.0, negatives="mean") -> list[float]:
    """½ max(J, 0)² per pair (i, j), j > offset + i, same class; N(i) over the references,
    N(j) over the anchors; pairs with no negative on either side skipped; "mean" as in
    :func:`lifted_structure`."""
    out = []
    anchors = range(offset, offset + b)
    for i in anchors:
        for j in range(i + 1, len(refs)):
            if ref_labels[i] != ref_labels[j]:
                continue
            terms = [math.exp(margin - euclid(refs[i], refs[k]))
                     for k in range(len(refs)) if ref_labels[k] != ref_labels[i]]
            terms += [math.exp(margin - euclid(refs[j], refs[l]))
                      for l in anchors if ref_labels[l] != ref_labels[j]]
            if not terms:
                continue
            s = sum(terms) / len(terms) if negatives == "mean" else sum(terms)
            out.append(0.5 * max(math.log(s) + euclid(refs[i], refs[j]), 0.0) ** 2)
    return out


def ref_set_quadruplet(refs, ref_labels, offset, b, margin1=1.0, margin2=0.5) -> float:
    """Batch-all quadruplet: a an anchor, p ≠ a, n1, n2 over the references (ordered n1, n2)."""
    s1 = c1 = s2 = c2 = 0.0
    m = len(refs)
    for a in range(offset, offset + b):
        ya = ref_labels[a]
        for p in range(m):
            if p == a or ref_labels[p] != ya:
                continue
            dap = sqeuclid(refs[a], refs[p])
            for n1 in range(m):
                y1 = ref_labels[n1]
                if y1 == ya:
                    continue
                v = dap - sqeuclid(refs[a], refs[n1]) + margin1
                if v > 0:
                    s1, c1 = s1 + v, c1 + 1
                for n2 in range(m):
                    if ref_labels[n2] in (ya, y1):
                        continue
                    v = dap - sqeuclid(refs[n1], refs[n2]) + margin2
                    if v > 0:
                        s2, c2 = s2 + v, c2 + 1
    return (s1 / c1 if c1 else 0.0) + (s2 / c2 if c2 else 0.0)


def ref_recsys_user_metrics(scores, train_items, test_items, k) -> dict[str, float] | None:
    """Top-N metrics of one user by their definitions (metrickit.recsys.metrics' module doc):
    candidates = items not in train; ranking by decreasing score; a relevant item tied with
    negatives ranks after them. None for a user without test items."""
    rel = [i for i in test_items if i not in train_items]
    if not rel:
        return None
    neg = [j for j in range(len(scores)) if j not in train_items and j not in rel]
    # pessimistic ranking: sort by (-score, relevant last), then rank = position + 1
    order = sorted(rel + neg, key=lambda i: (-scores[i], i in rel))
    rank = {i: pos + 1 for pos, i in enumerate(order)}
    hits = sorted(rank[i] for i in rel if rank[i] <= k)
    pairs = [(1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0.0)
             for i in rel for j in neg]
    idcg = sum(1 / math.log2(t + 1) for t in range(1, min(len(rel), k) + 1))
    return {
        "auc": sum(pairs) / len(pairs) if pairs else float("nan"),
        "precision": len(hits) / k,
        "recall": len(hits) / len(rel),
        "hit_rate": float(bool(hits)),
        "ndcg": sum(1 / math.log2(r + 1) for r in hits) / idcg,
        "map": sum((n + 1) / r for n, r in enumerate(hits)) / min(len(rel), k),
        "mrr": 1 / min(rank[i] for i in rel),
    }
