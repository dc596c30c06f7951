"""Pieces shared by the kernel families: fp16 reads from raw blocks, activation planes, flat dot loops, the
generic prefill matmul.

Repacked layouts (the per-type table is in each family's module docstring). Every plane is a 2-D array, one row per
weight row:
  NIB     u8  (rows, cols/2)  byte i: low nibble = element 32*(i>>4) + (i&15), high nibble = that + 16
                              (the Q4_0 block order: 16 bytes per 32 elements, so one scale covers a byte)
  I8      i8  (rows, cols)    natural order
  CRUMB   u8  (rows, cols/4)  byte k, bits 2t..2t+1 = element 4k + t (one scale per byte: TQ types)
  CRUMB16 u8  (rows, cols/4)  byte 16R + j, crumb t = element 64R + 16t + j (per-16 scales: Q2_K, Q3_K)
  BITS16  u8  (rows, cols/8)  byte 16R + j, bit t = element 128R + 16t + j (Q3_K's high bit)
Scales are f32 or fp16 per group in the same row, or compact (int8 / u8 per group + f32 per 256) and widened per
row into a per-worker scratch inside the kernel.

Why this shape: LLVM vectorizes long flat loops over contiguous bytes and little else (REFERENCE.md section 10).
Codes are turned into floats without integer arithmetic (numba widens every int op to 64 bits, which halves the
vector width): for a byte b, floor(b / 2^k) is exact in float32, so the fields of b are differences of such
floors, and the differences are folded into the activation planes once per token:
  sum_t field_t(b) * X_t = b * Y_0 + sum_{t>0} floor(b / 2^(k t)) * Y_t,   Y_t = X_t - 2^k X_{t-1}.
"""
import numpy as np
from numba import njit, prange

from ._ir import bit_select, f16_to_f32, ubits, widen
from ._fgemm import GROUP, PANEL, column_chunk, pack_tokens, padded_tokens, panel_gemm
from ._isa import FAST, REGISTERS_32, YMM

F32 = np.float32
ROW_TILE = 8      # rows decoded together in matmul (a multiple of 4)
OUTER_TILE = 2 * PANEL   # the same for the outer-product GEMM (_fgemm.py)
# the outer product beats gemm_tile's dot products on x86 from GROUP tokens on: 1.0-1.5x on 16 ymm registers (Zen 3),
# 1.2-1.7x on 32 zmm (Zen 5) (_fgemm.py, bench/KERNELS.md)
OUTER_PRODUCT = YMM or REGISTERS_32
TOK_TILE = 4      # tokens sharing one pass over decoded rows
CACHE_LINE = 64   # bytes


def zeros_on_lines(shape, dtype=np.uint8):
    """A zeroed array whose data starts on a cache line. numpy's large arrays start 16 bytes into a page, so every
    64-byte load of a 16-row record straddled two lines: from aligned copies of the same records the Q4_K kernel ran
    12% faster on a matrix in cache (1 or 2 threads), Q6_K 2-6%; streamed from memory the difference was inside
    this machine's noise (model decode, in-process, alternating)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buf = np.zeros(nbytes + CACHE_LINE, np.uint8)
    start = -buf.ctypes.data % CACHE_LINE
    return buf[start:start + nbytes].view(dtype).reshape(shape)


@njit(cache=True, inline="always")
def copy_into(dst, src):
    """dst[:] = src (1-D, same length) as a plain loop: numba's slice assignment checks for overlap through a
    temporary copy, 7x slower on a 576-float row and 3 GB/s on a 9 KB tile."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, inline="always")
def scale_min_k4(src, o, j):
    """The j-th 6-bit (scale, min) pair of a Q4_K / Q5_K block whose 12 scale bytes start at src[o]."""
    if j < 4:      # int64 on both branches: numba would unify unsigned and signed results to float64
        return np.int64(src[o + j] & 63), np.int64(src[o + j + 4] & 63)
    sc = (src[o + j + 4] & 15) | ((src[o + j - 4] >> 6) << 4)
    mn = (src[o + j + 4] >> 4) | ((src[o + j] >> 6) << 4)
    return np.int64(sc), np.int64(mn)


@njit(cache=True, inline="always")
def f16_at(src, o):
    """The fp16 stored little-endian at src[o:o+2], as float32."""
    return f16_to_f32(np.int64(src[o]) | (np.int64(src[o + 1]) << 8))


@njit(cache=True, inline="always")
def u16_at(src, o):
    """The u16 stored little-endian at src[o:o+2] (an fp16 scale's bits, kept as they are)."""
    return np.uint16(src[o]) | (np.uint16(src[o + 1]) << 8)


# ---------------------------------------------------------------- activation planes (once per token)

@njit(cache=True, fastmath=FAST)
def prep_nib(xa, xb, xs, x):
    """NIB planes with the floor fold: xa = x_lo, xb = x_hi - 16 x_lo; xs = sums of 32-element groups."""
    for b in range(xs.shape[0]):
        s = F32(0.0)
        for j in range(16):
            lo = x[32 * b + j]
            hi = x[32 * b + 16 + j]
            xa[16 * b + j] = lo
            xb[16 * b + j] = hi - F32(16.0) * lo
            s += lo + hi
        xs[b] = s


@njit(cache=True, fastmath=FAST)
def prep_pairs(xlo, xhi, x):
    """NIB planes without the fold (for codebook types)."""
    for b in range(xlo.shape[0] // 16):
        for j in range(16):
            xlo[16 * b + j] = x[32 * b + j]
            xhi[16 * b + j] = x[32 * b + 16 + j]


@njit(cache=True, fastmath=FAST)
def prep_crumbs(y, x):
    """CRUMB planes with the floor fold: y (4, cols/4)."""
    for k in range(y.shape[1]):
        prev = F32(0.0)
        for t in range(4):
            v = x[4 * k + t]
            y[t, k] = v - F32(4.0) * prev
            prev = v


@njit(cache=True, fastmath=FAST)
def group_sums(xs, x):
    g = x.shape[0] // xs.shape[0]
    for b in range(xs.shape[0]):
        s = F32(0.0)
        for j in range(g):
            s += x[b * g + j]
        xs[b] = s


# ---------------------------------------------------------------- flat row loops (the hot part)

@njit(cache=True, fastmath=FAST)
def dot(a, b):
    """sum of widen(a[i]) * b[i] (a f32, or u16 holding fp16): F32 / F16 rows against x, and the per-group offsets
    (mins, folded -8 / -16) as scales against group sums of x."""
    s = F32(0.0)
    for i in range(a.shape[0]):
        s += widen(a[i]) * b[i]
    return s


@njit(cache=True, fastmath=FAST)
def nib_dot(q, d, xa, xb):
    """sum over a NIB row of d[group] * code * x, with prep_nib planes (d: f32, or u16 holding fp16)."""
    s = F32(0.0)
    for i in range(q.shape[0]):
        bf = F32(q[i])
        s += widen(d[i >> 4]) * (bf * xa[i] + np.floor(bf * F32(0.0625)) * xb[i])
    return s


@njit(cache=True, fastmath=FAST)
def crumb_dot(c, d, y):
    """sum over a CRUMB row of d[256-element group] * code * x, with prep_crumbs planes (d f32, or u16 holding
    fp16)."""
    s = F32(0.0)
    for k in range(c.shape[0]):
        bf = F32(c[k])
        a = (bf * y[0, k] + np.floor(bf * F32(0.25)) * y[1, k] + np.floor(bf * F32(0.0625)) * y[2, k]
             + np.floor(bf * F32(0.015625)) * y[3, k])
        s += widen(d[k >> 6]) * a
    return s


@njit(cache=True, fastmath=FAST)
def crumb_dot16(c, s4, y):
    """sum over a CRUMB16 row (run R of 16 bytes: crumb t of byte j = element 64R + 16t + j, in 16-element group
    4R + t) of scale * code * x, with prep_runs16 planes (P=4) and the row's scales as planes s4[t, R] (so the
    index k >> 4 is uniform over a vector: a broadcast). Every crumb has its own scale, so the fields are separated
    in the loop."""
    s = F32(0.0)
    for k in range(c.shape[0]):
        bf = F32(c[k])
        f1 = np.floor(bf * F32(0.25))
        f2 = np.floor(bf * F32(0.0625))
        f3 = np.floor(bf * F32(0.015625))
        g = k >> 4
        s += (s4[0, g] * (bf - F32(4.0) * f1) * y[0, k] + s4[1, g] * (f1 - F32(4.0) * f2) * y[1, k]
              + s4[2, g] * (f2 - F32(4.0) * f3) * y[2, k] + s4[3, g] * f3 * y[3, k])
    return s


@njit(cache=True, fastmath=FAST)
def bits_dot16(h, s8, y):
    """BITS16 rows (bit t of byte j of run R = element 128R + 16t + j, group 8R + t): sum of scale * bit * x with
    prep_runs16 planes (P=8) and scale planes s8[t, R]."""
    s = F32(0.0)
    for k in range(h.shape[0]):
        b = h[k]
        g = k >> 4
        s += (s8[0, g] * bit_select(b, 0, y[0, k]) + s8[1, g] * bit_select(b, 1, y[1, k])
              + s8[2, g] * bit_select(b, 2, y[2, k]) + s8[3, g] * bit_select(b, 3, y[3, k])
              + s8[4, g] * bit_select(b, 4, y[4, k]) + s8[5, g] * bit_select(b, 5, y[5, k])
              + s8[6, g] * bit_select(b, 6, y[6, k]) + s8[7, g] * bit_select(b, 7, y[7, k]))
    return s


@njit(cache=True, fastmath=FAST)
def prep_runs16(y, x):
    """Planes for CRUMB16 (y (4, cols/4)) and BITS16 (y (8, cols/8)): y[t, 16R + j] = x[16P R + 16t + j]."""
    p = y.shape[0]
    for k in range(y.shape[1]):
        base = 16 * p * (k >> 4) + (k & 15)
        for t in range(p):
            y[t, k] = x[base + 16 * t]


@njit(cache=True, fastmath=FAST)
def i8_dot32(q, d, x):
    """sum over an I8 row of d[32-element group] * q * x, d f32 or fp16 bits. (Group sizes are constants: with a variable shift
    LLVM cannot see that a vector's lanes share one scale and gathers it.)"""
    s = F32(0.0)
    for i in range(q.shape[0]):
        s += widen(d[i >> 5]) * F32(q[i]) * x[i]
    return s


# ---------------------------------------------------------------- prefill: decode a row tile once, reuse it
# Decoders write one block at a time through these helpers: a flat store loop that also loads a block scale by
# index (d[i >> 5]) is not vectorized (LLVM cannot bound that load for its aliasing check), a loop over two slices
# with the scale passed in is (8 vs 2.5 G elem/s).

@njit(cache=True, fastmath=FAST)
def affine_i8(ds, qs, s, m):
    """ds[j] = s * qs[j] + m over a block (ds, qs slices of one length)."""
    for j in range(ds.shape[0]):
        ds[j] = s * F32(qs[j]) + m


@njit(cache=True, fastmath=FAST)
def affine_nib(ds, qs, s, m):
    """A NIB block: 16 bytes qs -> 32 floats ds = s * code + m (low nibbles first)."""
    for j in range(16):
        v = qs[j]
        ds[j] = s * ubits(v, 0, 15) + m
        ds[16 + j] = s * ubits(v, 4, 15) + m


@njit(cache=True, fastmath=FAST, inline="always")
def _fma4(a, b, c, e, u, v, s, t, p):
    """One token's step in _dot4x4: its x value p times the 4 weight rows' values u, v, s, t."""
    return a + u * p, b + v * p, c + s * p, e + t * p


@njit(cache=True, fastmath=FAST)
def _dot4x4(w0, w1, w2, w3, x0, x1, x2, x3):
    """The 16 dot products of 4 weight rows with 4 token rows: one pass, 8 loads per 16 multiply-adds."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = F32(0.0)
    c0 = c1 = c2 = c3 = e0 = e1 = e2 = e3 = F32(0.0)
    for i in range(w0.shape[0]):
        u = w0[i]
        v = w1[i]
        s = w2[i]
        t = w3[i]
        a0, b0, c0, e0 = _fma4(a0, b0, c0, e0, u, v, s, t, x0[i])
        a1, b1, c1, e1 = _fma4(a1, b1, c1, e1, u, v, s, t, x1[i])
        a2, b2, c2, e2 = _fma4(a2, b2, c2, e2, u, v, s, t, x2[i])
        a3, b3, c3, e3 = _fma4(a3, b3, c3, e3, u, v, s, t, x3[i])
    return a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, e0, e1, e2, e3


@njit(cache=True, fastmath=FAST)
def _dot2x4(w0, w1, x0, x1, x2, x3):
    """_dot4x4 for 16 vector registers: 2 weight rows with 4 token rows, 8 accumulators. _dot4x4's 16 and their
    loads spill there (AVX2 Zen 3, 128 tokens over a 1536x576 F16 matrix: 53 GFLOP/s, this 145)."""
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = F32(0.0)
    for i in range(w0.shape[0]):
        u = w0[i]
        v = w1[i]
        p, q, s, t = x0[i], x1[i], x2[i], x3[i]
        a0, a1, a2, a3 = _fma4(a0, a1, a2, a3, p, q, s, t, u)
        b0, b1, b2, b3 = _fma4(b0, b1, b2, b3, p, q, s, t, v)
    return a0, a1, a2, a3, b0, b1, b2, b3


@njit(cache=True, inline="always")
def _put_block(out, res, k, col, count):
    """A register block's results (row-major: 4 tokens per row) into out[k:k+4, col:col+count]."""
    for a in range(count):
        for t in range(4):
            out[k + t, col + a] = res[4 * a + t]


@njit(cache=True, fastmath=FAST)
def gemm_tile(out, x, w, r0, nr):
    """out[:, r0:r0+nr] = x @ w[:nr].T for a decoded float tile w (ROW_TILE rows; rows past nr are zeroed),
    in register blocks of 4 tokens and 4 rows (32 vector registers) or 2 rows (16)."""
    n = x.shape[0]
    for j in range(nr, ROW_TILE):
        w[j, :] = F32(0.0)
    k = 0
    while k + TOK_TILE <= n:
        if REGISTERS_32:
            for j in range(0, ROW_TILE, 4):
                _put_block(out, _dot4x4(w[j], w[j + 1], w[j + 2], w[j + 3], x[k], x[k + 1], x[k + 2], x[k + 3]),
                           k, r0 + j, min(4, nr - j))
        else:
            for j in range(0, ROW_TILE, 2):
                _put_block(out, _dot2x4(w[j], w[j + 1], x[k], x[k + 1], x[k + 2], x[k + 3]), k, r0 + j,
                           min(2, nr - j))
        k += TOK_TILE
    while k < n:
        for j in range(nr):
            out[k, r0 + j] = dot(w[j], x[k])
        k += 1


@njit(cache=True, inline="always")
def n_chunks(rows, tile=ROW_TILE):
    """Work items of a prefill kernel: enough to balance two to eight threads, few enough that each thread's
    float tile is allocated a handful of times per call (numba.get_num_threads() would stop numba caching)."""
    return min((rows + tile - 1) // tile, 24)


@njit(cache=True, inline="always")
def tile_span(c, nthreads, rows, tile=ROW_TILE):
    """The tiles [t0, t1) of `tile` rows that worker c of nthreads handles."""
    ntiles = (rows + tile - 1) // tile
    return ntiles * c // nthreads, ntiles * (c + 1) // nthreads


@njit(inline="always")
def float_matmul(out, x, decode, arrays):
    """The prefill kernel of a type: out[:, r] = x @ (row r decoded to floats) for every row. Each worker decodes
    a tile of rows at a time by decode(dst, r, *arrays) into its float tile and runs all tokens over it: on x86
    paths, from GROUP tokens on, the outer-product GEMM of _fgemm.py, else gemm_tile's dot products.
    Inlined only, into the type's own @njit(cache=True, parallel=True) kernel: numba caches no function that takes
    a jitted function as an argument, but once inlined, decode is a call to a global."""
    if OUTER_PRODUCT and x.shape[0] >= GROUP:
        _outer_matmul(out, x, decode, arrays)
    else:
        _dot_matmul(out, x, decode, arrays)


@njit(inline="always")
def _outer_matmul(out, x, decode, arrays):
    n, k_len = x.shape
    rows = out.shape[1]
    npad = padded_tokens(n)
    xp = np.empty(npad * k_len, np.float32)
    pack_tokens(xp, x)
    kc = column_chunk(k_len, npad)
    nt = n_chunks(rows, OUTER_TILE)
    for ch in prange(nt):
        w = np.zeros((OUTER_TILE, k_len), np.float32)
        res = np.empty((OUTER_TILE, npad), np.float32)
        t0, t1 = tile_span(ch, nt, rows, OUTER_TILE)
        for t in range(t0, t1):
            r0 = t * OUTER_TILE
            nr = min(OUTER_TILE, rows - r0)
            for j in range(nr):
                decode(w[j], r0 + j, *arrays)
            for k0 in range(0, k_len, kc):
                panel_gemm(res, w, xp, OUTER_TILE, npad, k_len, k0, min(k_len, k0 + kc))
            for tok in range(n):
                for j in range(nr):
                    out[tok, r0 + j] = res[j, tok]


@njit(inline="always")
def _dot_matmul(out, x, decode, arrays):
    rows = out.shape[1]
    nt = n_chunks(rows)
    for ch in prange(nt):
        w = np.empty((ROW_TILE, x.shape[1]), np.float32)
        t0, t1 = tile_span(ch, nt, rows)
        for t in range(t0, t1):
            r0 = t * ROW_TILE
            nr = min(ROW_TILE, rows - r0)
            for j in range(nr):
                decode(w[j], r0 + j, *arrays)
            gemm_tile(out, x, w, r0, nr)
