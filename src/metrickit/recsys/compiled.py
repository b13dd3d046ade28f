"""The sparse engine's batch step as one compiled loop (numba): ``engine="numba"``.

Same algorithm as :mod:`.sparse` — each row's loss terms and closed-form gradients are taken at
the tables as they were when the batch started, then LightFM's row-wise Adagrad (accumulators
from 1, every interaction's squared gradient added, then every touched row moved by
lr·g / sqrt(acc)) — but per row in compiled code instead of a few dozen torch ops on
[B, M, D] tensors: a WARP row draws and scores its negatives one at a time and stops at the
first violator (as LightFM does), nothing is gathered into intermediate tensors, and the
sampler (uniform or popularity, positives excluded as :class:`~.sampling.NegativeSampler`:
redrawn once (uniform) or 4 times (popularity), then an exact uniform negative) runs in the loop.

Random numbers: each row of a batch has its own splitmix64 stream (Steele, Lea & Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014) keyed by a per-batch seed drawn
from the fit's torch generator and the row's index, so a fit is deterministic for a seed and
:func:`negatives` / :func:`kos_positives` reproduce exactly the draws the step makes (the tests
feed them to :mod:`.sparse` and compare the updates). Needs the optional ``numba`` package
(extra ``recsys``).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from ..losses.ranking import warp_rank_weight
from .models import MatrixFactorization
from .sampling import NegativeSampler

KINDS = {"warp": 0, "warp_kos": 1, "bpr": 2, "pairwise_hinge": 3}
_NEG, _POS = 0, 1  # stream ids: a row's negatives, a row's k-OS positives
_BITS_MAX = 2**25  # words of the positives bitset (256 MiB); above it, binary search
_jit = numba.njit(cache=True, nogil=True, error_model="numpy")
# sums may be reordered (SIMD dot products), nothing else: no assumption about inf or NaN
_fast = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})


@_jit
def _mix(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@_jit
def _stream(seed, row, which):
    return _mix(np.uint64(seed) ^ _mix(np.uint64(2 * row + which) + np.uint64(0x9E3779B97F4A7C15)))


@_jit
def _uniform(state):
    """(next state, a float64 uniform in [0, 1)) of a splitmix64 stream."""
    state = state + np.uint64(0x9E3779B97F4A7C15)
    return state, np.int64(_mix(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@_jit
def _below(state, n):
    state, x = _uniform(state)
    return state, min(int(x * n), n - 1)


@_jit
def _draw(state, n_items, cdf):
    """A plain draw from the catalogue: uniform (``cdf`` empty) or by the weights' cdf."""
    if cdf.shape[0] == 0:
        return _below(state, n_items)
    state, x = _uniform(state)
    j = np.searchsorted(cdf, x * cdf[-1], side="right")
    return state, min(j, n_items - 1)


@_jit
def _is_positive(bits, u, pos, lo, hi, j):
    """Whether j is a positive of user u: a bit of u's row of ``bits`` (one word per 64 items),
    or with ``bits`` empty a binary search of the sorted pos[lo:hi]."""
    if bits.shape[1]:
        return (bits[u, j >> 6] >> np.uint64(j & 63)) & np.uint64(1) != 0
    end = hi
    while lo < hi:
        mid = (lo + hi) // 2
        if pos[mid] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo < end and pos[lo] == j


@_jit
def _negative(state, u, n_items, indptr, pos, bits, cdf, rounds):
    """One negative of user u (``rounds`` < 0: positives allowed), as NegativeSampler.sample."""
    state, j = _draw(state, n_items, cdf)
    if rounds < 0:
        return state, j
    lo, hi = indptr[u], indptr[u + 1]
    for _ in range(rounds):
        if not _is_positive(bits, u, pos, lo, hi, j):
            return state, j
        state, j = _draw(state, n_items, cdf)
    if not _is_positive(bits, u, pos, lo, hi, j):
        return state, j
    # the r-th negative: r + #{t : pos_t − t ≤ r} (pos sorted, so pos_t − t is non-decreasing)
    state, r = _below(state, n_items - (hi - lo))
    a, b = 0, hi - lo
    while a < b:
        mid = (a + b) // 2
        if pos[lo + mid] - mid <= r:
            a = mid + 1
        else:
            b = mid
    return state, r + a


@_fast
def _score(pu, V, j, d, bias):
    """⟨p_u, q_j⟩ + b_j of row j of V (the user bias cancels in every pairwise term)."""
    s = 0.0
    for c in range(d):
        s += pu[c] * V[j, c]
    return s + V[j, d] if bias else s


@_jit
def _kos_positive(state, pu, V, u, d, bias, indptr, pos, kos_k, drawn, s):
    """The k-th best-scored (ties by draw order) of min(n, |P_u|) positives drawn with
    replacement (n = len(drawn), a buffer like ``s``), as :func:`~.steps.kos_positives`."""
    lo, deg = indptr[u], indptr[u + 1] - indptr[u]
    kos_n = drawn.shape[0]
    m = min(kos_n, deg)
    for t in range(kos_n):
        state, off = _below(state, deg)
        drawn[t] = pos[lo + off]
        s[t] = _score(pu, V, drawn[t], d, bias)
    want = min(m, kos_k) - 1
    for a in range(m):
        rank = 0
        for b in range(m):
            if s[b] > s[a] or (s[b] == s[a] and b < a):
                rank += 1
        if rank == want:
            return drawn[a]
    return drawn[0]


@_fast
def _batch(U, V, acc_u, acc_v, users, items, seed, kind, lr, l2, margin, n_neg, max_sampled,
           kos_k, kos_n, bias, indptr, pos, bits, cdf, rounds, pool, harmonic, terms, rows, gu,
           gq):
    """One batch: pass 1 scores and differentiates every row at the batch-start tables, pass 2
    adds the squared gradients to the accumulators, pass 3 moves the rows. ``rows`` [≥B, K],
    ``gu`` [≥B, C], ``gq`` [≥B, K, C] are scratch (each row's item rows, -1: none, and
    gradients), reused across batches."""
    n, d = users.shape[0], U.shape[1] - bias
    n_items = V.shape[0]
    width = 2 if kind < 2 else 1 + n_neg
    coef = np.zeros(width)
    reg = np.zeros(width)
    pu = np.empty(U.shape[1])
    drawn, s_kos = np.empty(kos_n, np.int64), np.empty(kos_n)
    for b in range(n):
        u = users[b]
        for c in range(U.shape[1]):
            pu[c] = U[u, c]
        if bias:
            pu[d] = 1.0
        st = _stream(seed, b, _NEG)
        i = items[b]
        for k in range(width):
            rows[b, k] = -1
        if kind == 1:
            i = _kos_positive(_stream(seed, b, _POS), pu, V, u, d, bias, indptr, pos, kos_k,
                              drawn, s_kos)
        s_i = _score(pu, V, i, d, bias)
        rows[b, 0] = i
        for k in range(width):
            coef[k], reg[k] = 0.0, 0.0
        reg[0] = 1.0
        if kind < 2:  # WARP: the first of max_sampled draws with s_uj > s_ui − m
            terms[b] = 0.0
            for t in range(max_sampled):
                st, j = _negative(st, u, n_items, indptr, pos, bits, cdf, rounds)
                s_j = _score(pu, V, j, d, bias)
                if s_j > s_i - margin:
                    w = harmonic[max(pool[u] // (t + 1), 1)]
                    terms[b] = w * max(margin - s_i + s_j, 0.0)
                    rows[b, 1] = j
                    coef[0], coef[1], reg[1] = -w, w, 1.0
                    break
        else:  # BPR / pairwise hinge, averaged over n_neg negatives
            total = 0.0
            for t in range(n_neg):
                st, j = _negative(st, u, n_items, indptr, pos, bits, cdf, rounds)
                diff = _score(pu, V, j, d, bias) - s_i
                if kind == 2:
                    total += diff if diff > 20.0 else math.log1p(math.exp(diff))
                    slope = 1.0 / (1.0 + math.exp(-diff))
                else:
                    total += max(margin + diff, 0.0)
                    slope = 1.0 if margin + diff > 0 else 0.0
                rows[b, 1 + t] = j
                coef[1 + t] = slope / n_neg
                coef[0] -= slope / n_neg
                reg[1 + t] = 1.0 / n_neg
            terms[b] = total / n_neg
        if l2 == 0.0 and rows[b, 1] < 0:  # no violator: nothing moves
            rows[b, 0] = -1
            continue
        for c in range(U.shape[1]):
            gu[b, c] = 0.0
        for k in range(width):
            j = rows[b, k]
            if j < 0:
                continue
            for c in range(d):
                gu[b, c] += coef[k] * V[j, c]
                gq[b, k, c] = coef[k] * pu[c] + 2.0 * l2 * reg[k] * V[j, c]
            if bias:
                gu[b, d] += coef[k]
                gq[b, k, d] = coef[k]
        for c in range(d):
            gu[b, c] += 2.0 * l2 * pu[c]
    for b in range(n):  # pass 2
        if rows[b, 0] < 0:
            continue
        for c in range(U.shape[1]):
            acc_u[users[b], c] += gu[b, c] * gu[b, c]
        for k in range(width):
            j = rows[b, k]
            if j >= 0:
                for c in range(U.shape[1]):
                    acc_v[j, c] += gq[b, k, c] * gq[b, k, c]
    for b in range(n):  # pass 3
        if rows[b, 0] < 0:
            continue
        u = users[b]
        for c in range(U.shape[1]):
            U[u, c] -= lr * (gu[b, c] / math.sqrt(acc_u[u, c]))
        for k in range(width):
            j = rows[b, k]
            if j >= 0:
                for c in range(U.shape[1]):
                    V[j, c] -= lr * (gq[b, k, c] / math.sqrt(acc_v[j, c]))


@_jit
def _negatives(users, seed, m, n_items, indptr, pos, bits, cdf, rounds):
    out = np.empty((users.shape[0], m), np.int64)
    for b in range(users.shape[0]):
        st = _stream(seed, b, _NEG)
        for t in range(m):
            st, j = _negative(st, users[b], n_items, indptr, pos, bits, cdf, rounds)
            out[b, t] = j
    return out


@_jit
def _kos_draws(users, seed, n, indptr, pos):
    out = np.empty((users.shape[0], n), np.int64)
    for b in range(users.shape[0]):
        st = _stream(seed, b, _POS)
        lo, deg = indptr[users[b]], indptr[users[b] + 1] - indptr[users[b]]
        for t in range(n):
            st, off = _below(st, deg)
            out[b, t] = pos[lo + off]
    return out


class SamplerArrays:
    """A :class:`NegativeSampler`'s tables as host arrays for the compiled loop: ``indptr`` /
    ``pos`` (each user's sorted positives), ``pool`` (the size of each user's negative pool),
    ``cdf`` (of the popularity weights; empty for uniform) and ``rounds`` (redraws before the
    exact uniform replacement; -1: positives allowed)."""

    def __init__(self, sampler: NegativeSampler) -> None:
        t = sampler.host_tables()
        self.indptr, self.pos, self.pool = t["indptr"], t["positives"], t["pool"]
        self.n_items = sampler.n_items
        w = t["weights"]
        self.cdf = np.empty(0) if w is None else np.cumsum(w.astype(np.float64))
        self.rounds = t["rounds"] if sampler.exclude_positives else -1
        n_users, words = self.indptr.shape[0] - 1, (self.n_items + 63) // 64
        self.bits = np.zeros((n_users, words if n_users * words <= _BITS_MAX else 0), np.uint64)
        if self.bits.shape[1]:
            users = np.repeat(np.arange(n_users), np.diff(self.indptr))
            np.bitwise_or.at(self.bits, (users, self.pos >> 6),
                             np.left_shift(np.uint64(1), (self.pos & 63).astype(np.uint64)))


def negatives(sampler: NegativeSampler, users: Tensor, m: int, seed: int) -> Tensor:
    """[B, m] the negatives the step with ``seed`` draws for ``users`` (a WARP row stops
    at its first violator, a prefix of its row here)."""
    a = SamplerArrays(sampler)
    return torch.from_numpy(_negatives(users.long().numpy(), seed, m, a.n_items, a.indptr, a.pos,
                                       a.bits, a.cdf, a.rounds))


def kos_positives(sampler: NegativeSampler, users: Tensor, n: int, seed: int) -> Tensor:
    """[B, n] the positives a k-OS WARP step with ``seed`` draws for ``users``."""
    a = SamplerArrays(sampler)
    return torch.from_numpy(_kos_draws(users.long().numpy(), seed, n, a.indptr, a.pos))


class CompiledStep:
    """Trains ``model`` on one batch per call, with its own :class:`~.sparse.RowAdagrad`-style
    accumulators ``acc_u`` / ``acc_v`` (from 1); ``config`` as :class:`~.train.FitConfig`."""

    def __init__(self, model: MatrixFactorization, sampler: NegativeSampler, config,
                 lr: float) -> None:
        if config.loss not in KINDS:
            raise ValueError(f"engine='numba' trains the losses {tuple(KINDS)}, got "
                             f"{config.loss!r}")
        self.model, self.config, self.lr = model, config, float(lr)
        self.arrays = SamplerArrays(sampler)
        self.acc_u = torch.ones_like(model.user_weight)
        self.acc_v = torch.ones_like(model.item_weight)
        n_max = int(self.arrays.pool.max(initial=1))
        self.harmonic = warp_rank_weight(
            torch.arange(n_max + 1, dtype=model.user_weight.dtype)).numpy()
        self._scratch: tuple[np.ndarray, ...] = ()

    def _buffers(self, n: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """Scratch arrays for a batch of n rows (grown, never shrunk)."""
        c = self.config
        width = 2 if KINDS[c.loss] < 2 else 1 + c.n_negatives
        if not self._scratch or self._scratch[0].shape[0] < n:
            cols = self.model.user_weight.shape[1]
            self._scratch = (np.empty((n, width), np.int64), np.empty((n, cols), dtype),
                             np.empty((n, width, cols), dtype))
        return self._scratch

    def __call__(self, users: Tensor, items: Tensor, seed: int) -> Tensor:
        c, a, m = self.config, self.arrays, self.model
        table_u, table_v = m.user_weight.detach().numpy(), m.item_weight.detach().numpy()
        terms = np.zeros(users.shape[0], table_u.dtype)
        _batch(table_u, table_v, self.acc_u.numpy(), self.acc_v.numpy(),
               users.long().numpy(), items.long().numpy(), seed, KINDS[c.loss], self.lr,
               float(c.l2), float(c.margin), c.n_negatives, c.max_sampled, c.kos_k, c.kos_n,
               int(m.bias), a.indptr, a.pos, a.bits, a.cdf, a.rounds, a.pool, self.harmonic,
               terms, *self._buffers(users.shape[0], table_u.dtype))
        return torch.from_numpy(terms)

    def state_dict(self) -> dict[str, Tensor]:
        return {"acc_u": self.acc_u, "acc_v": self.acc_v}
