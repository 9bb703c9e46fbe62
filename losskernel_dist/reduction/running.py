"""The running best-k of a block of rows, fed one tile of scores at a time.

The streamed neighbours reduce (``topk.py``) keeps one per row block for the
most similar samples and one for the least similar (scores negated). A tile
only matters for rows whose extreme value beats their current k-th best; for
those rows the few entries that do become candidates (sparse path), or, when
many do (the first tiles), the tile's own top-k per row is taken with
``select_top`` (dense path); either way the candidates and the current list are
merged by one lexicographic sort, which keeps the order of a stable sort (score,
then the smaller index).
"""

from __future__ import annotations

import numpy as np

from .select import select_top

DENSE_ROWS = 256  # rows of a tile handled at once by the dense selection path


class RunningTopK:
    """Running best-k of a block of rows, as scores where higher is better.

    ``score`` (b, k) is sorted per row by (score descending, index ascending);
    empty slots hold -inf and index -1.
    """

    def __init__(self, rows: int, k: int) -> None:
        self.k = k
        self.score = np.full((rows, k), -np.inf)
        self.index = np.full((rows, k), -1, dtype=np.int64)

    def threshold(self) -> np.ndarray:
        return self.score[:, -1]

    def merge(self, rows: np.ndarray, cols: np.ndarray, scores: np.ndarray) -> None:
        """Fold candidates (row, column, score) into the lists.

        The candidates' columns are all larger than any already listed (columns
        arrive in increasing order) and come per row in increasing column order, or
        already ranked; so after the current entries of each row they are in
        index order among equal scores, and a stable sort by (row, -score) gives
        the (score descending, index ascending) order.
        """
        if rows.size == 0:
            return
        k = self.k
        touched = np.unique(rows)
        cur_i = self.index[touched].reshape(-1)
        valid = cur_i >= 0
        all_r = np.concatenate([np.repeat(touched, k)[valid], rows])
        all_i = np.concatenate([cur_i[valid], cols])
        all_s = np.concatenate([self.score[touched].reshape(-1)[valid], scores])
        order = np.lexsort((-all_s, all_r))
        all_r, all_i, all_s = all_r[order], all_i[order], all_s[order]
        first = np.searchsorted(all_r, touched)
        counts = np.diff(np.append(first, all_r.size))
        rank = np.arange(all_r.size) - np.repeat(first, counts)
        keep = rank < k
        self.score[touched] = -np.inf
        self.index[touched] = -1
        self.score[all_r[keep], rank[keep]] = all_s[keep]
        self.index[all_r[keep], rank[keep]] = all_i[keep]

    def offer(
        self,
        tile: np.ndarray,
        sign: float,
        i0: int,
        j0: int,
        labels: np.ndarray | None,
        clip: bool,
    ) -> None:
        """Offer the tile's columns j0.. to every row; ``sign`` -1 ranks by -value (bottom).

        Only rows whose extreme value beats their current k-th best are looked at
        (a max or min per row, no copy); of those, only the entries that beat it.
        """
        thr = self.threshold()
        extreme = tile.max(axis=1) if sign > 0 else -tile.min(axis=1)
        hit = np.flatnonzero(extreme > thr)
        if hit.size == 0:
            return
        if 2 * hit.size > tile.shape[0]:  # most rows: compare in place, misses give False
            hit = np.arange(tile.shape[0])
            sub = tile
        else:
            sub = tile[hit]
        cut = thr[hit, None]
        above = np.greater(sub, cut) if sign > 0 else np.less(sub, -cut)
        count = int(np.count_nonzero(above))
        if count > 4 * hit.size * self.k:  # many candidates: the tile's own top-k per row first
            del above
            rows, cols, scores = self._dense_candidates(sub, hit, sign, i0, j0, labels, clip)
        else:
            r_loc, c = np.divmod(np.flatnonzero(above), sub.shape[1])
            rows, cols = hit[r_loc], c + j0
            scores = sub[r_loc, c] * sign
            keep = cols != rows + i0
            if labels is not None:
                keep &= labels[rows + i0] != labels[cols]
            rows, cols, scores = rows[keep], cols[keep], scores[keep]
            if clip:
                np.clip(scores, -1.0, 1.0, out=scores)
        self.merge(rows, cols, scores)

    def _dense_candidates(
        self, sub: np.ndarray, hit: np.ndarray, sign: float, i0: int, j0: int,
        labels: np.ndarray | None, clip: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per hit row, the tile's best k (excluded columns masked), via ``select_top``."""
        w = sub.shape[1]
        out_r, out_c, out_s = [], [], []
        for a in range(0, hit.size, DENSE_ROWS):
            rows = hit[a:a + DENSE_ROWS]
            part = sub[a:a + DENSE_ROWS] * sign
            if clip:
                np.clip(part, -1.0, 1.0, out=part)
            local = rows + i0 - j0  # self's column in this tile, if it is here
            inside = (local >= 0) & (local < w)
            part[np.flatnonzero(inside), local[inside]] = -np.inf
            if labels is not None:
                part[labels[rows + i0, None] == labels[None, j0:j0 + w]] = -np.inf
            idx, val = select_top(part, self.k)
            ok = idx >= 0
            out_r.append(np.broadcast_to(rows[:, None], idx.shape)[ok])
            out_c.append(idx[ok] + j0)
            out_s.append(val[ok])
        return np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_s)

    def result(self, sign: float) -> tuple[np.ndarray, np.ndarray]:
        """(index, value) with value = sign * score; -1 and NaN in empty slots."""
        empty = self.index < 0
        value = np.where(empty, np.nan, self.score * sign)
        return self.index.copy(), value
