"""Exact linear algebra over GF(2) on bit-packed matrices.

A binary matrix is stored with each row packed into little-endian ``uint64`` words: bit ``j``
of a row lives in word ``j // 64`` at bit position ``j % 64``. Adding two rows over GF(2) is then
a single vectorised XOR over ``ceil(w / 64)`` words, so eliminating a 1536 x 1536 plane (the
largest ResNet-18 layer) takes a fraction of a second.

CBD (Qiaoben et al. 2019) stores each high-order bit-plane ``B`` (h x w) of a layer exactly as
``B = U V (mod 2)`` with ``U`` (h x r), ``V`` (r x w) and ``r`` the GF(2) rank of ``B``. The
authors' elimination (``cbd/gaussian.py``) ties the pivot row to the column index and can
return an ``r`` above the true rank (``[[0, 1], [0, 1]]`` gives 2); here the reduced row
echelon form gives the true rank, ``V`` = its nonzero rows and ``U`` = the pivot columns of
``B``.

References:
    - [Composite Binary Decomposition Networks](https://arxiv.org/abs/1811.06668),
      Qiaoben et al., AAAI 2019.
"""

from __future__ import annotations

import numpy as np

__all__ = ["gf2_factor", "gf2_matmul", "gf2_rank", "pack_rows", "unpack_rows"]

WORD_BITS = 64
# float32 matrix products are exact while every partial sum stays below 2**24 (the float32
# significand), which bounds the inner dimension of ``gf2_matmul``'s BLAS path.
_FLOAT32_EXACT_SUM = 2**24


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """Packs a 2-D {0,1} array into ``uint64`` words per row (bit ``j`` in word ``j // 64``).

    Args:
        bits: array of shape ``(h, w)``; any nonzero entry counts as 1.

    Returns:
        ``uint64`` array of shape ``(h, ceil(w / 64))``; unused high bits of the last word are 0.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"Expected a 2-D binary matrix, but got shape {bits.shape}.")
    h, w = bits.shape
    words = -(-w // WORD_BITS)
    padded = np.zeros((h, words * WORD_BITS), dtype=np.uint8)
    padded[:, :w] = bits != 0
    # packbits(little) puts bit j of a byte group at position j; 8 such bytes read as a
    # little-endian uint64 put bit j at position j of the word.
    packed = np.packbits(padded, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64, copy=False)


def unpack_rows(packed: np.ndarray, width: int) -> np.ndarray:
    """Inverse of :func:`pack_rows`: returns a ``uint8`` {0,1} array of shape ``(h, width)``."""
    packed = np.ascontiguousarray(packed, dtype="<u8")
    as_bytes = packed.view(np.uint8).reshape(packed.shape[0], packed.shape[1] * 8)
    return np.unpackbits(as_bytes, axis=1, count=width, bitorder="little")


def _lowest_set_bit(row: np.ndarray) -> int:
    """Index of the lowest set bit of a packed row (the row must be nonzero)."""
    word = int(np.flatnonzero(row)[0])
    value = int(row[word])
    return word * WORD_BITS + (value & -value).bit_length() - 1


def _eliminate(packed: np.ndarray, *, reduced: bool, limit: int | None) -> list[tuple[int, int]]:
    """Row-by-row Gauss-Jordan elimination over GF(2), in place.

    Row ``t`` is visited after every earlier pivot has been cleared from it, so a nonzero row
    brings a new pivot (its lowest set bit) and a zero row is linearly dependent. The pivot is
    then cleared from every later row and, when ``reduced``, from every earlier pivot row too,
    which yields the reduced row echelon form up to the order of the rows.

    Returns:
        ``(row, column)`` of each pivot in the order found; stops early at ``limit`` pivots.
    """
    h = packed.shape[0]
    pivots: list[tuple[int, int]] = []
    pivot_rows = np.empty(h, dtype=np.intp)
    for t in range(h):
        row = packed[t]
        if not row.any():
            continue
        col = _lowest_set_bit(row)
        word, bit = divmod(col, WORD_BITS)
        mask = np.uint64(1 << bit)
        # Words before `word` are zero in this row: every earlier pivot column was cleared
        # and it has no lower set bit, so only the tail needs XOR-ing.
        tail = packed[t, word:].copy()
        rows = t + 1 + np.flatnonzero(packed[t + 1 :, word] & mask)
        if reduced and pivots:
            earlier = pivot_rows[: len(pivots)]
            earlier = earlier[(packed[earlier, word] & mask) != 0]
            rows = np.concatenate([earlier, rows])
        if rows.size:
            packed[rows, word:] ^= tail
        pivot_rows[len(pivots)] = t
        pivots.append((t, col))
        if limit is not None and len(pivots) >= limit:
            break
    return pivots


def gf2_rank(bits: np.ndarray, limit: int | None = None) -> int:
    """Rank over GF(2) of a binary matrix.

    Args:
        bits: ``(h, w)`` array; nonzero entries count as 1.
        limit: stop counting at this rank (the result is then ``min(rank, limit)``); the
            scale search only needs to know whether the rank exceeds its budget.

    Returns:
        The GF(2) rank, capped at ``limit`` when given.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"Expected a 2-D binary matrix, but got shape {bits.shape}.")
    if bits.shape[0] > bits.shape[1]:  # fewer rows -> fewer elimination steps
        bits = bits.T
    if bits.size == 0:
        return 0
    return len(_eliminate(pack_rows(bits), reduced=False, limit=limit))


def gf2_factor(bits: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Exact factorisation ``B = U V (mod 2)`` at the true GF(2) rank.

    With ``E`` the reduced row echelon form of ``B`` and ``p_1 .. p_r`` its pivot columns,
    ``V = E[:r]`` has the identity at the pivot columns, so ``B[:, p] = U`` and ``B = U V``.
    The elimination runs on the orientation with fewer rows and transposes the result back.

    Args:
        bits: ``(h, w)`` binary array.

    Returns:
        ``(r, U, V)``: the rank, ``U`` of shape ``(h, r)`` and ``V`` of shape ``(r, w)``, both
        ``uint8`` {0,1}.
    """
    bits = (np.asarray(bits) != 0).astype(np.uint8)
    if bits.ndim != 2:
        raise ValueError(f"Expected a 2-D binary matrix, but got shape {bits.shape}.")
    transposed = bits.shape[0] > bits.shape[1]
    work = bits.T if transposed else bits
    packed = pack_rows(work)
    pivots = _eliminate(packed, reduced=True, limit=None)
    rows = np.array([t for t, _ in pivots], dtype=np.intp)
    cols = np.array([c for _, c in pivots], dtype=np.intp)
    order = np.argsort(cols, kind="stable")
    rows, cols = rows[order], cols[order]
    right = unpack_rows(packed[rows], work.shape[1])  # (r, w') reduced echelon rows
    left = np.ascontiguousarray(work[:, cols])  # (h', r)
    if transposed:  # B^T = L R  =>  B = R^T L^T
        left, right = right.T, left.T
    return len(pivots), np.ascontiguousarray(left), np.ascontiguousarray(right)


def gf2_matmul(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``(left @ right) mod 2`` for {0,1} matrices, as ``uint8``.

    Uses a float32 BLAS product, exact while the inner dimension is below 2**24.
    """
    left, right = np.asarray(left), np.asarray(right)
    if left.shape[1] != right.shape[0]:
        raise ValueError(f"Cannot multiply shapes {left.shape} and {right.shape}.")
    if left.shape[1] >= _FLOAT32_EXACT_SUM:
        product = left.astype(np.int64) @ right.astype(np.int64)
    else:
        product = left.astype(np.float32) @ right.astype(np.float32)
    return (product.astype(np.int64) % 2).astype(np.uint8)
