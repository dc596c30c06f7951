"""Ternary quantizers TQ1_0 and TQ2_0 (values -1, 0, 1 times the block's absmax), byte-identical with llama.cpp.
Neither reads importance weights (llama.cpp ignores them for these types).

TQ1_0 (54 bytes): qs[48] with 5 trits per byte (qs[0..31] hold elements m + 32n, qs[32..47] 160 + m + 16n),
qh[4] with 4 trits per byte (elements 240 + j + 4m), each byte stored as ceil(value * 256 / 243); fp16 d last.
TQ2_0 (66 bytes): qs[64], 2 bits per element (q + 1) at shift 2n for element 128h + m + 32n; fp16 d last.
"""
from numba import njit, prange

from .blocks import block
from .quant_common import f32, put_f16, roundf

QK_K = 256
TQ1, TQ2 = block("TQ1_0"), block("TQ2_0")


@njit(cache=True, error_model="numpy")
def _absmax_inverse(x):
    amax = f32(0.0)
    for j in range(QK_K):
        v = abs(x[j])
        amax = amax if amax > v else v
    return amax, (f32(1.0) / amax if amax != 0 else f32(0.0))


@njit(cache=True, error_model="numpy")
def _trits(x, o, step, n, idd):
    """Base-3 number of the n trits x[o + k*step]*idd + 1 (first one most significant), in uint8 arithmetic."""
    q = 0
    for k in range(n):
        q = (q * 3 + roundf(x[o + k * step] * idd) + 1) & 0xFF
    return q


@njit(cache=True, error_model="numpy")
def _ceil_256_243(q):
    return ((q * 256 + 242) // 243) & 0xFF


@njit(parallel=True, cache=True, error_model="numpy")
def quant_tq1_0(out, x, qw):
    nb = x.shape[1] // QK_K
    for r in prange(x.shape[0]):
        for b in range(nb):
            xb = x[r, b * QK_K:(b + 1) * QK_K]
            dst = out[r, b * TQ1.size:(b + 1) * TQ1.size]
            d, idd = _absmax_inverse(xb)
            for m in range(32):
                dst[TQ1.qs + m] = _ceil_256_243(_trits(xb, m, 32, 5, idd))
            for m in range(16):
                dst[TQ1.qs + 32 + m] = _ceil_256_243(_trits(xb, 160 + m, 16, 5, idd))
            for j in range(4):
                dst[TQ1.qh + j] = _ceil_256_243((_trits(xb, 240 + j, 4, 4, idd) * 3) & 0xFF)
            put_f16(dst, TQ1.d, d)


@njit(parallel=True, cache=True, error_model="numpy")
def quant_tq2_0(out, x, qw):
    nb = x.shape[1] // QK_K
    for r in prange(x.shape[0]):
        for b in range(nb):
            xb = x[r, b * QK_K:(b + 1) * QK_K]
            dst = out[r, b * TQ2.size:(b + 1) * TQ2.size]
            d, idd = _absmax_inverse(xb)
            for h in range(2):
                for m in range(32):
                    q = 0
                    for n in range(4):
                        q += ((roundf(xb[128 * h + m + 32 * n] * idd) + 1) & 3) << (2 * n)
                    dst[TQ2.qs + 32 * h + m] = q & 0xFF
            put_f16(dst, TQ2.d, d)


QUANTIZERS = {
    "TQ1_0": quant_tq1_0,
    "TQ2_0": quant_tq2_0,
}
