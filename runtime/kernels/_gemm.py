"""Integer prefill GEMM, llama.cpp's way: activations quantized once per token (Q8_0 / Q8_K codes,
kernels/actquant.py), weights as unsigned bytes, products summed exactly in int32 by vpdpbusd (or AVX2's pair of
multiply-adds: _isa.py), one float multiply-add per 32-block.

The matvec kernels (_vnni.py) put 64 consecutive codes of one row in a vector, so every 32-block of every
(row, token) pair costs an int -> float conversion and a scale vector: about as many instructions as the float
GEMM. Here the 16 int32 lanes of a vector are 16 rows instead (as llama.cpp's repacked Q4_0x8 GEMM): a tile of 16
weight rows is first decoded (once per call) into TILE order

    wt[b, g, 4j + u] = code of row j, element 32b + 4g + u    (b: 32-block, g: 4-element group, j: row 0..15)

as unsigned bytes (code + a type's offset), so one vpdpbusd multiplies 4 codes of each of the 16 rows by the same
4 activation codes of one token (a 32-bit broadcast) and adds them to that row's lane. A 32-block of 16 rows and
one token is 8 vpdpbusd into int32 accumulators (CHAINS of them, added at the end; the first starts at -offset *
(sum of the token's codes in the block)), then one conversion and one fused multiply-add by (the 16 rows' block
scales) * (the token's block scale): 512 multiply-adds in 12-13 instructions, against 32 for the float GEMM. Each
weight vector is loaded once per block and used for TOK tokens. On 256-bit registers (AVX2, AVX-VNNI: 16 of them)
the tile's two 8-row halves run one after the other, TOK256 tokens a pass (_gemm_codegen_256 says why and how the
AVX2 products are summed). On AArch64 with i8mm, usmmla multiplies pairs of rows by pairs of tokens
(_gemm_codegen_mmla).

The tile is decoded by shuffles in IR too (16 rows' blocks loaded, transposed 4-byte-wise, crumbs split; layouts
that already interleave 16 rows, blocks16.py and kquants_rows16.py, only split nibbles and look up the IQ4 codebook by
vpshufb), so decoding costs a few percent of the GEMM even at 128 tokens.

What a weight type provides (legacy.py, ternary.py, blocks16.py; K-quants the same way, see bench/KERNELS.md):
  - a tile decoder writing wt (codes + offset, as u8) and the per-block scales ws[b, j] (and mins wm[b, j]);
  - the offset: the u8 code minus the value the type multiplies, taken out as -offset * sum(x codes);
  - which activation rounding (q8_0 / q8_k) the dot product uses.
"""
import functools

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ._common import tile_span
from ._ir import widen
from ._isa import (CPU_PATH, FAST, WIDE_UNBIASED, YMM, dot4, dot4_256, join_all, maddubs,
                   maddwd)
from ._vnni import (_F32, _I8, _I16, _I32, _I64, _V16F, _V16I32, _V64I8, _as_i64, _c64, _data, _declare, _splat,
                    _vec_load, counted_loop as _loop)
from .actquant import q8_codes, q8_k_codes
from .intdot import code_sums

ROWS = 16         # rows of a tile: the 16 int32 lanes of a vector
# tokens sharing one load of a tile block's 8 weight vectors, and accumulators per token and block: on AVX-512 the
# latency of vpdpbusd (5 cycles) over a block's 8 dependent steps was the limit (two accumulators and six tokens:
# 1.2x on 2048- and 5632-wide tiles; eight tokens spilled); AArch64 holds a 512-bit value in four registers
TOK, CHAINS = (6, 2) if CPU_PATH == "avx512vnni" else (4, 1)
# the same on ymm values (_gemm_codegen_256): AVX-VNNI's vpdpbusd as two chains of three tokens (1.5x one chain of
# two: the same latency limit); AVX2's multiply-adds run in pairs already, and three or four tokens spilled there
TOK256, CHAINS256 = (3, 2) if CPU_PATH == "avxvnni" else (2, 1)
KC = 24           # 32-blocks of a tile (24 KiB of split weights) multiplied by every token before the next ones

_I1 = ir.IntType(1)
_V8F, _V8I32 = ir.VectorType(_F32, 8), ir.VectorType(_I32, 8)
_V32I8, _V16I16 = ir.VectorType(_I8, 32), ir.VectorType(_I16, 16)
_V4I32 = ir.VectorType(_I32, 4)


def _vstore(builder, value, base, offset):
    builder.store(value, builder.bitcast(builder.gep(base, [offset]), value.type.as_pointer()), align=1)


def _is_c(t, *dtypes):
    return isinstance(t, types.Array) and t.layout == "C" and t.dtype in dtypes


# ---------------------------------------------------------------- the GEMM of one decoded tile

class _GemmArgs:
    """The IR values of a tile GEMM's arguments (_gemm_signature's order)."""
    def __init__(self, context, builder, signature, args):
        sig = signature.args
        self.out_p = _data(context, builder, sig[0], args[0], _F32)
        self.ld, self.r0, self.nr = (_as_i64(builder, a) for a in args[1:4])
        self.wt_p = _data(context, builder, sig[4], args[4], _I8)
        self.ws_p = _data(context, builder, sig[5], args[5], _F32)
        self.wm_p = _data(context, builder, sig[6], args[6], _F32)
        self.xq_p = _data(context, builder, sig[7], args[7], _I8)
        self.xd_p = _data(context, builder, sig[8], args[8], _F32)
        self.xo_p = _data(context, builder, sig[9], args[9], _I32)
        self.xm_p = _data(context, builder, sig[10], args[10], _F32)
        self.n, self.nb = _as_i64(builder, args[11]), _as_i64(builder, args[12])
        self.k = builder.mul(self.nb, _c64(32))          # a token's codes

    def token_groups(self, builder, tokens, tok=TOK):
        """tokens(builder, t0, count) for each tok tokens from 0, then for each two left (where tok > 2), then for
        the last one."""
        t_end = _c64(0)
        for size in (tok, 2, 1) if tok > 2 else (tok, 1):
            def group(b, t0, _, size=size):
                tokens(b, t0, size)
                return []

            t_end, _ = _loop(builder, t_end, self.n, _c64(size), [], group, f"tok{size}")

    def chains(self, b, tbs, h, halves, count, vtype, unbiased):
        """Per token (tbs: its block's index), `count` int32 accumulators of half h of the block: the first starts at
        the token's offset term xo (at zero where the path's dot products leave the offset out), the others at zero
        (several: a block's dot products as independent chains)."""
        zero = ir.Constant(vtype, None)
        return [[zero if unbiased else _splat(b, b.load(b.gep(self.xo_p, [b.add(b.mul(tb, _c64(halves)), _c64(h))])),
                                              vtype)] + [zero] * (count - 1) for tb in tbs]

    def add_mins(self, b, new, tbs, i, halves, vtype, row0=0):
        """new[t] + wm * xm (each half's rows' mins times the token's xm there) for each token."""
        for h in range(halves):
            wm = _vec_load(b, self.wm_p, b.add(b.mul(i, _c64(16 * halves)), _c64(16 * h + row0)), vtype)
            for t, tb in enumerate(tbs):
                xm = b.load(b.gep(self.xm_p, [b.add(b.mul(tb, _c64(halves)), _c64(h))]))
                new[t] = b.fadd(new[t], b.fmul(wm, _splat(b, xm, vtype), flags=("contract",)), flags=("contract",))

    def x_quad(self, b, tok, i, g, lanes):
        """Token tok's 4 codes of group g of block i, broadcast to `lanes` int32 lanes."""
        at = b.add(b.add(b.mul(tok, self.k), b.mul(i, _c64(32))), _c64(4 * g))
        xv = b.load(b.bitcast(b.gep(self.xq_p, [at]), _I32.as_pointer()), align=1)
        return b.bitcast(_splat(b, xv, ir.VectorType(_I32, lanes)), ir.VectorType(_I8, 4 * lanes))


def _gemm_codegen_512(with_min, wide=False, halves=1, small=False):
    """out[t, r0 + j] = sum_b (ws[b, j] xd[t, b]) (xo[t, b] + sum_k wt codes * xq[t, k]) (+ wm[b, j] xm[t, b])
    for every token t, j < nr (masked stores). wide: codes up to 255 (a signed value + 128, xo = -128 * code sum),
    whose offset a WIDE_UNBIASED path takes out in the dot products themselves (_isa). halves = 2: a scale per 16
    elements, each half of a block summed in an accumulator of its own (ws 32 floats and xo 2 values a block: the
    first half's, then the second's; with_min: wm and xm the same way). 512-bit values: the 16 rows of a tile in one
    vector, 32 registers."""
    unbiased = wide and WIDE_UNBIASED
    per_half = 8 // halves
    def codegen(context, builder, signature, args):
        a = _GemmArgs(context, builder, signature, args)
        mstore = _declare(builder.module, "llvm.masked.store.v16f32.p0", ir.VoidType(),
                          [_V16F, _V16F.as_pointer(), _I32, ir.VectorType(_I1, 16)])
        bits = builder.sub(builder.shl(_c64(1), a.nr), _c64(1))
        mask = builder.bitcast(builder.trunc(bits, _I16), ir.VectorType(_I1, 16))

        def tokens(builder, t0, ntok):
            def block(b, i, faccs):
                toks = [b.add(t0, _c64(t)) for t in range(ntok)]
                tbs = [b.add(b.mul(tok, a.nb), i) for tok in toks]
                new = list(faccs)
                for h in range(halves):
                    chains = a.chains(b, tbs, h, halves, CHAINS, _V16I32, unbiased)
                    for g in range(per_half * h, per_half * (h + 1)):
                        wv = _vec_load(b, a.wt_p, b.add(b.mul(i, _c64(512)), _c64(64 * g)), _V64I8)
                        for t, tok in enumerate(toks):
                            c = g % CHAINS
                            chains[t][c] = dot4(b, chains[t][c], wv, a.x_quad(b, tok, i, g, 16), wide)
                    ws = _vec_load(b, a.ws_p, b.add(b.mul(i, _c64(16 * halves)), _c64(16 * h)), _V16F)
                    for t, tb in enumerate(tbs):
                        acc = functools.reduce(b.add, chains[t])
                        xd = _splat(b, b.load(b.gep(a.xd_p, [tb])), _V16F)
                        new[t] = b.fadd(new[t], b.fmul(b.sitofp(acc, _V16F), b.fmul(ws, xd), flags=("contract",)),
                                        flags=("contract",))
                if with_min:
                    a.add_mins(b, new, tbs, i, halves, _V16F)
                return new

            _, faccs = _loop(builder, _c64(0), a.nb, _c64(1), [(_V16F, ir.Constant(_V16F, None))] * ntok, block,
                             "blk")
            for t in range(ntok):
                row = builder.add(builder.mul(builder.add(t0, _c64(t)), a.ld), a.r0)
                dst = builder.bitcast(builder.gep(a.out_p, [row]), _V16F.as_pointer())
                builder.call(mstore, [faccs[t], dst, ir.Constant(_I32, 4), mask])

        a.token_groups(builder, tokens)
        return context.get_dummy_value()
    return codegen


def _gemm_codegen_256(with_min, wide=False, halves=1, small=False):
    """The same GEMM on ymm values (16 registers: the 512-bit version, then with four tokens' 16-lane accumulators
    and a block's eight weight vectors live, spilled on AVX2 and ran at 0.4x the multiplies' speed): the tile's two
    8-row halves one after the other, its weight vectors loaded one 4-element group at a time for TOK256 tokens
    (AVX-VNNI: each token's dot products in CHAINS256 accumulators). AVX2: the wide codes' |w| (and w for the
    activations' signs, _isa.signed_pair) once per group and TOK256 tokens; the products of narrow codes (at most
    31: 4 x 2 x 31 x 127 per i16 lane) add up in i16 for four groups before a vpmaddwd, wide ones for two where they
    are small (|w| < 64: the lattice types' grids, the IQ3 codebooks), else none."""
    unbiased = wide and WIDE_UNBIASED
    per_half = 8 // halves
    vnni = CPU_PATH == "avxvnni"
    split = wide and SPLIT_WIDE
    per_sum = (2 if small else 1) if wide else 4
    ones = ir.Constant(_V16I16, [1] * 16)
    def codegen(context, builder, signature, args):
        a = _GemmArgs(context, builder, signature, args)
        mstore = _declare(builder.module, "llvm.masked.store.v8f32.p0", ir.VoidType(),
                          [_V8F, _V8F.as_pointer(), _I32, ir.VectorType(_I1, 8)])
        mload = _declare(builder.module, "llvm.masked.load.v8f32.p0", _V8F,
                         [_V8F.as_pointer(), _I32, ir.VectorType(_I1, 8), _V8F])
        psign = _declare(builder.module, "llvm.x86.avx2.psign.b", _V32I8, [_V32I8, _V32I8]) if split else None
        bits = builder.sub(builder.shl(_c64(1), a.nr), _c64(1))
        zero = ir.Constant(_V8F, None)

        def rows(builder, h, c0, c1):
            mask = builder.bitcast(builder.trunc(builder.lshr(bits, _c64(8 * h)), _I8), ir.VectorType(_I1, 8))
            first = builder.icmp_signed("==", c0, _c64(0))

            def tokens(builder, t0, ntok):
                toks = [builder.add(t0, _c64(t)) for t in range(ntok)]
                dsts = [builder.bitcast(builder.gep(a.out_p, [builder.add(builder.add(builder.mul(tok, a.ld), a.r0),
                                                                          _c64(8 * h))]), _V8F.as_pointer())
                        for tok in toks]
                starts = [builder.select(first, zero, builder.call(mload, [dst, ir.Constant(_I32, 4), mask, zero]))
                          for dst in dsts]

                def block(b, i, faccs):
                    new = list(faccs)
                    tbs = [b.add(b.mul(tok, a.nb), i) for tok in toks]
                    xds = [_splat(b, b.load(b.gep(a.xd_p, [tb])), _V8F) for tb in tbs]
                    for hh in range(halves):
                        chains = a.chains(b, tbs, hh, halves, CHAINS256, _V8I32, unbiased)
                        pending = [None] * ntok
                        for g in range(per_half * hh, per_half * (hh + 1)):
                            at = b.add(b.mul(i, _c64(512)), _c64(64 * g + 32 * h))
                            u = _vec_load(b, a.wt_p, at, _V32I8)
                            if split:       # the tile's signed weights, their magnitudes nb * 512 bytes on
                                w, mag = u, _vec_load(b, a.wt_p, b.add(at, b.mul(a.nb, _c64(512))), _V32I8)
                            for t, tok in enumerate(toks):
                                x = a.x_quad(b, tok, i, g, 8)
                                if vnni:
                                    c = g % CHAINS256
                                    chains[t][c] = dot4_256(b, chains[t][c], u, x)
                                    continue
                                if wide:
                                    part = maddubs(b, mag, b.call(psign, [x, w]))
                                else:
                                    part = maddubs(b, u, x)
                                pending[t] = part if pending[t] is None else b.add(pending[t], part)
                                if (g + 1) % per_sum == 0 or g + 1 == per_half * (hh + 1):
                                    chains[t][0] = b.add(chains[t][0], maddwd(b, pending[t], ones))
                                    pending[t] = None
                        ws = _vec_load(b, a.ws_p, b.add(b.mul(i, _c64(16 * halves)), _c64(16 * hh + 8 * h)), _V8F)
                        for t in range(ntok):
                            acc = functools.reduce(b.add, chains[t])
                            new[t] = b.fadd(new[t], b.fmul(b.sitofp(acc, _V8F), b.fmul(ws, xds[t]),
                                                           flags=("contract",)), flags=("contract",))
                    if with_min:
                        a.add_mins(b, new, tbs, i, halves, _V8F, 8 * h)
                    return new

                _, faccs = _loop(builder, c0, c1, _c64(1), [(_V8F, v) for v in starts], block, "blk")
                for facc, dst in zip(faccs, dsts):
                    builder.call(mstore, [facc, dst, ir.Constant(_I32, 4), mask])

            a.token_groups(builder, tokens, TOK256)

        # the tile's blocks in chunks of at most KC (24 KiB of split weights), each multiplied by every token before
        # the next: a whole tile of 2048 columns (64 KiB) did not stay in L1 (0.85x)
        chunks = builder.sdiv(builder.add(a.nb, _c64(KC - 1)), _c64(KC))
        per_chunk = builder.sdiv(builder.add(a.nb, builder.sub(chunks, _c64(1))), chunks)

        def chunk(b, k, _):
            c0 = b.mul(k, per_chunk)
            c1 = b.add(c0, per_chunk)
            c1 = b.select(b.icmp_signed("<", c1, a.nb), c1, a.nb)
            for h in range(2):
                rows(b, h, c0, c1)
            return []

        _loop(builder, _c64(0), chunks, _c64(1), [], chunk, "kc")
        return context.get_dummy_value()
    return codegen


def _gemm_codegen_mmla(with_min, wide=False, halves=1, small=False):
    """The same GEMM by AArch64's int8 matrix multiply (i8mm's usmmla: a 2 x 8 block of unsigned weight codes times
    a 2 x 8 block of signed activation codes, the 2 x 2 int32 products added to one 128-bit accumulator, 32
    multiply-adds an instruction against usdot's 16). Its operands come paired: the tile's rows two by two
    (pair_rows: 8 codes of row 2q, then of row 2q + 1), the tokens two by two (pair_tokens), so each accumulator
    holds (row 2q, row 2q + 1) x (token 2p, token 2p + 1) and its float sum is scaled by (those rows' scales) x
    (those tokens' scales) as it stands; the tokens are taken apart at the store. 8 rows of the tile (4 weight
    registers) a pass and two token pairs a weight load: 8 int32 and 8 float accumulators, 22 of the 32 registers."""
    assert not (wide and WIDE_UNBIASED)       # usmmla multiplies unsigned codes: the offset term stays the caller's
    steps = 4 // halves                       # 8-code steps a scale covers
    v4f, v16i8 = ir.VectorType(_F32, 4), ir.VectorType(_I8, 16)
    def codegen(context, builder, signature, args):
        a = _GemmArgs(context, builder, signature, args)
        mmla = _declare(builder.module, "llvm.aarch64.neon.usmmla.v4i32.v16i8", _V4I32, [_V4I32, v16i8, v16i8])
        mstore = _declare(builder.module, "llvm.masked.store.v8f32.p0", ir.VoidType(),
                          [_V8F, _V8F.as_pointer(), _I32, ir.VectorType(_I1, 8)])
        bits = builder.sub(builder.shl(_c64(1), a.nr), _c64(1))
        last = builder.sub(a.n, _c64(1))

        def pair_of(b, p_, index):
            """[v(2p), v(2p + 1), v(2p), v(2p + 1)] for index(b, token) -> element pointer; the token past the end
            reads the last one (its results are not stored)."""
            t0 = b.mul(p_, _c64(2))
            t1 = b.add(t0, _c64(1))
            t1 = b.select(b.icmp_signed(">", t1, last), last, t1)
            v0, v1 = (b.load(index(b, t)) for t in (t0, t1))
            vec = b.insert_element(b.insert_element(ir.Constant(ir.VectorType(v0.type, 2), None), v0,
                                                    ir.Constant(_I32, 0)), v1, ir.Constant(_I32, 1))
            return b.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(_I32, 4), [0, 1, 0, 1]))

        def rows(builder, h):
            mask = builder.bitcast(builder.trunc(builder.lshr(bits, _c64(8 * h)), _I8), ir.VectorType(_I1, 8))

            def pairs(builder, p0, npair):
                ps = [builder.add(p0, _c64(p)) for p in range(npair)]

                def block(b, i, faccs):
                    new = list(faccs)
                    at = lambda base, t, k=0: b.gep(base, [b.add(b.mul(b.add(b.mul(t, a.nb), i), _c64(halves)),
                                                                  _c64(k))])
                    for hh in range(halves):
                        accs = [[pair_of(b, p_, lambda b, t, hh=hh: at(a.xo_p, t, hh))] * 4 for p_ in ps]
                        for m in range(steps * hh, steps * (hh + 1)):
                            w_at = b.add(b.mul(i, _c64(512)), _c64(128 * m + 64 * h))
                            wv = [_vec_load(b, a.wt_p, b.add(w_at, _c64(16 * q)), v16i8) for q in range(4)]
                            for p, p_ in enumerate(ps):
                                xv = _vec_load(b, a.xq_p, b.add(b.mul(p_, b.mul(a.k, _c64(2))),
                                                                b.add(b.mul(i, _c64(64)), _c64(16 * m))), v16i8)
                                accs[p] = [b.call(mmla, [acc, w, xv]) for acc, w in zip(accs[p], wv)]
                        ws = _vec_load(b, a.ws_p, b.add(b.mul(i, _c64(16 * halves)), _c64(16 * hh + 8 * h)), _V8F)
                        terms = [(ws, [pair_of(b, p_, lambda b, t: b.gep(a.xd_p, [b.add(b.mul(t, a.nb), i)]))
                                       for p_ in ps], accs)]
                        if with_min:
                            wm = _vec_load(b, a.wm_p, b.add(b.mul(i, _c64(16 * halves)), _c64(16 * hh + 8 * h)),
                                           _V8F)
                            terms.append((wm, [pair_of(b, p_, lambda b, t, hh=hh: at(a.xm_p, t, hh)) for p_ in ps],
                                          None))
                        for w8, xs, ints in terms:
                            for q in range(4):   # rows 2q, 2q + 1 of the half: their scales as (a, a, b, b)
                                wq = b.shuffle_vector(w8, w8, ir.Constant(ir.VectorType(_I32, 4),
                                                                          [2 * q, 2 * q, 2 * q + 1, 2 * q + 1]))
                                for p, x2 in enumerate(xs):
                                    scale = b.fmul(wq, x2)
                                    k = 4 * p + q
                                    new[k] = (b.fadd(new[k], b.fmul(b.sitofp(ints[p][q], v4f), scale,
                                                                    flags=("contract",)), flags=("contract",))
                                              if ints is not None else b.fadd(new[k], scale))
                    return new

                _, faccs = _loop(builder, _c64(0), a.nb, _c64(1), [(v4f, ir.Constant(v4f, None))] * (4 * npair),
                                 block, "blk")
                for p, p_ in enumerate(ps):
                    whole = join_all(builder, faccs[4 * p:4 * p + 4])   # lane 4q + 2i + s: row 2q + i, token 2p + s
                    for s in range(2):
                        tok = builder.add(builder.mul(p_, _c64(2)), _c64(s))
                        values = builder.shuffle_vector(whole, whole, ir.Constant(ir.VectorType(_I32, 8),
                                                                                  list(range(s, 16, 2))))
                        dst = builder.bitcast(builder.gep(a.out_p, [builder.add(builder.add(
                            builder.mul(tok, a.ld), a.r0), _c64(8 * h))]), _V8F.as_pointer())
                        with builder.if_then(builder.icmp_signed("<", tok, a.n)):
                            builder.call(mstore, [values, dst, ir.Constant(_I32, 4), mask])

            npairs = builder.ashr(builder.add(a.n, _c64(1)), _c64(1))
            end, _ = _loop(builder, _c64(0), npairs, _c64(2), [], lambda b, p0, _: pairs(b, p0, 2) or [], "pair2")
            _loop(builder, end, npairs, _c64(1), [], lambda b, p0, _: pairs(b, p0, 1) or [], "pair1")

        for h in range(2):
            rows(builder, h)
        return context.get_dummy_value()
    return codegen


# the GEMM's codegen for the path in force: i8mm's matrix multiply, the 256-bit paths' own, or the 512-bit one
PAIRED = CPU_PATH == "i8mm"
_gemm_codegen = _gemm_codegen_mmla if PAIRED else _gemm_codegen_256 if YMM else _gemm_codegen_512
# AVX2 multiplies wide codes as magnitudes times sign-flipped activations (_isa.signed_pair): the tile keeps both
# (split_wide), so that each token's step reads them instead of making them again
SPLIT_WIDE = YMM and WIDE_UNBIASED


@njit(cache=True, inline="always")
def split_wide(wt, nb):
    """A decoded tile of wide codes (w + 128, wt[:nb * 512]) as the signed weights w there and |w| in
    wt[nb * 512:]."""
    n = nb * 512
    signed = wt.view(np.int8)
    for k in range(n):
        w = np.int8(wt[k] ^ 0x80)
        signed[k] = w
        signed[n + k] = abs(w)


@njit(cache=True, inline="always")
def pair_rows(wt, nb):
    """A decoded tile in TILE order as usmmla's weight operands (_gemm_codegen_mmla): per block and 8-code step m,
    row j's 8 codes (its words of groups 2m and 2m + 1) at 32-bit words 2j, 2j + 1, so that 16 bytes hold two rows."""
    w = wt[:nb * 512].view(np.uint32)
    step = np.empty(32, np.uint32)
    for base in range(0, nb * 128, 32):
        step[:] = w[base:base + 32]
        for j in range(ROWS):
            w[base + 2 * j] = step[j]
            w[base + 2 * j + 1] = step[ROWS + j]


@njit(cache=True)
def pair_tokens(xq):
    """Activation codes (n, k) as usmmla's operands: per token pair and 8 codes, the first token's then the
    second's (zeros past the last token)."""
    n, k = xq.shape
    xp = np.zeros(((n + 1) // 2, 2 * k), np.int8)
    for t in range(n):
        half = 8 * (t & 1)
        for s in range(k // 8):
            for u in range(8):
                xp[t >> 1, 16 * s + half + u] = xq[t, 8 * s + u]
    return xp


def _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    ok = (_is_c(out, types.float32) and _is_c(wt, types.uint8) and _is_c(ws, types.float32)
          and _is_c(wm, types.float32) and _is_c(xq, types.int8) and _is_c(xd, types.float32)
          and _is_c(xo, types.int32) and _is_c(xm, types.float32)
          and all(isinstance(a, types.Integer) for a in (ld, r0, nr, n, nb)))
    return types.void(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb) if ok else None


@intrinsic
def tile_gemm(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """out[t, r0 + j] for t < n, j < nr (out C-contiguous with row length ld) from a decoded tile: wt (nb*512 u8,
    TILE order), ws (nb*16 f32 block scales); xq (n, 32 nb) int8 codes, xd (n, nb) their block scales, xo (n, nb)
    int32 start values (-offset * block code sums). wm, xm unused."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(False)) if sig is not None else None


@intrinsic
def tile_gemm_wide(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """tile_gemm for codes up to 255 (Q8_0 and the IQ4 codebook + 128; xo = -128 * block code sums)."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(False, True)) if sig is not None else None


@intrinsic
def tile_gemm_wide16(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """tile_gemm_wide with a scale per 16 elements (the lattice types and Q6_K: ws 2 nb*16 f32, xo (n, 2 nb) per
    half), the weights below 64 in magnitude."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(False, True, 2, True)) if sig is not None else None


@intrinsic
def tile_gemm_small(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """tile_gemm_wide for weights below 64 in magnitude (+ 128: the lattice types, the IQ3 codebooks)."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(False, True, 1, True)) if sig is not None else None


@intrinsic
def tile_gemm16(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """tile_gemm with a scale per 16 elements (ws 2 nb*16 f32, xo (n, 2 nb)): Q3_K."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(False, False, 2)) if sig is not None else None


@intrinsic
def tile_gemm_min16(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """tile_gemm16 plus a min per 16 elements: wm[2 b + h, j] * xm[t, 2 b + h] (Q2_K)."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(True, False, 2)) if sig is not None else None


@intrinsic
def tile_gemm_min(typingctx, out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb):
    """tile_gemm plus wm[b, j] * xm[t, b] per block (Q4_1's min times Q8_1's block sum)."""
    sig = _gemm_signature(out, ld, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    return (sig, _gemm_codegen(True)) if sig is not None else None


# ---------------------------------------------------------------- tile decoders: 16 rows' blocks -> TILE order

def _shuffle(builder, a, b, mask):
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(mask)), mask))


def _transpose16(builder, vecs):
    """16 vectors <G x i32> (G = 2, 4, 8: the 4-byte groups of one row's block) -> G vectors <16 x i32>,
    out[g][j] = vecs[j][g]: rows concatenated into 16-element vectors, then halved column ranges of row-adjacent
    pairs merged (two-source permutes, vpermt2d) until each vector holds one column of all 16 rows."""
    g_count = vecs[0].type.count
    cur, size = list(vecs), g_count
    while size < 16:
        cur = [_shuffle(builder, cur[2 * i], cur[2 * i + 1], list(range(2 * size))) for i in range(len(cur) // 2)]
        size *= 2
    r, c = 16 // g_count, g_count          # each vector: r rows x c columns, row-major
    blocks = {(i * r, 0): v for i, v in enumerate(cur)}
    while r < 16:
        half = c // 2
        new = {}
        for (row, col), v in blocks.items():
            if (row // r) % 2:
                continue
            w = blocks[(row + r, col)]
            for part in (0, 1):
                mask = [(rr * c + cc + part * half) if rr < r else 16 + (rr - r) * c + cc + part * half
                        for rr in range(2 * r) for cc in range(half)]
                new[(row, col + part * half)] = _shuffle(builder, v, w, mask)
        blocks, r, c = new, 2 * r, half
    return [blocks[(0, g)] for g in range(g_count)]


def _row_pointers(context, builder, arr_type, arr, r0):
    """Byte pointers to rows r0..r0+15 of a C-contiguous 2-D array (rows past the end: the last row again)."""
    from numba.core import cgutils
    ary = context.make_array(arr_type)(context, builder, arr)
    nrows, ncols = cgutils.unpack_tuple(builder, ary.shape, 2)
    row_bytes = builder.mul(ncols, _c64(arr_type.dtype.bitwidth // 8))
    base = builder.bitcast(ary.data, _I8.as_pointer())
    last = builder.sub(nrows, _c64(1))
    ptrs = []
    for j in range(ROWS):
        rr = builder.add(r0, _c64(j))
        rr = builder.select(builder.icmp_signed(">", rr, last), last, rr)
        ptrs.append(builder.gep(base, [builder.mul(rr, row_bytes)]))
    return ptrs


def _crumb_tile_codegen(context, builder, signature, args):
    """A CRUMB plane (8 bytes per block and row: crumb u of byte k = element 4k + u), 16 rows transposed 4 bytes at a
    time, each 4-element group's crumbs spread to bytes. (The other tile decoders: _q5k_tile_codegen below, and for
    the layouts that interleave 16 rows already, _vnni16.nib16_tile.)"""
    sig = signature.args
    wt_p = _data(context, builder, sig[0], args[0], _I8)
    r0, nb = (_as_i64(builder, a) for a in args[2:4])
    rows = _row_pointers(context, builder, sig[1], args[1], r0)
    vrow = ir.VectorType(_I32, 2)

    def block(b, i, _):
        cols = _transpose16(b, [_vec_load(b, p, b.mul(i, _c64(8)), vrow) for p in rows])
        dst = b.mul(i, _c64(512))
        for g in range(8):
            v = b.bitcast(cols[g // 4], _V64I8)
            v = b.bitcast(b.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, 64),
                                                             [4 * (e // 4) + g % 4 for e in range(64)])), _V16I32)
            parts = [b.and_(b.lshr(v, ir.Constant(_V16I32, [2 * u] * 16)) if u else v,
                            ir.Constant(_V16I32, [3 << (8 * u)] * 16)) for u in range(4)]
            out = b.bitcast(b.or_(b.or_(parts[0], parts[1]), b.or_(parts[2], parts[3])), _V64I8)
            _vstore(b, out, wt_p, b.add(dst, _c64(64 * g)) if g else dst)
        return []

    _loop(builder, _c64(0), nb, _c64(1), [], block, "tile")
    return context.get_dummy_value()


@intrinsic
def crumb_tile(typingctx, wt, c, r0, nb):
    """wt (TILE order) from rows r0..r0+15 of a CRUMB plane c (rows, 8 nb) uint8: the 2-bit codes."""
    ok = (_is_c(wt, types.uint8) and isinstance(c, types.Array) and c.ndim == 2 and c.layout == "C"
          and c.dtype == types.uint8 and all(isinstance(a, types.Integer) for a in (r0, nb)))
    return (types.void(wt, c, r0, nb), _crumb_tile_codegen) if ok else None


def _q5k_tile_codegen(context, builder, signature, args):
    """Q4_K / Q5_K: per 64-element chunk c, 32 qs bytes of each of 16 rows transposed 4 bytes at a time (as I8's),
    low nibbles -> block 2c, high -> block 2c+1; the 5th bits (bit 2(c & 3) + s of qh byte m of the super-block:
    element 64c + 32s + m), transposed the same way, shifted to bit 4 and or-ed in."""
    sig = signature.args
    wt_p = _data(context, builder, sig[0], args[0], _I8)
    r0, nb = (_as_i64(builder, a) for a in args[3:5])
    rows = _row_pointers(context, builder, sig[1], args[1], r0)
    hrows = _row_pointers(context, builder, sig[2], args[2], r0)
    vrow = ir.VectorType(_I32, 8)
    low4 = ir.Constant(_V16I32, [0x0F0F0F0F] * 16)
    bit4 = ir.Constant(_V16I32, [0x10101010] * 16)

    def chunk(b, i, _):
        cols = _transpose16(b, [_vec_load(b, p, b.mul(i, _c64(32)), vrow) for p in rows])
        lo = [b.and_(v, low4) for v in cols]
        hi = [b.and_(b.lshr(v, ir.Constant(_V16I32, [4] * 16)), low4) for v in cols]
        # qh: the chunk's super-block's 32 bytes
        hcols = _transpose16(b, [_vec_load(b, p, b.mul(b.ashr(i, _c64(2)), _c64(32)), vrow) for p in hrows])
        sh = _splat(b, b.trunc(b.mul(b.and_(i, _c64(3)), _c64(2)), _I32), _V16I32)
        hs = [b.lshr(h, sh) for h in hcols]          # bit 0 of each byte: block 2c's 5th bit, bit 1: block 2c+1's
        out = []
        for half, vs in ((0, lo), (1, hi)):
            for g, v in enumerate(vs):
                hb = b.and_(b.shl(hs[g], ir.Constant(_V16I32, [4 - half] * 16)), bit4)
                out.append(b.bitcast(b.or_(v, hb), _V64I8))
        dst = b.mul(i, _c64(1024))
        for g, v in enumerate(out):
            _vstore(b, v, wt_p, b.add(dst, _c64(64 * g)) if g else dst)
        return []

    _loop(builder, _c64(0), builder.sdiv(nb, _c64(2)), _c64(1), [], chunk, "k4tile")
    return context.get_dummy_value()


@intrinsic
def q5k_tile(typingctx, wt, q, qh, r0, nb):
    """wt from rows r0..r0+15 of Q5_K's qs plane q (rows, 16 nb) uint8 and qh plane (rows, 4 nb): codes 0..31,
    offset 0. nb even (32-blocks)."""
    ok = (_is_c(wt, types.uint8) and all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"
                                         and a.dtype == types.uint8 for a in (q, qh))
          and all(isinstance(a, types.Integer) for a in (r0, nb)))
    return (types.void(wt, q, qh, r0, nb), _q5k_tile_codegen) if ok else None


# ---------------------------------------------------------------- activations: codes once per token

@njit(cache=True, parallel=True)
def q8_0_codes(xq, xd, xs, xm, x):
    """Every token as llama.cpp's quantize_row_q8_1: codes xq, fp16 block scales xd (as f32), exact block code sums
    xs (int32) and Q8_1's fp16 block sums xm (d * sum, the min term of Q4_1 / Q5_1)."""
    for t in prange(x.shape[0]):
        q8_codes(xq[t], xd[t], xm[t], x[t])
        code_sums(xs[t], xq[t])


@njit(cache=True, parallel=True)
def q8_k_codes_n(xq, xd, xs, xm, x):
    """Every token as llama.cpp's quantize_row_q8_K: codes, the 256-block scale once per 32-block, exact code sums
    per 32 and xm = scale * code sum per 32 (for the K-quants' mins: -dmin m_b as wm, tile_gemm_min)."""
    for t in prange(x.shape[0]):
        q8_k_codes(xq[t], xd[t], x[t])
        code_sums(xs[t], xq[t])
        for b in range(xs.shape[1]):
            xm[t, b] = xd[t, b] * np.float32(xs[t, b])


# activation scheme name -> codes(xq, xd, xs, xm, x) of every token; a type may add its own (kernels/higgs.py: the
# tokens rotated, then as Q8_0)
GEMM_SCHEMES = {"q8_0": q8_0_codes, "q8_k": q8_k_codes_n}


def quantize(x, scheme):
    """(xq, xd, xs, xm) of activations x (n, cols) float32 for the GEMMs of one rounding scheme."""
    n, cols = x.shape
    codes = (np.empty((n, cols), np.int8), np.empty((n, cols // 32), np.float32),
             np.empty((n, cols // 32), np.int32), np.empty((n, cols // 32), np.float32))
    GEMM_SCHEMES[scheme](*codes, np.ascontiguousarray(x, dtype=np.float32))
    return codes


# ---------------------------------------------------------------- drivers: tiles over the workers

@njit(cache=True, inline="always")
def _offsets(xs, off):
    xo = np.empty_like(xs)
    for t in range(xs.shape[0]):
        for b in range(xs.shape[1]):
            xo[t, b] = -off * xs[t, b]
    return xo


@njit(cache=True, inline="always")
def half_offsets(xq, off):
    """-off times each token's code sum per 16 (the offset term of a half in tile_gemm16 / tile_gemm_wide16: 128 for
    biased weights)."""
    xo = np.empty((xq.shape[0], xq.shape[1] // 16), np.int32)
    for t in range(xq.shape[0]):
        code_sums(xo[t], xq[t], -off)
    return xo


@njit(cache=True, inline="always")
def half_sums(xq, xd):
    """xd * the code sum of each 16 codes of each token (Q8_K: xd one scale per 256, repeated per 32): the xm of a
    tile_gemm_min16."""
    xm = np.empty((xq.shape[0], xq.shape[1] // 16), np.float32)
    sums = np.empty(xm.shape[1], np.int32)
    for t in range(xq.shape[0]):
        code_sums(sums, xq[t])
        for k in range(xm.shape[1]):
            xm[t, k] = xd[t, k >> 1] * np.float32(sums[k])
    return xm


@njit(cache=True, fastmath=FAST, inline="always")
def _fill_scales(ws, d, r0, shift):
    """ws[16 b + j] = the block-b scale of row r0 + j (the last row again past the end), d holding one scale per
    2**shift blocks (f32, or u16 holding fp16)."""
    last = d.shape[0] - 1
    nb = ws.shape[0] // ROWS
    for j in range(ROWS):
        dr = d[min(r0 + j, last)]
        for b in range(nb):
            ws[ROWS * b + j] = widen(dr[b >> shift])


@njit(cache=True, inline="always")
def _chunks(rows):
    return min((rows + ROWS - 1) // ROWS, 32)


@njit(cache=True, inline="always")
def _multiply(out, r0, wt, ws, wm, xq, xd, xo, xm, has_min, wide, halves, small):
    """Every token's outputs of the decoded tile at rows r0.. (rows past the end masked), with the mins' term
    wm * xm when has_min; wide: codes up to 255 (tile_gemm_wide; small: the weights below 64 in magnitude), with a
    scale per 16 elements if halves == 2 (and a min per 16 with has_min)."""
    rows = out.shape[1]
    nr = min(ROWS, rows - r0)
    n, nb = xd.shape       # xq: (n, 32 nb) codes, or on i8mm (n / 2 rounded up, 64 nb) paired ones
    if halves == 2 and not wide:
        if has_min:
            tile_gemm_min16(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
        else:
            tile_gemm16(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    elif halves == 2:
        tile_gemm_wide16(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    elif wide and small:
        tile_gemm_small(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    elif wide:
        tile_gemm_wide(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    elif has_min:
        tile_gemm_min(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)
    else:
        tile_gemm(out, rows, r0, nr, wt, ws, wm, xq, xd, xo, xm, n, nb)


@njit(inline="always")
def tiles(out, xq, xd, xo, xm, has_min, wide, decode, arrays, halves=1, small=False):
    """The GEMM of a type: each worker decodes its 16-row tiles one at a time with decode(wt, ws, wm, r0, *arrays)
    and multiplies every token by each (wide, halves: _multiply). Inlined only, into the type's own cached driver
    (as _common.float_matmul: numba caches no function that takes a jitted function as an argument)."""
    nb = xd.shape[1]
    rows = out.shape[1]
    nch = _chunks(rows)
    xin = pair_tokens(xq) if PAIRED else xq
    for ch in prange(nch):
        split = wide and SPLIT_WIDE
        wt = np.empty(nb * 512 * (2 if split else 1), np.uint8)
        ws = np.empty(nb * ROWS * halves, np.float32)
        wm = np.empty(nb * ROWS * halves, np.float32)
        t0, t1 = tile_span(ch, nch, rows, ROWS)
        for r0 in range(t0 * ROWS, t1 * ROWS, ROWS):
            decode(wt, ws, wm, r0, *arrays)
            if split:
                split_wide(wt, nb)
            if PAIRED:
                pair_rows(wt, nb)
            _multiply(out, r0, wt, ws, wm, xin, xd, xo, xm, has_min, wide, halves, small)


# The tile decoders: codes in TILE order into wt, block scales into ws (mins into wm). Not inlined: numba inlines
# no call with *args, and one call per tile costs nothing.

@njit(cache=True)
def _crumb_rows(wt, ws, wm, r0, c, d):
    crumb_tile(wt, c, r0, ws.shape[0] // ROWS)
    _fill_scales(ws, d, r0, 3)


@njit(cache=True, fastmath=FAST, inline="always")
def _fill_k4_scales(ws, wm, sc, mn, d, dm, r0):
    """Q4_K / Q5_K: ws[16 b + j] = d * sc, wm[16 b + j] = -dmin * m of block b of row r0 + j (split order: block
    2c at c, 2c+1 at half + c)."""
    last = d.shape[0] - 1
    nb = ws.shape[0] // ROWS
    half = nb // 2
    for j in range(ROWS):
        r = min(r0 + j, last)
        for b in range(nb):
            k = (b >> 1) + (b & 1) * half
            ws[ROWS * b + j] = widen(d[r, b >> 3]) * np.float32(sc[r, k])
            wm[ROWS * b + j] = -widen(dm[r, b >> 3]) * np.float32(mn[r, k])


@njit(cache=True)
def _q5k_rows(wt, ws, wm, r0, q, qh, sc, mn, d, dm):
    q5k_tile(wt, q, qh, r0, ws.shape[0] // ROWS)
    _fill_k4_scales(ws, wm, sc, mn, d, dm, r0)


@njit(cache=True, parallel=True)
def gemm_crumb(out, xq, xd, xs, xm, c, d, off):
    """TQ1_0 / TQ2_0 (codes 0..2, off 1) from their CRUMB plane, d one fp16 (u16 bits) per 256."""
    tiles(out, xq, xd, _offsets(xs, off), xm, False, False, _crumb_rows, (c, d))


@njit(cache=True, parallel=True)
def gemm_q5_k(out, xq, xd, xs, xm, q, qh, sc, mn, d, dm):
    """Q5_K's row planes (qh its 5th bits) with Q8_K codes: offset 0, the mins -dmin m against xm = d_x * code sum
    (tile_gemm_min). (Q4_K and Q6_K have their own GEMMs on 16-row records, kquants_rows16.py, kquants_q6k16.py.)"""
    tiles(out, xq, xd, np.zeros_like(xs), xm, True, False, _q5k_rows, (q, qh, sc, mn, d, dm))


# ---------------------------------------------------------------- the GEMMs' entry

def spread_codes(driver):
    """Layout.gemm's run(out, codes, *arrays) for a driver(out, xq, xd, xs, xm, *arrays) that takes the codes
    spread."""
    return lambda out, codes, *arrays: driver(out, *codes, *arrays)


def int_matmul(qm, out, x, codes=None):
    """out[n, rows] = x @ W.T the integer way, x quantized as the type's dot product does (or codes given)."""
    scheme, run = qm.gemm
    run(out, quantize(x, scheme) if codes is None else codes, *qm.arrays)
