"""Brute-force references of the cosine-similarity pair losses: plain Python loops over
(anchor, candidate) pairs on torch float64 scalars (so autograd gives the reference gradient),
written independently of the library.

Every reference takes the anchors ``x`` [B, D] with ``labels``, the candidates ``refs`` with
``ref_labels`` (default: the batch) and ``offset`` (anchor i is candidate offset + i; None: no
candidate is an anchor), and optionally ``mined``: a set of allowed (anchor, candidate) pairs.
It returns ``(terms, divisor)``: one term per anchor (a 0-d tensor) and the divisor of "mean".
"""

from __future__ import annotations

import math

import torch


def cosine(a, b):
    return torch.dot(a, b) / (torch.linalg.norm(a) * torch.linalg.norm(b))


def candidates(x, labels, refs=None, ref_labels=None, offset=0, mined=None):
    """Per anchor i: (similarities to positives, to negatives) as lists of (j, s_ij)."""
    refs = x if refs is None else refs
    ref_labels = labels if ref_labels is None else ref_labels
    out = []
    for i in range(len(x)):
        pos, neg = [], []
        for j in range(len(refs)):
            if offset is not None and j == offset + i:
                continue
            if mined is not None and (i, j) not in mined:
                continue
            s = cosine(x[i], refs[j])
            (pos if int(labels[i]) == int(ref_labels[j]) else neg).append((j, s))
        out.append((pos, neg))
    return out


def _log1p_sum_exp(values):
    """log(1 + Σ exp(v)) for a list of 0-d tensors, stable."""
    if not values:
        return torch.zeros((), dtype=torch.float64)
    stacked = torch.stack([torch.zeros((), dtype=torch.float64), *values])
    return torch.logsumexp(stacked, 0)


def multi_similarity(x, labels, alpha=2.0, beta=50.0, base=0.5, **refs):
    terms = []
    for pos, neg in candidates(x, labels, **refs):
        pull = _log1p_sum_exp([-alpha * (s - base) for _, s in pos]) / alpha
        push = _log1p_sum_exp([beta * (s - base) for _, s in neg]) / beta
        terms.append(pull + push)
    return terms, len(terms)


def circle(x, labels, m=0.25, gamma=256.0, **refs):
    terms, count = [], 0
    for pos, neg in candidates(x, labels, **refs):
        if not pos or not neg:
            terms.append(torch.zeros((), dtype=torch.float64))
            continue
        count += 1
        inner = []
        for _, sn in neg:
            for _, sp in pos:
                a_n = max(float(sn.detach()) + m, 0.0)  # the self-paced weights are constants
                a_p = max(1 + m - float(sp.detach()), 0.0)
                inner.append(gamma * (a_n * (sn - m) - a_p * (sp - (1 - m))))
        terms.append(_log1p_sum_exp(inner))
    return terms, count


def ntxent(x, labels, temperature=0.07, **refs):
    terms, count = [], 0
    for pos, neg in candidates(x, labels, **refs):
        total = torch.zeros((), dtype=torch.float64)
        for _, sp in pos:
            count += 1
            logits = [sp / temperature] + [sn / temperature for _, sn in neg]
            total = total - (sp / temperature - torch.logsumexp(torch.stack(logits), 0))
        terms.append(total)
    return terms, count


def supcon(x, labels, temperature=0.1, **refs):
    terms, count = [], 0
    for pos, neg in candidates(x, labels, **refs):
        if not pos:
            terms.append(torch.zeros((), dtype=torch.float64))
            continue
        count += 1
        denom = torch.logsumexp(torch.stack([s / temperature for _, s in pos + neg]), 0)
        terms.append(-sum(sp / temperature - denom for _, sp in pos) / len(pos))
    return terms, count


def tuplet_margin(x, labels, margin=5.73, scale=64.0, **refs):
    terms, count = [], 0
    m = math.radians(margin)
    for pos, neg in candidates(x, labels, **refs):
        total = torch.zeros((), dtype=torch.float64)
        for _, sp in pos:
            count += 1
            theta = torch.acos(sp.clamp(-1, 1))
            total = total + _log1p_sum_exp(
                [scale * (sn - torch.cos(theta - m)) for _, sn in neg]
            )
        terms.append(total)
    return terms, count


def fastap(x, labels, num_bins=10, **refs):
    terms, count = [], 0
    width = 4.0 / num_bins
    for pos, neg in candidates(x, labels, **refs):
        if not pos:
            terms.append(torch.zeros((), dtype=torch.float64))
            continue
        count += 1
        h_pos = [torch.zeros((), dtype=torch.float64) for _ in range(num_bins + 1)]
        h_all = [torch.zeros((), dtype=torch.float64) for _ in range(num_bins + 1)]
        for is_pos, items in ((True, pos), (False, neg)):
            for _, s in items:
                d2 = (2 - 2 * s).clamp(0, 4)
                for k in range(num_bins + 1):
                    pulse = torch.relu(1 - torch.abs(d2 - k * width) / width)
                    h_all[k] = h_all[k] + pulse
                    if is_pos:
                        h_pos[k] = h_pos[k] + pulse
        ap = torch.zeros((), dtype=torch.float64)
        cum_pos = cum_all = torch.zeros((), dtype=torch.float64)
        for k in range(num_bins + 1):
            cum_pos, cum_all = cum_pos + h_pos[k], cum_all + h_all[k]
            if float((h_pos[k] * cum_pos).detach()) > 0 and float(cum_all.detach()) > 0:
                ap = ap + h_pos[k] * cum_pos / cum_all
        terms.append(1 - ap / len(pos))
    return terms, count


def margin(x, labels, margin=0.2, beta=1.2, triplets=None, **refs):
    """Margin loss over all valid triplets (or the given ones); divisor = #non-zero terms.

    ``beta`` is a number or a list indexed by the anchor's label."""
    terms, active = [], 0
    rows = candidates(x, labels, **refs)
    if triplets is None:
        triplets = [(i, p, n) for i, (pos, neg) in enumerate(rows) for p, _ in pos for n, _ in neg]
    refs_x = refs.get("refs")
    refs_x = x if refs_x is None else refs_x
    per_anchor = [torch.zeros((), dtype=torch.float64) for _ in range(len(x))]
    for a, p, n in triplets:
        b = beta[int(labels[a])] if isinstance(beta, (list, tuple)) else beta
        d_ap = torch.sqrt(torch.clamp(2 - 2 * cosine(x[a], refs_x[p]), min=1e-300))
        d_an = torch.sqrt(torch.clamp(2 - 2 * cosine(x[a], refs_x[n]), min=1e-300))
        pull, push = torch.relu(d_ap - b + margin), torch.relu(b - d_an + margin)
        active += int(float(pull.detach()) > 0) + int(float(push.detach()) > 0)
        per_anchor[a] = per_anchor[a] + pull + push
    terms = per_anchor
    return terms, active
