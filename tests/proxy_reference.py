"""Brute-force references of the proxy losses: plain Python loops over samples and proxies.

Written from the papers' formulas, independently of the library. Each ``*_loss`` returns the
reduced value ("mean" / "sum") or the list of terms ("none"), as the library function does.
Proxies are [C·k, D] lists, the k vectors of class c in rows c·k … c·k + k − 1.
"""

from __future__ import annotations

import math

import numpy as np


def unit(v) -> list[float]:
    n = math.sqrt(sum(float(a) * float(a) for a in v))
    return [float(a) / n for a in v] if n > 0 else [0.0 for _ in v]


def cos(a, b) -> float:
    return sum(x * y for x, y in zip(unit(a), unit(b), strict=True))


def cross_entropy(logits: list[float], y: int) -> float:
    top = max(logits)
    return top + math.log(sum(math.exp(v - top) for v in logits)) - logits[y]


def reduce_terms(terms: list[float], reduction: str):
    if reduction == "none":
        return np.array(terms)
    total = sum(terms)
    return total if reduction == "sum" else (total / len(terms) if terms else 0.0)


def _class_count(proxies, per_class: int) -> int:
    return len(proxies) // per_class


def proxy_nca_loss(emb, labels, proxies, temperature, reduction):
    terms = []
    for x, y in zip(emb, labels, strict=True):
        ux = unit(x)
        logits = []
        for p in proxies:
            up = unit(p)
            logits.append(-sum((a - b) ** 2 for a, b in zip(ux, up, strict=True)) / temperature)
        terms.append(cross_entropy(logits, int(y)))
    return reduce_terms(terms, reduction)


def proxy_anchor_loss(emb, labels, proxies, margin, alpha, reduction):
    pos_terms, neg_terms, with_pos = [], [], 0
    for c, p in enumerate(proxies):
        pos, neg = [], []
        for x, y in zip(emb, labels, strict=True):
            if y == c:
                pos.append(math.exp(-alpha * (cos(x, p) - margin)))
            else:
                neg.append(math.exp(alpha * (cos(x, p) + margin)))
        with_pos += bool(pos)
        pos_terms.append(math.log(1 + sum(pos)))
        neg_terms.append(math.log(1 + sum(neg)))
    if reduction == "none":
        return np.array([a + b for a, b in zip(pos_terms, neg_terms, strict=True)])
    if reduction == "sum":
        return sum(pos_terms) + sum(neg_terms)
    return sum(pos_terms) / max(with_pos, 1) + sum(neg_terms) / len(proxies)


def normalized_softmax_loss(emb, labels, proxies, temperature, reduction):
    terms = [
        cross_entropy([cos(x, p) / temperature for p in proxies], int(y))
        for x, y in zip(emb, labels, strict=True)
    ]
    return reduce_terms(terms, reduction)


def cosface_loss(emb, labels, proxies, margin, scale, reduction):
    terms = []
    for x, y in zip(emb, labels, strict=True):
        logits = [scale * (cos(x, p) - (margin if c == y else 0.0)) for c, p in enumerate(proxies)]
        terms.append(cross_entropy(logits, int(y)))
    return reduce_terms(terms, reduction)


def arcface_loss(emb, labels, proxies, margin, scale, reduction, sub_centers=1):
    terms = []
    for x, y in zip(emb, labels, strict=True):
        logits = []
        for c in range(_class_count(proxies, sub_centers)):
            s = max(cos(x, proxies[c * sub_centers + j]) for j in range(sub_centers))
            if c == y:
                theta = math.acos(max(-1.0, min(1.0, s)))
                s = math.cos(theta + margin) if theta <= math.pi - margin else (
                    s - margin * math.sin(margin)
                )
            logits.append(scale * s)
        terms.append(cross_entropy(logits, int(y)))
    return reduce_terms(terms, reduction)


def soft_triple_loss(emb, labels, proxies, centers_per_class, la, gamma, tau, margin, reduction):
    k = centers_per_class
    classes = _class_count(proxies, k)
    reg = 0.0
    for c in range(classes):
        for t in range(k):
            for u in range(t + 1, k):
                s = min(1.0, cos(proxies[c * k + t], proxies[c * k + u]))
                reg += math.sqrt(2.0 + 1e-5 - 2.0 * s)
    reg = reg / (classes * k * (k - 1)) if k > 1 else 0.0
    terms = []
    for x, y in zip(emb, labels, strict=True):
        logits = []
        for c in range(classes):
            sims = [cos(x, proxies[c * k + t]) for t in range(k)]
            weights = [math.exp(s / gamma) for s in sims]
            relaxed = sum(w * s for w, s in zip(weights, sims, strict=True)) / sum(weights)
            logits.append(la * (relaxed - (margin if c == y else 0.0)))
        terms.append(cross_entropy(logits, int(y)) + tau * reg)
    return reduce_terms(terms, reduction)
