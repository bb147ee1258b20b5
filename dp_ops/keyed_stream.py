"""Keyed, counter-based random streams: one independent stream per released cell.

Every released value's noise is a deterministic function of a per-release secret key and the
cell's identity. Word ``j`` of the stream of cell ``c`` is half of the AES-256 block
``AES_key(c_hi, c_lo + j // 2)``: AES in counter mode, a cryptographically secure pseudorandom
function. Two consequences:

* a Spark task that is recomputed draws exactly the same noise, so a cell can never be released
  with two independent draws;
* which cells share a batch, and in which order, does not change any cell's noise.

The key comes from the operating system's CSPRNG (:func:`new_key`) and must never be logged.
Cell identities are 128-bit values (the first half of a SHA-256 of the cell's canonical key);
the chance that two cells of one release collide is below 2^-60 even at 10^9 cells.

Words are produced ahead, ``BLOCK_WORDS`` per stream in one AES call, and handed out by position;
a stream that runs out is refilled with its next counters, so the words it receives are the same
however they are buffered.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from dp_ops.errors import InternalError

KEY_BYTES = 32
BLOCK_WORDS = 8  # words encrypted ahead per stream (4 AES blocks)
_U64 = np.uint64


def new_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG (``getrandom``)."""
    return os.urandom(KEY_BYTES)


def label_id(label: str) -> np.ndarray:
    """128-bit identity of a label (table/measurement name) as two uint64 words."""
    digest = hashlib.sha256(label.encode("utf-8")).digest()[:16]
    return np.frombuffer(digest, dtype="<u8").copy()


def ids_from_digests(digests: bytes, count: int) -> np.ndarray:
    """Cell identities from ``count`` concatenated 32-byte SHA-256 digests: shape (count, 2)."""
    if len(digests) != 32 * count:
        raise InternalError("cell digests must be 32 bytes each")
    words = np.frombuffer(digests, dtype="<u8").reshape(count, 4)
    return words[:, :2].copy()


class KeyedStreams:
    """Independent random streams, one per row of ``ids``, drawn on demand.

    ``next_words(rows)`` returns one fresh 64-bit word for each listed row (rows must be distinct
    within one call). Each row keeps its own position, so the words a row receives depend only on
    the key, its identity and how many words it consumed before: never on other rows.
    """

    def __init__(self, key: bytes, ids: np.ndarray) -> None:
        if len(key) != KEY_BYTES:
            raise InternalError("stream key must be 32 bytes")
        if ids.ndim != 2 or ids.shape[1] != 2:
            raise InternalError("stream ids must have shape (n, 2)")
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())
        self._ids = ids.astype(_U64, copy=True)
        n = len(ids)
        self._buffer = np.empty((BLOCK_WORDS, n), dtype=_U64)  # position-major: rounds read rows
        self._pos = np.full(n, BLOCK_WORDS, dtype=np.intp)  # empty: filled on first use
        self._refills = np.zeros(n, dtype=_U64)  # how many buffers each row consumed
        if n:
            self._fill(np.arange(n))

    def __len__(self) -> int:
        return len(self._ids)

    def _fill(self, rows: np.ndarray) -> None:
        blocks = BLOCK_WORDS // 2
        plain = np.empty((len(rows), blocks, 2), dtype="<u8")
        plain[:, :, 0] = self._ids[rows, 0][:, None]
        counters = self._refills[rows][:, None] * _U64(blocks) + np.arange(blocks, dtype=_U64)
        with np.errstate(over="ignore"):
            plain[:, :, 1] = self._ids[rows, 1][:, None] + counters
        encryptor = self._cipher.encryptor()
        cipher = encryptor.update(plain.tobytes()) + encryptor.finalize()
        self._buffer[:, rows] = np.frombuffer(cipher, dtype="<u8").reshape(len(rows), BLOCK_WORDS).T
        self._refills[rows] += _U64(1)
        self._pos[rows] = 0

    def next_words(self, rows: np.ndarray) -> np.ndarray:
        """One uniformly random uint64 for each row index in ``rows`` (distinct indices)."""
        rows = np.asarray(rows, dtype=np.intp)
        pos = self._pos[rows]
        empty = pos >= BLOCK_WORDS
        if empty.any():
            self._fill(rows[empty])
            pos = self._pos[rows]
        self._pos[rows] = pos + 1
        out: np.ndarray = self._buffer[pos, rows]
        return out
