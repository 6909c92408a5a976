"""EASE (Steck 2019) solved in the memory it needs, and scored in user batches.

RecTools' `EASEModel` builds the dense items x items Gram matrix and inverts it with
`np.linalg.inv`, which works in float64: at 20k items that is 1.6 GB for the Gram matrix,
two 3.2 GB float64 copies inside the inverse and 1.6 GB for the weights, per lambda (11 GB
RSS on a real 20,804-item catalogue). `ScalableEASEModel` is the same RecTools model (same
`fit` / `recommend`, ids, viewed-item filter) with the same closed form solved where it fits:

    P = (X'X + lambda I)^-1,  B = I - P / diag(P) (column j divided by P_jj),

X the users x items interaction matrix of the fitted data set.

- **Dual** (users < items): by Woodbury, lambda P = I - X' K^-1 X with K = XX' + lambda I,
  a users x users matrix, and lambda diag(P)_j = 1 - x_j' K^-1 x_j (x_j: item j's column).
  B is never formed: a batch of users' scores needs only K^-1 and X. Exact.
- **Primal** (items <= users): lambda P = lambda (X'X + lambda I)^-1, items x items, inverted
  in place (LAPACK potrf + potri on the one dense buffer). Exact.
- Either way the one dense matrix is min(users, items)^2: float64 up to `FLOAT64_UP_TO`
  (512 MB), float32 beyond it (the float32 Cholesky), at most `max_dense` = 20,000 (1.6 GB).
- **Top-N item restriction** when both users and items exceed `max_dense`: the model is
  fitted on the `max_dense` items with the most distinct users in the fitted data (ties: the
  lower RecTools internal id) and recommends only those;
  every other item is never recommended by EASE. A stated approximation, reported as
  `restricted_to` on the fitted model; below the limit nothing is restricted.

Scores are computed for `batch` users at a time (a batch x items block of at most
`batch_bytes`), viewed items are set to -inf and the top k is taken per batch: no
all-users x all-items matrix is ever built.

Orientation. RecTools 0.13 ranks with the weights through implicit's `topk`, which scores
`x @ weight.T`: score_j = sum_i x_i B_ji, i.e. x B' (each source item i's row scaled by
1 / P_ii), not Steck's x B (each target item j's column scaled by 1 / P_jj). The two rank
differently once diag(P) varies between items. `orientation="rectools"` (the default) keeps
today's baseline, so the gate's EASE row is unchanged; `orientation="steck"` is the paper's.
Both are pinned to the dense closed form in tests/test_evaluation_scaling.py.
"""
from __future__ import annotations

import typing as tp

import numpy as np
from rectools.models import EASEModel
from scipy import sparse
from scipy.linalg import lapack

MAX_DENSE = 20_000  # the largest dense matrix side: 20k^2 float32 = 1.6 GB
FLOAT64_UP_TO = 8_192  # 8192^2 float64 = 512 MB; larger dense matrices are float32
BATCH_BYTES = 64 << 20  # one batch of scores: batch x items float64
ORIENTATIONS = ("rectools", "steck")


def spd_inverse_(matrix: np.ndarray) -> np.ndarray:
    """Inverts a symmetric positive definite C-contiguous square matrix IN PLACE (Cholesky:
    LAPACK potrf then potri, then the triangle mirrored) and returns it. No second n x n
    buffer is allocated."""
    if not (matrix.flags.c_contiguous and matrix.shape[0] == matrix.shape[1]):
        raise ValueError("spd_inverse_ needs a C-contiguous square matrix")
    potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (matrix,))
    fortran = matrix.T  # the same memory, Fortran order: LAPACK works on it in place
    factor, info = potrf(fortran, lower=False, overwrite_a=True, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"potrf failed ({info}): the matrix is not positive definite")
    inverse, info = potri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"potri failed ({info})")
    if not (np.shares_memory(factor, matrix) and np.shares_memory(inverse, matrix)):
        raise RuntimeError("LAPACK did not work in place")  # would double the memory
    # potri filled the upper triangle of the Fortran view: the lower one of `matrix`.
    n, step = len(matrix), 1024
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = matrix[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        block[upper] = block.T[upper]
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
    return matrix


def dense_gram(rows: sparse.csr_matrix, dtype: tp.Any, step: int = 1024) -> np.ndarray:
    """rows @ rows.T as one dense C-contiguous array, built a block of rows at a time (the
    sparse product of all rows can hold more bytes than the dense result)."""
    n = rows.shape[0]
    out = np.empty((n, n), dtype)
    transposed = rows.T.tocsr()
    for start in range(0, n, step):
        out[start:start + step] = (rows[start:start + step] @ transposed).toarray()
    return out


class ScalableEASEModel(EASEModel):
    """RecTools' EASEModel, fitted by the dual or the in-place primal solve and scored in
    user batches (see the module docstring)."""

    def __init__(self, regularization: float = 500.0, *, max_dense: int = MAX_DENSE,
                 batch_bytes: int = BATCH_BYTES, orientation: str = "rectools"):
        super().__init__(regularization=regularization, recommend_n_threads=1,
                         recommend_use_gpu_ranking=False)
        if orientation not in ORIENTATIONS:
            raise ValueError(f"unknown orientation {orientation!r}; choose from {ORIENTATIONS}")
        self.max_dense = int(max_dense)
        self.batch_bytes = int(batch_bytes)
        self.orientation = orientation
        self.solver = ""  # "dual" or "primal" once fitted
        self.restricted_to: tp.Optional[int] = None  # items kept by the top-N rule
        self.kept_items: tp.Optional[np.ndarray] = None  # their internal ids (None: all)

    def _fit(self, dataset) -> None:  # type: ignore[override]
        x = dataset.get_user_item_matrix(include_weights=True).astype(np.float64).tocsr()
        n_users, n_items = x.shape
        self.kept_items, self.restricted_to = None, None
        if min(n_users, n_items) > self.max_dense:
            # Top-N rule: the max_dense items with the most distinct users; stable ties.
            users_per_item = np.diff(x.tocsc().indptr)
            keep = np.sort(np.argsort(-users_per_item, kind="stable")[:self.max_dense])
            x = x[:, keep].tocsr()
            self.kept_items, self.restricted_to = keep, len(keep)
        self._n_items = n_items
        self._x = x
        lam = float(self.regularization)
        side = min(x.shape)
        dtype = np.float64 if side <= FLOAT64_UP_TO else np.float32
        if x.shape[0] < x.shape[1]:
            self.solver = "dual"
            kernel = dense_gram(x, dtype)
            kernel[np.diag_indices(side)] += lam
            self._kernel_inv = spd_inverse_(kernel)
            self._xt = x.T.tocsr()  # items x users
            # q_j = x_j' K^-1 x_j, a block of items at a time (items x users dense block).
            q = np.empty(x.shape[1])
            step = max(1, self.batch_bytes // (8 * side))
            for start in range(0, x.shape[1], step):
                cols = self._xt[start:start + step]
                q[start:start + step] = np.asarray(
                    cols.multiply(cols @ self._kernel_inv).sum(1)).ravel()
            self._diag = 1.0 - q  # lambda * diag(P)
        else:
            self.solver = "primal"
            gram = dense_gram(x.T.tocsr(), dtype)
            gram[np.diag_indices(side)] += lam
            self._p = spd_inverse_(gram)
            self._p *= lam  # lambda * P
            self._diag = np.diagonal(self._p).astype(np.float64)

    def _times_p(self, rows: sparse.csr_matrix) -> np.ndarray:
        """A dense [batch, items] block: lambda rows P in the primal, lambda rows P - rows in
        the dual (the caller adds the sparse part back, so one dense block per batch)."""
        if self.solver == "primal":
            return np.asarray(rows @ self._p, np.float64)
        coupling = (rows @ self._xt).toarray() @ self._kernel_inv  # [batch, users]
        return -np.asarray(self._xt @ coupling.T).T  # = lambda rows P - rows

    def scores(self, user_ids: np.ndarray) -> np.ndarray:
        """[len(user_ids), items] EASE scores of these internal users (restricted items:
        the kept columns only). With y = x / diag(P) (rectools) or y = x (steck):
        lambda y P = y + dense in the dual, = dense in the primal."""
        x = self._x[user_ids].tocoo()
        inverse_diag = 1.0 / self._diag
        if self.orientation == "steck":  # x B = x - (x P) / diag(P)
            out = self._times_p(sparse.csr_matrix(x))
            out *= -inverse_diag
            sparse_part = x.data * (1.0 - (self.solver == "dual") * inverse_diag[x.col])
        else:  # x B' = x - (x / diag(P)) P
            scaled = x.data * inverse_diag[x.col]
            out = self._times_p(sparse.csr_matrix((scaled, (x.row, x.col)), shape=x.shape))
            out *= -1.0
            sparse_part = x.data - (self.solver == "dual") * scaled
        np.add.at(out, (x.row, x.col), sparse_part)
        return out

    def batch_size(self) -> int:
        return max(1, self.batch_bytes // (8 * self._x.shape[1]))

    def _recommend_u2i(self, user_ids, dataset, k: int, filter_viewed: bool,
                       sorted_item_ids_to_recommend):  # type: ignore[override]
        user_ids = np.asarray(user_ids, np.int64)
        viewed = dataset.get_user_item_matrix(include_weights=False) if filter_viewed else None
        allowed = None
        if sorted_item_ids_to_recommend is not None:
            allowed = np.zeros(self._n_items, bool)
            allowed[np.asarray(sorted_item_ids_to_recommend)] = True
        if self.kept_items is not None:
            allowed = (np.ones(self._n_items, bool) if allowed is None else allowed)[self.kept_items]
        all_users, all_items, all_scores = [], [], []
        step = self.batch_size()
        for start in range(0, len(user_ids), step):
            batch = user_ids[start:start + step]
            scores = self.scores(batch)
            if viewed is not None:
                seen = viewed[batch]
                if self.kept_items is not None:
                    seen = seen[:, self.kept_items]
                rows, cols = seen.nonzero()
                scores[rows, cols] = -np.inf
            if allowed is not None:
                scores[:, ~allowed] = -np.inf
            items, values = top_k(scores, k)
            for user, row_items, row_values in zip(batch, items, values):
                finite = np.isfinite(row_values)
                row_items = row_items[finite]
                if self.kept_items is not None:
                    row_items = self.kept_items[row_items]
                all_users.append(np.full(len(row_items), user, np.int64))
                all_items.append(row_items)
                all_scores.append(row_values[finite])
        if not all_users:
            empty = np.zeros(0, np.int64)
            return empty, empty, np.zeros(0)
        return np.concatenate(all_users), np.concatenate(all_items), np.concatenate(all_scores)


def top_k(scores: np.ndarray, k: int) -> tp.Tuple[np.ndarray, np.ndarray]:
    """Per row, the k best columns, best first (equal scores: the lower column first), and
    their scores."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), np.int64), np.zeros((len(scores), 0))
    if k < scores.shape[1]:
        part = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    items = np.take_along_axis(part, order, axis=1)
    return items, np.take_along_axis(part_scores, order, axis=1)
