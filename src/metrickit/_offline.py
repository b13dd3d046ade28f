"""The engine of :func:`metrickit.miners.mine_offline` (private): offline hard and semi-hard
triplets over a whole embedded data set, in cache-sized score blocks.

The rows are sorted by label once (stable: within a class, ascending index), so every class is
one contiguous range of columns. The anchors go through in tiles of :data:`TILE` consecutive
sorted rows (a tile holds one class or a few); a tile meets the data in blocks of
:data:`COLUMNS` columns, each block one matrix product into a reused [TILE, COLUMNS] buffer
that stays in the core's cache while it is read: the anchors' own-class columns (a slice per
class) give the farthest positive, are then filled with +inf, and one ``amin`` per row finds
the block's nearest negative score. Only the rows whose running best the block reaches look for
its column (the lowest data-set index among the columns holding that score), so ties go to the
lowest index across blocks and classes as well. Semi-hard first runs over the tile's own-class
columns for the positives, then excludes, block by block, the scores at or below each anchor's
positive before the ``amin``.

Memory: the sorted copy of the rows (O(N·D)) and two [TILE, COLUMNS] blocks, whatever N. The
blocks are fixed, so the result depends on nothing but the data.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator
from itertools import accumulate, pairwise

import torch
from torch import Tensor

from ._validation import compute_dtype
from .distances import unit_rows

TILE = 2048  # anchors per tile (at most)
COLUMNS = 256  # columns per score block: a [2048, 256] float32 block is 2 MiB


def offline_rows(x: Tensor, distance: str) -> tuple[Tensor, Tensor | None]:
    """``(rows, bias)`` with d(i, j) = g_i(s_ij) nondecreasing in the score s_ij = bias_j −
    2 r_i·r_j (Euclidean kinds: g_i = sqrt/identity of max(s + bias_i, 0)) or s_ij = −r_i·r_j
    (cosine: d = 1 + s; dot: d = s); ``bias`` is None for cosine and dot."""
    x = x.to(compute_dtype(x))
    if distance == "cosine":
        return unit_rows(x), None
    if distance == "dot":
        return x, None
    return x, (x * x).sum(1)


def score_distance(score: Tensor, row_term: Tensor | None, distance: str) -> Tensor:
    """d = g(s) for scores of :func:`offline_rows` (``row_term``: the anchors' bias)."""
    if distance == "cosine":
        return score + 1
    if distance == "dot" or row_term is None:
        return score
    d = (score + row_term).clamp_min(0)
    return d.sqrt() if distance == "euclidean" else d


def semihard_lift(rows: Tensor) -> tuple[float, float] | None:
    """``(lift, bound)`` for the semi-hard exclusion, or None.

    Every finite score of :func:`offline_rows` is at most ``bound`` in magnitude (|‖x_j‖² −
    2 x_i·x_j| ≤ 3 max‖x‖², |x_i·x_j| ≤ max‖x‖², with room for rounding), and ``lift`` is a
    power of two ≥ 4·bound: a score plus ``lift`` is above every unlifted score and above
    ``bound``. None when the embeddings are too large (or not finite) for that.
    """
    # the largest norm without an N×D temporary, squared in double precision (inf on overflow)
    top = float(torch.linalg.vector_norm(rows, dim=1).max()) if rows.shape[0] else 0.0
    bound = 4 * top * top
    if not math.isfinite(bound) or bound > 2.0**100:
        return None
    return math.ldexp(1.0, math.frexp(bound)[1] + 2), bound


def _tiles(starts: list[int]) -> Iterator[list[tuple[int, int]]]:
    """The anchor tiles: lists of consecutive sorted row ranges ``(lo, hi)``, one per class,
    with whole classes packed up to :data:`TILE` rows and larger classes in tiles of their
    own."""
    tile: list[tuple[int, int]] = []
    for lo, hi in pairwise(starts):
        if tile and hi - tile[0][0] > TILE:
            yield tile
            tile = []
        if hi - lo > TILE:
            yield from ([(a, min(hi, a + TILE))] for a in range(lo, hi, TILE))
        else:
            tile.append((lo, hi))
    if tile:
        yield tile


class _Tile:
    """One tile of anchors (sorted rows [t0, t0 + t)) and its running bests.

    ``groups``: ``(r0, r1, lo, hi)`` per class: tile rows [r0, r1) belong to the class of
    columns [lo, hi). ``s_ap``/``p_idx``: the farthest positive's score and data-set index;
    ``s_an``/``n_idx``: the nearest negative's score and data-set index (``n_idx`` = N: none).
    """

    def __init__(self, ranges: list[tuple[int, int]], starts: list[int], q: Tensor,
                 ceiling: float) -> None:
        self.t0, self.t = ranges[0][0], ranges[-1][1] - ranges[0][0]
        self.groups = []
        for a, b in ranges:
            k = bisect_right(starts, a) - 1
            self.groups.append((a - self.t0, b - self.t0, starts[k], starts[k + 1]))
        self.lo, self.hi = self.groups[0][2], self.groups[-1][3]  # all its anchors' classes
        self.s_ap = q.new_full((self.t,), float("-inf"))
        self.p_idx = torch.zeros(self.t, dtype=torch.int64, device=q.device)
        self.s_an = q.new_full((self.t,), ceiling)
        self.n_idx = torch.full_like(self.p_idx, starts[-1])

    def own(self, s: int, e: int) -> list[tuple[int, int, int, int]]:
        """``(r0, r1, a, b)``: tile rows [r0, r1) have their own class at columns [a, b) of
        the block [s, e) (block-relative)."""
        return [(r0, r1, max(lo, s) - s, min(hi, e) - s)
                for r0, r1, lo, hi in self.groups if lo < e and hi > s]

    def only_positives(self, s: int, e: int) -> bool:
        """Whether the block [s, e) holds no negative of any anchor of the tile."""
        return len(self.groups) == 1 and self.lo <= s and e <= self.hi


class _Miner:
    """Score blocks of the sorted rows, folded into a tile's running bests.

    A row's best in a block is found with ``amin``/``amax`` (vectorised; ``argmin`` is an
    order of magnitude slower on CPU); its column, for the rows that need it, as the highest
    ``weight`` among the columns holding that score: ``weight`` = COLUMNS − the column's rank by
    data-set index within its block, and ``by_rank`` lists each block's indices in ascending
    order, so the winner is the lowest index holding the score.
    """

    def __init__(self, rows: Tensor, bias: Tensor | None, ids: Tensor, lift: tuple | None,
                 mining: str) -> None:
        self.rows, self.bias, self.lift, self.mining = rows, bias, lift, mining
        n = ids.shape[0]
        padded = torch.cat([ids, ids.new_full(((-n) % COLUMNS,), n)]).view(-1, COLUMNS)
        self.by_rank, column = padded.sort(1)
        rank = torch.empty_like(column).scatter_(
            1, column, torch.arange(COLUMNS, device=ids.device).expand_as(column))
        self.by_rank = self.by_rank.view(-1)
        self.weight = (COLUMNS - rank).view(-1)[:n].to(rows.dtype)
        size = min(TILE, n) * COLUMNS
        self.buffer, self.scratch = rows.new_empty(size), rows.new_empty(size)
        # the nearest negatives start here: a block's minimum above (a lifted or +inf score)
        # is no negative
        self.ceiling = lift[1] if lift else torch.finfo(rows.dtype).max

    def block(self, tile: _Tile, s: int, e: int) -> Tensor:
        """[t, e − s] scores of the tile's anchors against sorted columns [s, e)."""
        q = self.rows[tile.t0 : tile.t0 + tile.t]
        out = self.buffer[: tile.t * (e - s)].view(tile.t, e - s)
        if self.bias is None:
            return torch.mm(q, self.rows[s:e].T, out=out).neg_()
        return torch.addmm(self.bias[s:e], q, self.rows[s:e].T, alpha=-2, out=out)

    def lowest_index(self, score: Tensor, value: Tensor, s: int, a: int) -> Tensor:
        """Per row of ``score`` (columns s + a … of the sorted data), the lowest data-set index
        among the columns holding ``value``."""
        hit = self.scratch[: score.numel()].view(score.shape)
        torch.eq(score, value[:, None], out=hit).mul_(self.weight[s + a : s + a + score.shape[1]])
        return self.by_rank.index_select(0, (s + COLUMNS) - hit.amax(1).long())

    def positives(self, tile: _Tile, score: Tensor, s: int, e: int) -> None:
        """Fold the block's own-class columns (the anchor itself excluded) into the tile's
        farthest positives (lowest index on ties)."""
        for r0, r1, a, b in tile.own(s, e):
            part = score[r0:r1, a:b]
            part.diagonal(tile.t0 + r0 - s - a).fill_(float("-inf"))  # the anchors' own columns
            top = part.amax(1)
            rows = (top > tile.s_ap[r0:r1]).nonzero().view(-1)
            if rows.numel():
                top = top.index_select(0, rows)
                found = self.lowest_index(part.index_select(0, rows), top, s, a)
                tile.s_ap.index_copy_(0, rows + r0, top)
                tile.p_idx.index_copy_(0, rows + r0, found)

    def exclude(self, score: Tensor, s_ap: Tensor) -> Tensor:
        """``score`` with the entries at or below ``s_ap`` (per row) excluded, in place."""
        if self.lift:  # 0 or 1 in the score dtype: the other scores are kept exactly
            mask = self.scratch[: score.numel()].view(score.shape)
            torch.le(score, s_ap[:, None], out=mask)
            return score.add_(mask, alpha=self.lift[0])
        return score.masked_fill_(score <= s_ap[:, None], float("inf"))

    def negatives(self, tile: _Tile, score: Tensor, s: int, e: int) -> None:
        """Fold the block's negatives (semi-hard: those above the anchor's positive) into the
        tile's nearest negatives (lowest index on ties)."""
        for r0, r1, a, b in tile.own(s, e):
            score[r0:r1, a:b].fill_(float("inf"))
        if self.mining == "semihard":
            self.exclude(score, tile.s_ap)
        near = score.amin(1)
        rows = (near <= tile.s_an).nonzero().view(-1)
        if rows.numel() == tile.t:
            value, found = near, self.lowest_index(score, near, s, 0)
        elif rows.numel():
            value = near.index_select(0, rows)
            found = self.lowest_index(score.index_select(0, rows), value, s, 0)
        else:
            return
        # an equal score in an earlier block may hold a lower index
        tie = value == tile.s_an.index_select(0, rows)
        found = torch.where(tie, torch.minimum(found, tile.n_idx.index_select(0, rows)), found)
        tile.n_idx.index_copy_(0, rows, found)
        tile.s_an.index_copy_(0, rows, value)


def offline_triplets(
    x: Tensor, labels: Tensor, mining: str, margin: float, distance: str
) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, p, n)`` of :func:`metrickit.miners.mine_offline` for checked inputs."""
    rows, bias = offline_rows(x, distance)
    order = torch.sort(labels, stable=True)[1]
    rows, bias = rows[order], None if bias is None else bias[order]
    counts = torch.unique_consecutive(labels[order], return_counts=True)[1].tolist()
    starts = list(accumulate(counts, initial=0))
    lift = semihard_lift(rows) if mining == "semihard" else None
    miner = _Miner(rows, bias, order, lift, mining)
    n_all = rows.shape[0]
    out: list[tuple[Tensor, Tensor, Tensor]] = []
    for ranges in _tiles(starts):
        tile = _Tile(ranges, starts, rows, miner.ceiling)
        if mining == "semihard":  # the positives first: their scores are the thresholds
            for s in range(tile.lo - tile.lo % COLUMNS, tile.hi, COLUMNS):
                e = min(n_all, s + COLUMNS)
                miner.positives(tile, miner.block(tile, s, e), s, e)
        for s in range(0, n_all, COLUMNS):
            e = min(n_all, s + COLUMNS)
            skip = tile.only_positives(s, e)
            if skip and mining == "semihard":
                continue
            score = miner.block(tile, s, e)
            if mining == "hard" and s < tile.hi and e > tile.lo:
                miner.positives(tile, score, s, e)
            if not skip:
                miner.negatives(tile, score, s, e)
        t0, t1 = tile.t0, tile.t0 + tile.t
        keep = (tile.s_ap > float("-inf")) & (tile.n_idx < n_all)
        if mining == "semihard":
            term = None if bias is None else bias[t0:t1]
            d_ap = score_distance(tile.s_ap, term, distance)
            keep &= score_distance(tile.s_an, term, distance) < d_ap + margin
        out.append((order[t0:t1][keep], tile.p_idx[keep], tile.n_idx[keep]))
    if not out:
        return tuple(torch.zeros(0, dtype=torch.int64, device=x.device) for _ in range(3))
    a, p, n = (torch.cat(parts) for parts in zip(*out, strict=True))
    first = torch.sort(a)[1]
    return a[first], p[first], n[first]
