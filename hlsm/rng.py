"""Counter-based randomness and stable hashes (splitmix64), vectorized with numpy.

Every random number an item uses is a pure function of (stream key, item index, attempt, slot):
items can be fetched by index in any order, and streams of different seeds or split names never
overlap (the key is a hash of both, unlike ``seed + index`` schemes). The same hashes, in plain
Python, decide which hash bucket a composition or an input string falls in, so split membership
never depends on sampling order.
"""

from __future__ import annotations

import hashlib

import numpy as np

MASK = (1 << 64) - 1
_G, _M1, _M2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
N_BUCKETS = 1000  # partitions split composition and input spaces into this many hash buckets


def mix(z: int) -> int:
    """splitmix64 finalizer on a Python int (the scalar twin of ``mix_array``)."""
    z = (z + _G) & MASK
    z = ((z ^ (z >> 30)) * _M1) & MASK
    z = ((z ^ (z >> 27)) * _M2) & MASK
    return z ^ (z >> 31)


def mix_array(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (wrapping arithmetic)."""
    z = z + np.uint64(_G)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
    return z ^ (z >> np.uint64(31))


def stream_key(*parts) -> int:
    """A 64-bit key from any printable parts (seed, split name, ...), stable across runs."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def uniforms(key: int, stream: int, index: np.ndarray, attempt: int, n_slots: int) -> np.ndarray:
    """Uniform floats in [0, 1), shape (len(index), n_slots), a pure function of all arguments."""
    item = mix_array(np.uint64(key) ^ mix_array(index.astype(np.uint64)))
    salt = (np.uint64(stream) << np.uint64(56)) | (np.uint64(attempt) << np.uint64(16))
    slots = salt | np.arange(n_slots, dtype=np.uint64)
    bits = mix_array(item[:, None] ^ mix_array(slots)[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


# --- partition hashes: which bucket a composition / an input falls in --------------------------


def _partition_key(partition_seed: int, what: int) -> int:
    return mix((partition_seed * 0x100000001B3 + what) & MASK)


def composition_bucket(codes: tuple[int, ...], partition_seed: int) -> int:
    """Bucket in [0, N_BUCKETS) of a composition given as module codes (routing*24 + skill)."""
    h = mix(_partition_key(partition_seed, 1) ^ len(codes))
    for c in codes:
        h = mix(h ^ (c + 1))
    return h % N_BUCKETS


def composition_buckets(codes: np.ndarray, depth: np.ndarray, partition_seed: int) -> np.ndarray:
    """Vectorized ``composition_bucket``: codes (n, max_depth) int, depth (n,) int."""
    h = mix_array(np.uint64(_partition_key(partition_seed, 1)) ^ depth.astype(np.uint64))
    for t in range(codes.shape[1]):
        stepped = mix_array(h ^ (codes[:, t].astype(np.uint64) + np.uint64(1)))
        h = np.where(t < depth, stepped, h)
    return (h % np.uint64(N_BUCKETS)).astype(np.int64)


def input_bucket(x: str, partition_seed: int) -> int:
    """Bucket in [0, N_BUCKETS) of an input string."""
    h = mix(_partition_key(partition_seed, 2) ^ len(x))
    for c in x:
        h = mix(h ^ ord(c))
    return h % N_BUCKETS


def input_buckets(chars: np.ndarray, length: np.ndarray, partition_seed: int) -> np.ndarray:
    """Vectorized ``input_bucket``: chars (n, max_len) of character codes, length (n,)."""
    h = mix_array(np.uint64(_partition_key(partition_seed, 2)) ^ length.astype(np.uint64))
    for t in range(chars.shape[1]):
        stepped = mix_array(h ^ chars[:, t].astype(np.uint64))
        h = np.where(t < length, stepped, h)
    return (h % np.uint64(N_BUCKETS)).astype(np.int64)
