"""Brute-force references, written independently of the library: plain NumPy/Python loops.

They define each quantity the slow, obvious way, in float64, so the vectorised library code can be
checked against them for values, and (through ``numeric_grad``) for gradients.
"""

from __future__ import annotations

import itertools

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
    for a, b, t in zip(x1, x2, y):
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
