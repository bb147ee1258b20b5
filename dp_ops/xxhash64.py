"""Spark's ``xxhash64`` on the driver, vectorized over rows with numpy.

Cell identities (:mod:`pipelines.cells`) are keyed ``xxhash64`` values that Spark computes per
row. For keys that are already on the driver (declared domains, inline public keys) the same
values are computed here, so those keys need no Spark job. The results are bit for bit Spark's:
``xxhash64(c1, c2, ...)`` starts from the seed 42 and hashes each non-null value with the previous
result as its seed; strings are hashed as their UTF-8 bytes (XXH64), integers up to 32 bits, dates
(days) and booleans (1 or 0) as a 4-byte integer, 64-bit integers as an 8-byte one. Values are
little-endian, as on every platform Spark runs on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
Kind = Literal["bytes", "int", "long"]

SEED = 42
P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)


def _rotl(x: U64, r: int) -> U64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _fmix(h: U64) -> U64:
    h = h ^ (h >> np.uint64(33))
    h = h * P2
    h = h ^ (h >> np.uint64(29))
    h = h * P3
    return h ^ (h >> np.uint64(32))


def _round(acc: U64, lane: U64) -> U64:
    return _rotl(acc + lane * P2, 31) * P1


def hash_longs(values: npt.NDArray[np.int64], seeds: U64) -> U64:
    """XXH64 of each 8-byte value with its seed (Spark's ``hashLong``)."""
    with np.errstate(over="ignore"):
        h = seeds + P5 + np.uint64(8)
        h = h ^ (_rotl(values.astype(np.uint64) * P2, 31) * P1)
        return _fmix(_rotl(h, 27) * P1 + P4)


def hash_ints(values: npt.NDArray[np.int64], seeds: U64) -> U64:
    """XXH64 of each value as a 4-byte integer with its seed (Spark's ``hashInt``)."""
    with np.errstate(over="ignore"):
        h = seeds + P5 + np.uint64(4)
        h = h ^ ((values.astype(np.int64) & 0xFFFFFFFF).astype(np.uint64) * P1)
        return _fmix(_rotl(h, 23) * P2 + P3)


def _hash_same_length(data: npt.NDArray[np.uint8], seeds: U64) -> U64:
    """XXH64 of the rows of ``data`` (n x length bytes), each with its seed."""
    n, length = data.shape
    lanes = data[:, : length // 8 * 8].copy().view("<u8").astype(np.uint64)
    zero = np.zeros(n, np.uint64)
    with np.errstate(over="ignore"):
        done = 0
        if length >= 32:
            v = [seeds + P1 + P2, seeds + P2, seeds.copy(), seeds - P1]
            while done + 32 <= length:
                for i in range(4):
                    v[i] = _round(v[i], lanes[:, done // 8 + i])
                done += 32
            h = _rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)
            for i in range(4):
                h = (h ^ _round(zero, v[i])) * P1 + P4
        else:
            h = seeds + P5
        h = h + np.uint64(length)
        while done + 8 <= length:
            h = h ^ _round(zero, lanes[:, done // 8])
            h = _rotl(h, 27) * P1 + P4
            done += 8
        if done + 4 <= length:
            word = data[:, done : done + 4].copy().view("<u4").astype(np.uint64)[:, 0]
            h = h ^ (word * P1)
            h = _rotl(h, 23) * P2 + P3
            done += 4
        while done < length:
            h = h ^ (data[:, done].astype(np.uint64) * P5)
            h = _rotl(h, 11) * P1
            done += 1
        return _fmix(h)


def hash_bytes(data: npt.NDArray[np.uint8], offsets: npt.NDArray[np.int64], seeds: U64) -> U64:
    """XXH64 of each byte string with its seed (Spark's ``hashUnsafeBytes``): string ``i`` is
    ``data[offsets[i]:offsets[i + 1]]`` (Arrow's layout)."""
    lengths = np.diff(offsets)
    out = np.empty(len(lengths), np.uint64)
    for length in np.unique(lengths).tolist():
        rows = np.flatnonzero(lengths == length)
        matrix = data[offsets[rows][:, None] + np.arange(length)]
        out[rows] = _hash_same_length(matrix, seeds[rows])
    return out


Column = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]] | npt.NDArray[np.int64]
"""A column to hash: byte strings as (data, offsets), or integers as int64."""


def spark_xxhash64(
    columns: Sequence[tuple[Kind, Column, npt.NDArray[np.bool_] | None]],
    rows: int,
    leading: Sequence[int] = (),
) -> npt.NDArray[np.int64]:
    """Spark's ``xxhash64(l1, l2, ..., c1, c2, ...)`` for ``rows`` rows, as signed 64-bit integers.

    ``leading``: 64-bit literals hashed first (the key of a keyed hash); ``columns``: per column
    its kind (``"bytes"``, ``"int"`` for 4-byte or ``"long"`` for 8-byte integers), its values and
    a mask of the nulls (skipped, as Spark skips them) or None.
    """
    h = np.full(rows, SEED, np.uint64)
    for literal in leading:
        h = hash_longs(np.full(rows, literal, np.int64), h)
    for kind, values, nulls in columns:
        if kind == "bytes":
            data, offsets = values
            hashed = hash_bytes(data, offsets, h)
        else:
            ints: npt.NDArray[np.int64] = values  # type: ignore[assignment]
            hashed = (hash_longs if kind == "long" else hash_ints)(ints, h)
        h = hashed if nulls is None else np.where(nulls, h, hashed)
    return h.view(np.int64)
