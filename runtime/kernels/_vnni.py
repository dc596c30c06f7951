"""Integer block dot products with AVX-512 VNNI, llama.cpp's way: activations quantized to int8 (Q8_0), weights int8,
products summed exactly in int32 by vpdpbusd, one float multiply-add per block.

numba types every integer operation as int64, so an int8 dot product written in Python vectorizes 8 lanes wide at
best (vpmovsxbq + vpmuldq, 11 G products/s on one core here) - slower than converting to float. These intrinsics
write the loop in LLVM IR instead: one row's codes a step through vpdpbusd into int32 lanes, converted and scaled
in a float accumulator, summed once per row (the TQ types' CRUMB rows, and the K-quants a super-block a step).
The 32-block types, Q4_K, Q6_K and IQ4_XS put 16 rows in the lanes instead (_vnni16.py): faster where rows are
short, and for the K-quants' per-block scales.

The dot-product step itself is the kernel path's (_isa.dot4: vpdpbusd with AVX-512 VNNI, vpmaddubsw + vpmaddwd with
AVX2); where the CPU has neither (INT_KERNELS false), the float kernels run.
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ._isa import CPU_PATH, YMM, _declare, dot4, dot4_256, maddubs, maddwd

_F32 = ir.FloatType()
_I8 = ir.IntType(8)
_I16 = ir.IntType(16)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V64I8 = ir.VectorType(_I8, 64)
_V16I32 = ir.VectorType(_I32, 16)
_V16F = ir.VectorType(_F32, 16)
_V16I16, _V8I32 = ir.VectorType(_I16, 16), ir.VectorType(_I32, 8)


def _data(context, builder, arr_type, arr, elem):
    return builder.bitcast(context.make_array(arr_type)(context, builder, arr).data, elem.as_pointer())


# ---------------------------------------------------------------- IR helpers of the row kernels

def _vec_load(builder, base_p, offset, vtype):
    return builder.load(builder.bitcast(builder.gep(base_p, [offset]), vtype.as_pointer()), align=1)


def _splat(builder, value, vtype):
    v = builder.insert_element(ir.Constant(vtype, None), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vtype.count), [0] * vtype.count))


def _widen_scale(builder, ptr, is_f32, index):
    v = builder.load(builder.gep(ptr, [index]))
    return v if is_f32 else builder.fpext(builder.bitcast(v, ir.HalfType()), _F32)


def _sb_loop(builder, n, body, macc_type=_F32):
    """for i in range(n): (acc, macc) = body(builder, i, acc, macc); returns the final (acc v16f32, macc)."""
    entry = builder.block
    head = builder.append_basic_block("sb.head")
    loop = builder.append_basic_block("sb.body")
    done = builder.append_basic_block("sb.done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(_I64)
    acc = builder.phi(_V16F)
    macc = builder.phi(macc_type)
    i.add_incoming(ir.Constant(_I64, 0), entry)
    acc.add_incoming(ir.Constant(_V16F, None), entry)
    macc.add_incoming(ir.Constant(macc_type, None), entry)
    builder.cbranch(builder.icmp_signed("<", i, n), loop, done)
    builder.position_at_end(loop)
    new_acc, new_macc = body(builder, i, acc, macc)
    i.add_incoming(builder.add(i, ir.Constant(_I64, 1)), builder.block)
    acc.add_incoming(new_acc, builder.block)
    macc.add_incoming(new_macc, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return acc, macc


def ir_loop(builder, n, body, states):
    """for i in range(n): states = body(builder, i, states), a loop in the IR: LLVM schedules each iteration's
    straight-line code on its own instead of hoisting loads across a whole unrolled super-block (spills)."""
    entry = builder.block
    head, loop, done = (builder.append_basic_block(f"loop.{k}") for k in ("head", "body", "done"))
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(_I64)
    i.add_incoming(_c64(0), entry)
    phis = []
    for value in states:
        phi = builder.phi(value.type)
        phi.add_incoming(value, entry)
        phis.append(phi)
    builder.cbranch(builder.icmp_signed("<", i, _c64(n) if isinstance(n, int) else n), loop, done)
    builder.position_at_end(loop)
    new = body(builder, i, phis)
    i.add_incoming(builder.add(i, _c64(1)), builder.block)
    for phi, value in zip(phis, new):
        phi.add_incoming(value, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return phis


def counted_loop(builder, start, stop, step, carried, body, name):
    """for i in range(start, stop - step + 1, step) with loop-carried values (a list of (type, initial));
    body(builder, i, values) -> new values. Returns (the final i, the final values)."""
    entry = builder.block
    head = builder.append_basic_block(name + ".head")
    loop = builder.append_basic_block(name + ".body")
    done = builder.append_basic_block(name + ".done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(_I64)
    i.add_incoming(start, entry)
    phis = []
    for typ, init in carried:
        p = builder.phi(typ)
        p.add_incoming(init, entry)
        phis.append(p)
    builder.cbranch(builder.icmp_signed("<=", builder.add(i, step), stop), loop, done)
    builder.position_at_end(loop)
    new = body(builder, i, phis)
    end = builder.block
    i.add_incoming(builder.add(i, step), end)
    for p, v in zip(phis, new):
        p.add_incoming(v, end)
    builder.branch(head)
    builder.position_at_end(done)
    return i, phis


def _as_i64(builder, v):
    return builder.sext(v, _I64) if v.type.width < 64 else v


def _c64(v):
    return ir.Constant(_I64, v)


# ---------------------------------------------------------------- CRUMB rows (TQ1_0, TQ2_0: ternary.py)
# A super-block a step: a load of CRUMB_WIDTH bytes (64, 32 on the ymm paths) is 4 x CRUMB_WIDTH codes, split into 4
# byte vectors by a shift and a mask; the 256 products and the code offset's term add up exactly in int32 and are
# converted and scaled once, as llama.cpp's ggml_vec_dot_tq2_0_q8_K. The first kernel put 64 codes in a 512-bit vector
# from 16 bytes and scaled every 64 in floats (three shuffles, a conversion and an FMA per 64 weights; the offset in a
# loop of its own): on Zen 4 a matrix in cache ran at 18 GB/s, now 40.
CRUMB_WIDTH = 32 if YMM else 64


def _crumb_field(b, packed, u):
    """Bits 2u, 2u + 1 of each byte of a CRUMB load: its codes of elements 4k + u."""
    vbytes = packed.type
    shifted = b.lshr(packed, ir.Constant(vbytes, [2 * u] * vbytes.count)) if u else packed
    return shifted if u == 3 else b.and_(shifted, ir.Constant(vbytes, [3] * vbytes.count))


def _crumb_sums(b, pairs, bias):
    """The int32 lanes summing to bias + the dot products of (codes, x) byte vectors. On avx2 the i16 sums of
    vpmaddubsw add up first (8 of a super-block: 16 products a lane, each at most 3 * 127 as TQ2_0 files may hold
    code 3: exact in i16) and one vpmaddwd widens them."""
    lanes = _V8I32 if CRUMB_WIDTH == 32 else _V16I32
    start = b.insert_element(ir.Constant(lanes, None), bias, ir.Constant(_I32, 0))
    if CPU_PATH == "avx2" and CRUMB_WIDTH == 32:
        total = maddubs(b, *pairs[0])
        for codes, x in pairs[1:]:
            total = b.add(total, maddubs(b, codes, x))
        return b.add(start, maddwd(b, total, ir.Constant(_V16I16, [1] * 16)))
    dot = dot4_256 if CRUMB_WIDTH == 32 else dot4
    for codes, x in pairs:
        start = dot(b, start, codes, x)
    return start


def _crumb_row_codegen(context, builder, signature, args):
    wq_p = _data(context, builder, signature.args[0], args[0], _I8)
    wd_p = _data(context, builder, signature.args[1], args[1], _I16)
    xq_p = _data(context, builder, signature.args[2], args[2], _I8)
    xd_p = _data(context, builder, signature.args[3], args[3], _F32)
    bias_p = _data(context, builder, signature.args[4], args[4], _I32)
    n = _as_i64(builder, args[5])
    width = CRUMB_WIDTH
    vbytes, vf = ir.VectorType(_I8, width), ir.VectorType(_F32, width // 4)

    def super_block(b, s, state):
        pairs = []
        for h in range(64 // width):
            packed = _vec_load(b, wq_p, b.add(b.mul(s, _c64(64)), _c64(width * h)), vbytes)
            for u in range(4):
                x = _vec_load(b, xq_p, b.add(b.mul(s, _c64(256)), _c64(4 * width * h + width * u)), vbytes)
                pairs.append((_crumb_field(b, packed, u), x))
        scale = b.fmul(_widen_scale(b, wd_p, False, s), b.load(b.gep(xd_p, [b.mul(s, _c64(8))])))
        dot = b.sitofp(_crumb_sums(b, pairs, b.load(b.gep(bias_p, [s]))), vf)
        return [b.fadd(state[0], b.fmul(dot, _splat(b, scale, vf), flags=("contract",)), flags=("contract",))]

    acc, = ir_loop(builder, n, super_block, [ir.Constant(vf, None)])
    fsum = _declare(builder.module, f"llvm.vector.reduce.fadd.v{width // 4}f32", _F32, [_F32, vf])
    return builder.call(fsum, [ir.Constant(_F32, 0.0), acc], fastmath=("reassoc",))


@intrinsic
def crumb_row_dot(typingctx, wq, wd, xq, xd, bias, nsb):
    """sum over nsb super-blocks of wd[s] * xd[8 s] * (bias[s] + the int32 dot product of a CRUMB row's codes 0..3
    and xq): the row's 256 codes of a super-block in 64 bytes, element 4k + u in bits 2u of byte k; xq in
    ternary.py's _crumb_x_order; wd one scale per 256 elements (u16 holding the file's fp16), xd one per 32 (Q8_K's
    per-256 value repeated), bias int32 per 256 (the code offset's term)."""
    arrays = ((wq, types.uint8), (wd, types.uint16), (xq, types.int8), (xd, types.float32), (bias, types.int32))
    ok = all(isinstance(a, types.Array) and a.dtype == dtype for a, dtype in arrays) and isinstance(nsb, types.Integer)
    return (types.float32(wq, wd, xq, xd, bias, nsb), _crumb_row_codegen) if ok else None


# ---------------------------------------------------------------- K-quants: one 256-element super-block a step
# As llama.cpp's ggml_vec_dot_q{2,3,5}_K_q8_K: each super-block's small-scale-weighted block dot products are
# summed exactly in int32 (vpdpbusd, then vpmulld by the small scales), converted once and scaled by d_w * d_x.

def _bit_at_4(builder, v, bit):
    """bit `bit` of each byte of v moved to bit 4 (others cleared)."""
    t = v.type
    if bit < 4:
        v = builder.shl(v, ir.Constant(t, [4 - bit] * t.count))
    elif bit > 4:
        v = builder.lshr(v, ir.Constant(t, [bit - 4] * t.count))
    return builder.and_(v, ir.Constant(t, [16] * t.count))


def _k_row_args(context, builder, signature, args, n_planes, n_scales):
    """The arguments of a K-quant row intrinsic as pointers, in their fixed order: n_planes byte planes, n_scales
    per-256 scales (u16 holding fp16, or f32: is_f32), xq (int8 codes), xd (f32 per 32), bs (int32 code sums), then
    the super-block count n. Returns (planes, scales, is_f32, xq, xd, bs, n)."""
    sig = signature.args
    planes = [_data(context, builder, sig[i], args[i], _I8) for i in range(n_planes)]
    is_f32 = sig[n_planes].dtype == types.float32
    scales = [_data(context, builder, sig[i], args[i], _F32 if is_f32 else _I16)
              for i in range(n_planes, n_planes + n_scales)]
    k = n_planes + n_scales
    return (planes, scales, is_f32, _data(context, builder, sig[k], args[k], _I8),
            _data(context, builder, sig[k + 1], args[k + 1], _F32),
            _data(context, builder, sig[k + 2], args[k + 2], _I32), _as_i64(builder, args[k + 3]))


def _q5k_codegen(context, builder, signature, args):
    """Q5_K row: q the file's qs bytes (32 per 64 elements: block 2c in the low nibbles, block 2c+1 in the high
    ones, both in element order), taken 64 bytes at a time: the low nibbles are blocks 2c and 2c + 2, the high ones
    2c + 1 and 2c + 3, so xq must be in that order (intdot.k4_x_order); qh the file's qh plane (32 bytes per
    super-block), each code's 5th bit; sc, mn the 6-bit scales and mins as u8 per 32 in split order (the row's even
    blocks, then its odd ones: see kquants); d, dm per 256 (u16 fp16 or f32); xd per 32 (the per-256 scale
    repeated), bs the exact per-32 code sums (block order); n super-blocks. (Q4_K's row planes went through this
    loop without qh until 16-row interleaving, kquants_rows16.py.)"""
    (q_p, qh_p, sc_p, mn_p), (d_p, dm_p), d_f32, xq_p, xd_p, bs_p, n = _k_row_args(context, builder, signature,
                                                                                  args, 4, 2)
    half = builder.mul(n, _c64(4))
    module = builder.module
    v4i8 = ir.VectorType(_I8, 4)
    zip8 = ir.Constant(ir.VectorType(_I32, 8), [0, 4, 1, 5, 2, 6, 3, 7])

    def natural8(b, p, o4):
        """The super-block's 8 bytes in block order from the split-order halves."""
        return b.shuffle_vector(_vec_load(b, p, o4, v4i8), _vec_load(b, p, b.add(half, o4), v4i8), zip8)

    v8i32, v8f, v32 = ir.VectorType(_I32, 8), ir.VectorType(_F32, 8), ir.VectorType(_I8, 32)
    cat = ir.Constant(ir.VectorType(_I32, 64), list(range(64)))

    def body(b, i, acc, macc):
        sumi = ir.Constant(_V16I32, None)
        o8 = b.mul(i, _c64(8))
        o4 = b.mul(i, _c64(4))
        scales = b.zext(natural8(b, sc_p, o4), v8i32)
        qh = _vec_load(b, qh_p, b.mul(i, _c64(32)), v32)
        for p in range(2):     # chunks c = 2p, 2p + 1 (64 elements each): 64 bytes of qs
            packed = _vec_load(b, q_p, b.add(b.mul(i, _c64(128)), _c64(64 * p)), _V64I8)
            lo = b.and_(packed, ir.Constant(_V64I8, [15] * 64))     # blocks 4p (bytes 0-31), 4p + 2
            hi = b.lshr(packed, ir.Constant(_V64I8, [4] * 64))      # blocks 4p + 1, 4p + 3
            # bit 2c of qh[m]: element 64c + m, bit 2c+1: element 64c + 32 + m; moved to bit 4
            lo = b.or_(lo, b.shuffle_vector(_bit_at_4(b, qh, 4 * p), _bit_at_4(b, qh, 4 * p + 2), cat))
            hi = b.or_(hi, b.shuffle_vector(_bit_at_4(b, qh, 4 * p + 1), _bit_at_4(b, qh, 4 * p + 3), cat))
            for k, w in enumerate((lo, hi)):
                x = _vec_load(b, xq_p, b.add(b.mul(i, _c64(256)), _c64(128 * p + 64 * k)), _V64I8)
                dot = dot4(b, ir.Constant(_V16I32, None), w, x)
                scl = b.shuffle_vector(scales, scales, ir.Constant(ir.VectorType(_I32, 16),
                                                                   [4 * p + k] * 8 + [4 * p + k + 2] * 8))
                sumi = b.add(sumi, b.mul(dot, scl))
        xd = b.load(b.gep(xd_p, [o8]))
        scale = b.fmul(_widen_scale(b, d_p, d_f32, i), xd)
        acc = b.fadd(acc, b.fmul(b.sitofp(sumi, _V16F), _splat(b, scale, _V16F), flags=("contract",)),
                     flags=("contract",))
        mins = b.mul(b.zext(natural8(b, mn_p, o4), v8i32), _vec_load(b, bs_p, o8, v8i32))
        mscale = b.fmul(_widen_scale(b, dm_p, d_f32, i), xd)
        macc = b.fadd(macc, b.fmul(b.sitofp(mins, v8f), _splat(b, mscale, v8f), flags=("contract",)),
                      flags=("contract",))
        return acc, macc

    acc, macc = _sb_loop(builder, n, body, v8f)
    fsum = _declare(module, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _V16F])
    fsum8 = _declare(module, "llvm.vector.reduce.fadd.v8f32", _F32, [_F32, v8f])
    total = builder.call(fsum, [ir.Constant(_F32, 0.0), acc], fastmath=("reassoc",))
    return builder.fsub(total, builder.call(fsum8, [ir.Constant(_F32, 0.0), macc], fastmath=("reassoc",)))


def _is_arr(t, *dtypes):
    return isinstance(t, types.Array) and t.dtype in dtypes


@intrinsic
def q5k_row_dot(typingctx, q, qh, sc, mn, d, dm, xq, xd, bs, nsb):
    """A Q5_K row times Q8_K activations, llama.cpp's sums: per super-block d_x * (d * sum_b sc_b (q_b . x_b)
    - dmin * sum_b mn_b bs_b) with the integer sums exact (see _q5k_codegen for the planes)."""
    ok = (_is_arr(q, types.uint8) and _is_arr(qh, types.uint8) and _is_arr(sc, types.uint8)
          and _is_arr(mn, types.uint8) and _is_arr(d, types.uint16, types.float32) and dm == d
          and _is_arr(xq, types.int8) and _is_arr(xd, types.float32) and _is_arr(bs, types.int32)
          and isinstance(nsb, types.Integer))
    return (types.float32(q, qh, sc, mn, d, dm, xq, xd, bs, nsb), _q5k_codegen) if ok else None


def _q2k_codegen(context, builder, signature, args):
    """Q2_K row: qs the file's 2-bit plane (64 bytes per super-block: crumb u of byte 32h + j is element
    128h + 32u + j), sc the file's scale bytes per 16 (scale in the low nibble, min in the high one), d, dm per 256;
    xq Q8_K codes in element order, xd per 32, bs exact per-16 code sums. As ggml_vec_dot_q2_K_q8_K: per super-block
    d_x * (d * sum_g sc_g (q_g . x_g) - dmin * sum_g m_g bs_g), both sums exact in int32."""
    (q_p, sc_p), (d_p, dm_p), d_f32, xq_p, xd_p, bs_p, n = _k_row_args(context, builder, signature, args, 2, 2)
    module = builder.module
    v4i8, v16i8, v32 = ir.VectorType(_I8, 4), ir.VectorType(_I8, 16), ir.VectorType(_I8, 32)
    cat = ir.Constant(ir.VectorType(_I32, 64), list(range(64)))
    spread = ir.Constant(ir.VectorType(_I32, 16), [j // 4 for j in range(16)])
    three = ir.Constant(v32, [3] * 32)

    def crumbs(b, v, u):
        return b.and_(b.lshr(v, ir.Constant(v32, [2 * u] * 32)), three) if u else b.and_(v, three)

    def body(b, i, acc, macc):
        sumi = ir.Constant(_V16I32, None)
        for h in range(2):
            qv = _vec_load(b, q_p, b.add(b.mul(i, _c64(64)), _c64(32 * h)), v32)
            for k in range(2):
                w = b.shuffle_vector(crumbs(b, qv, 2 * k), crumbs(b, qv, 2 * k + 1), cat)
                off = b.add(b.mul(i, _c64(256)), _c64(128 * h + 64 * k))
                dot = dot4(b, ir.Constant(_V16I32, None), w, _vec_load(b, xq_p, off, _V64I8))
                s4 = _vec_load(b, sc_p, b.add(b.mul(i, _c64(16)), _c64(8 * h + 4 * k)), v4i8)
                s4 = b.zext(b.and_(s4, ir.Constant(v4i8, [15] * 4)), ir.VectorType(_I32, 4))
                sumi = b.add(sumi, b.mul(dot, b.shuffle_vector(s4, s4, spread)))
        o16 = b.mul(i, _c64(16))
        mins = b.zext(b.lshr(_vec_load(b, sc_p, o16, v16i8), ir.Constant(v16i8, [4] * 16)), _V16I32)
        mins = b.mul(mins, _vec_load(b, bs_p, o16, _V16I32))
        xd = b.load(b.gep(xd_p, [b.mul(i, _c64(8))]))
        acc = b.fadd(acc, b.fmul(b.sitofp(sumi, _V16F), _splat(b, b.fmul(_widen_scale(b, d_p, d_f32, i), xd), _V16F),
                                 flags=("contract",)), flags=("contract",))
        macc = b.fadd(macc, b.fmul(b.sitofp(mins, _V16F),
                                   _splat(b, b.fmul(_widen_scale(b, dm_p, d_f32, i), xd), _V16F),
                                   flags=("contract",)), flags=("contract",))
        return acc, macc

    acc, macc = _sb_loop(builder, n, body, _V16F)
    fsum = _declare(module, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _V16F])
    return builder.fsub(builder.call(fsum, [ir.Constant(_F32, 0.0), acc], fastmath=("reassoc",)),
                        builder.call(fsum, [ir.Constant(_F32, 0.0), macc], fastmath=("reassoc",)))


@intrinsic
def q2k_row_dot(typingctx, qs, sc, d, dm, xq, xd, bs, nsb):
    """A Q2_K row times Q8_K activations, llama.cpp's sums (see _q2k_codegen)."""
    ok = (_is_arr(qs, types.uint8) and _is_arr(sc, types.uint8) and _is_arr(d, types.uint16, types.float32)
          and dm == d and _is_arr(xq, types.int8) and _is_arr(xd, types.float32) and _is_arr(bs, types.int32)
          and isinstance(nsb, types.Integer))
    return (types.float32(qs, sc, d, dm, xq, xd, bs, nsb), _q2k_codegen) if ok else None


def _bit_to(builder, v, bit, to):
    """bit `bit` of each byte of v moved to bit `to` (others cleared)."""
    t = v.type
    if bit < to:
        v = builder.shl(v, ir.Constant(t, [to - bit] * t.count))
    elif bit > to:
        v = builder.lshr(v, ir.Constant(t, [bit - to] * t.count))
    return builder.and_(v, ir.Constant(t, [1 << to] * t.count))


def _q3k_codegen(context, builder, signature, args):
    """Q3_K row: qs as Q2_K's, hm the file's hmask (32 bytes per super-block: bit 4h + u of byte j is the high bit of
    element 128h + 32u + j), sc the 6-bit scales minus 32 as int8 per 16, d per 256; xq Q8_K codes in element
    order, xd per 32, bs the exact per-16 code sums. Codes 0..7 (low 2 bits | high bit << 2) go in unsigned; the
    -4 is -4 * sum_g sc_g bs_g in the same int32 sum (llama.cpp subtracts 4 where the high bit is clear: the same
    integers)."""
    (q_p, hm_p, sc_p), (d_p,), d_f32, xq_p, xd_p, bs_p, n = _k_row_args(context, builder, signature, args, 3, 1)
    module = builder.module
    v4i8, v16i8, v32 = ir.VectorType(_I8, 4), ir.VectorType(_I8, 16), ir.VectorType(_I8, 32)
    cat = ir.Constant(ir.VectorType(_I32, 64), list(range(64)))
    spread = ir.Constant(ir.VectorType(_I32, 16), [j // 4 for j in range(16)])
    three = ir.Constant(v32, [3] * 32)

    def code(b, qv, hm, h, u):
        low = b.and_(b.lshr(qv, ir.Constant(v32, [2 * u] * 32)), three) if u else b.and_(qv, three)
        return b.or_(low, _bit_to(b, hm, 4 * h + u, 2))

    def body(b, i, acc, macc):
        sumi = ir.Constant(_V16I32, None)
        hm = _vec_load(b, hm_p, b.mul(i, _c64(32)), v32)
        for h in range(2):
            qv = _vec_load(b, q_p, b.add(b.mul(i, _c64(64)), _c64(32 * h)), v32)
            for k in range(2):
                w = b.shuffle_vector(code(b, qv, hm, h, 2 * k), code(b, qv, hm, h, 2 * k + 1), cat)
                off = b.add(b.mul(i, _c64(256)), _c64(128 * h + 64 * k))
                dot = dot4(b, ir.Constant(_V16I32, None), w, _vec_load(b, xq_p, off, _V64I8))
                s4 = b.sext(_vec_load(b, sc_p, b.add(b.mul(i, _c64(16)), _c64(8 * h + 4 * k)), v4i8),
                            ir.VectorType(_I32, 4))
                sumi = b.add(sumi, b.mul(dot, b.shuffle_vector(s4, s4, spread)))
        o16 = b.mul(i, _c64(16))
        bias = b.mul(b.sext(_vec_load(b, sc_p, o16, v16i8), _V16I32), _vec_load(b, bs_p, o16, _V16I32))
        sumi = b.sub(sumi, b.shl(bias, ir.Constant(_V16I32, [2] * 16)))
        xd = b.load(b.gep(xd_p, [b.mul(i, _c64(8))]))
        acc = b.fadd(acc, b.fmul(b.sitofp(sumi, _V16F), _splat(b, b.fmul(_widen_scale(b, d_p, d_f32, i), xd), _V16F),
                                 flags=("contract",)), flags=("contract",))
        return acc, macc

    acc, _ = _sb_loop(builder, n, body)
    fsum = _declare(module, "llvm.vector.reduce.fadd.v16f32", _F32, [_F32, _V16F])
    return builder.call(fsum, [ir.Constant(_F32, 0.0), acc], fastmath=("reassoc",))


@intrinsic
def q3k_row_dot(typingctx, qs, hm, sc, d, xq, xd, bs, nsb):
    """A Q3_K row times Q8_K activations, llama.cpp's sums (see _q3k_codegen)."""
    ok = (_is_arr(qs, types.uint8) and _is_arr(hm, types.uint8) and _is_arr(sc, types.int8)
          and _is_arr(d, types.uint16, types.float32) and _is_arr(xq, types.int8) and _is_arr(xd, types.float32)
          and _is_arr(bs, types.int32) and isinstance(nsb, types.Integer))
    return (types.float32(qs, hm, sc, d, xq, xd, bs, nsb), _q3k_codegen) if ok else None
