"""Causal attention of a block of prompt tokens (prefill), with ops.attention's rounding (llama.cpp's non-flash path:
on an f16 cache q rounded to f16 for q.k, probabilities to f16 before they weight the values, the softmax sum in
float64, the same vectorized exp) but organized as small GEMMs:

ops.attention takes one query at a time: each score is a 64-element dot product ending in a horizontal sum, and
every query reads all cached keys and values again. Here a work item is one head and TB consecutive queries; the
head's keys are widened once per call into a transposed float plane kt[i, j] and its values into floats, so scores
are rows S[t, :] += q[t, i] * kt[i, :] (vectorized over keys, eight i a pass) and the values are weighed eight rows a
pass for all TB queries while those rows are in L1. Work items are (head, query block) pairs, so two threads stay
balanced with 9 heads. Only the summation order differs from ops.attention.
"""

import numpy as np
from numba import njit, prange

from ._isa import FAST
from ._common import copy_into
from ._ir import widen
from .ops import _round_as_cache, softmax_scaled

TB = 8      # queries per work item


@njit(cache=True, parallel=True, fastmath=FAST)
def _widen_heads(kt, vf, k_cache, v_cache, end):
    for hk in prange(kt.shape[0]):
        for j in range(end):
            for i in range(kt.shape[1]):
                kt[hk, i, j] = widen(k_cache[hk, j, i])
            for i in range(vf.shape[2]):
                vf[hk, j, i] = widen(v_cache[hk, j, i])


@njit(cache=True, fastmath=FAST, inline="always")
def _add8(dst, c, r0, r1, r2, r3, r4, r5, r6, r7):
    """dst += c[0] r0 + ... + c[7] r7: one chain of fused multiply-adds per vector of dst (scores: c a query's eight
    dimensions, r the keys' values in them; weighing: c eight probabilities, r their value rows)."""
    c0, c1, c2, c3, c4, c5, c6, c7 = c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    for j in range(dst.shape[0]):
        dst[j] = (dst[j] + c0 * r0[j] + c1 * r1[j] + c2 * r2[j] + c3 * r3[j] + c4 * r4[j] + c5 * r5[j]
                  + c6 * r6[j] + c7 * r7[j])


@njit(cache=True, fastmath=FAST, inline="always")
def _scores(s, qb, kt, first, nk, tb):
    """s[t, j] = qb[t] . kt[:, first + j] for t < tb, j < nk: eight i a pass, one chain of fused multiply-adds per
    vector of keys (32 G multiply-adds/s on one core here; four i as a sum tree: 22)."""
    dk = qb.shape[1]
    s[:tb, :nk] = 0.0
    i = 0
    while i + 8 <= dk:
        k0, k1, k2, k3 = kt[i, first:first + nk], kt[i + 1, first:first + nk], kt[i + 2, first:first + nk], kt[
            i + 3, first:first + nk]
        k4, k5, k6, k7 = kt[i + 4, first:first + nk], kt[i + 5, first:first + nk], kt[i + 6, first:first + nk], kt[
            i + 7, first:first + nk]
        for t in range(tb):
            _add8(s[t], qb[t, i:i + 8], k0, k1, k2, k3, k4, k5, k6, k7)
        i += 8
    while i < dk:
        k0 = kt[i, first:first + nk]
        for t in range(tb):
            q0 = qb[t, i]
            row = s[t]
            for j in range(nk):
                row[j] += q0 * k0[j]
        i += 1


@njit(cache=True, fastmath=FAST, inline="always")
def _weigh(acc, p, vf, first, nk, tb):
    """acc[t] = sum_j p[t, j] vf[first + j] for t < tb: eight value rows a pass (in L1 for all tb queries)."""
    acc[:tb, :] = 0.0
    dv = acc.shape[1]
    j = 0
    while j + 8 <= nk:
        o = first + j
        v0, v1, v2, v3, v4, v5, v6, v7 = vf[o], vf[o + 1], vf[o + 2], vf[o + 3], vf[o + 4], vf[o + 5], vf[o + 6], vf[
            o + 7]
        for t in range(tb):
            _add8(acc[t], p[t, j:j + 8], v0, v1, v2, v3, v4, v5, v6, v7)
        j += 8
    while j < nk:
        v0 = vf[first + j]
        for t in range(tb):
            w0 = p[t, j]
            a = acc[t]
            for i in range(dv):
                a[i] += w0 * v0[i]
        j += 1


@njit(cache=True, parallel=True, fastmath=FAST)
def attention_prefill(out, q, k_cache, v_cache, start, scale, window, softcap):
    """ops.attention's contract (out (n, n_head, dv), q (n, n_head, dk), caches (n_kv, n_ctx, d) f16 bits or f32,
    keys of the n queries already stored), for a block of queries."""
    n, n_head, dk = q.shape
    n_kv = k_cache.shape[0]
    dv = v_cache.shape[2]
    end = start + n
    kt = np.empty((n_kv, dk, end), np.float32)
    vf = np.empty((n_kv, end, dv), np.float32)
    _widen_heads(kt, vf, k_cache, v_cache, end)
    nblk = (n + TB - 1) // TB
    for item in prange(n_head * nblk):
        _attend_block(out, q, kt, vf, k_cache, v_cache, item // nblk, item % nblk, start, scale, window, softcap)


@njit(cache=True, fastmath=FAST)
def _attend_block(out, q, kt, vf, k_cache, v_cache, h, blk, start, scale, window, softcap):
    """One work item: head h's queries blk * TB .. + TB. A function of its own, not the prange loop's body: the
    kernel then compiles in 13 s instead of 17.5 (cold, on this AVX2 Zen 3)."""
    n, n_head, dk = q.shape
    dv = vf.shape[2]
    hk = h // (n_head // kt.shape[0])
    t0 = blk * TB
    tb = min(n, t0 + TB) - t0
    last = start + t0 + tb - 1
    first = max(0, start + t0 - window + 1) if window > 0 else 0
    nk = last + 1 - first
    qb = np.empty((TB, dk), np.float32)
    s = np.empty((TB, nk), np.float32)
    acc = np.empty((TB, dv), np.float32)
    for t in range(tb):     # copy_into, not array = array: numba's shape-checking copy costs 3 s of compile
        copy_into(qb[t], q[t0 + t, h])
        _round_as_cache(qb[t], k_cache)
    _scores(s, qb, kt[hk], first, nk, tb)
    for t in range(tb):
        pos = start + t0 + t
        lo = (max(0, pos - window + 1) if window > 0 else 0) - first
        hi = pos + 1 - first
        probs = s[t, lo:hi]
        softmax_scaled(probs, scale, softcap)
        _round_as_cache(probs, v_cache)
        row = s[t]
        row[:lo] = 0.0
        row[hi:] = 0.0
    _weigh(acc, s, vf[hk], first, nk, tb)
    for t in range(tb):
        copy_into(out[t0 + t, h], acc[t])
