"""AVX2 gathers for the compiled oblique sampler (:mod:`viewer.core.geometry.affine_kernel`, imported only
from there, lazily: importing this module imports numba and llvmlite).

LLVM does not vectorise the sampler's scattered voxel reads (its x86 cost model prefers scalar loads to
gathers on current CPUs), so 8 cells are blended at once here in LLVM IR: each of a cell's 4 voxel pairs
along a row (``v[o]``, ``v[o + 1]``) is one 32-bit gather lane of an int16 volume (``vpgatherdd``, scale 2),
split into its two values, and the 7 linear blends (along i, then j, then k, as the scalar ``cell``) run on
8 float32 lanes. Emitted only where the CPU has AVX2 (:func:`available`): elsewhere the target intrinsic
could not be selected, and the scalar loop runs.

numba's disk cache of the kernel is checked against ``affine_kernel.py``'s time stamp and size only, not this
module's: ``affine_kernel.SIMD_SOURCE_SHA256`` pins this module's source (a test compares them), so a change
here is a change there too and the kernel is compiled again.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic

LANES = 8
_I8, _I32, _F32 = ir.IntType(8), ir.IntType(32), ir.FloatType()
_V8I, _V8F = ir.VectorType(_I32, LANES), ir.VectorType(_F32, LANES)


def available() -> bool:
    """Whether numba compiles for a host CPU with AVX2 (not when NUMBA_CPU_NAME / NUMBA_CPU_FEATURES ask for
    another target, e.g. a portable cache)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if getattr(config, "CPU_NAME", None) is not None or getattr(config, "CPU_FEATURES", None) is not None:
        return False
    from llvmlite import binding

    try:
        return bool(binding.get_host_cpu_features().get("avx2", False))
    except RuntimeError:  # features not reported on this host
        return False


@intrinsic
def blend8(typingctx, flat, off, fk, fj, fi, t, sj, sk, out):  # type: ignore[no-untyped-def]
    """``out[t:t+8]`` = the trilinear blends of the int16 cells whose first voxels are at ``flat[off[t:t+8]]``
    (int32 offsets; neighbours at +1, +sj, +sk), with weights ``fk``, ``fj``, ``fi`` (float32) at the same
    places. The caller guarantees ``t + 8 <= len`` of every buffer and every cell inside ``flat``."""
    sig = types.void(flat, off, fk, fj, fi, t, sj, sk, out)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        a_flat, a_off, a_fk, a_fj, a_fi, a_t, a_sj, a_sk, a_out = args
        tys = signature.args

        def data(i: int, val: ir.Value) -> ir.Value:
            return context.make_array(tys[i])(context, builder, val).data

        def vector_at(i: int, val: ir.Value, vty: ir.VectorType) -> ir.Value:
            ptr = builder.gep(data(i, val), [a_t])
            return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=4)

        def splat(x: ir.Value) -> ir.Value:
            one = builder.insert_element(ir.Constant(_V8I, ir.Undefined), x, ir.Constant(_I32, 0))
            first = ir.Constant(_V8I, [0] * LANES)
            return builder.shuffle_vector(one, ir.Constant(_V8I, ir.Undefined), first)

        base = builder.bitcast(data(0, a_flat), _I8.as_pointer())
        idx = vector_at(1, a_off, _V8I)
        wk, wj, wi = (vector_at(i, a, _V8F) for i, a in ((2, a_fk), (3, a_fj), (4, a_fi)))
        vsj, vsk = splat(builder.trunc(a_sj, _I32)), splat(builder.trunc(a_sk, _I32))
        gather = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V8I, [_V8I, _I8.as_pointer(), _V8I, _V8I, _I8]),
            "llvm.x86.avx2.gather.d.d.256",
        )
        zero, mask = ir.Constant(_V8I, [0] * LANES), ir.Constant(_V8I, [-1] * LANES)
        sixteen = ir.Constant(_V8I, [16] * LANES)

        def lerp(a: ir.Value, b: ir.Value, w: ir.Value) -> ir.Value:
            return builder.fadd(a, builder.fmul(builder.fsub(b, a), w))

        lines = []
        at_k1 = builder.add(idx, vsk)
        for ix in (idx, builder.add(idx, vsj), at_k1, builder.add(at_k1, vsj)):
            pair = builder.call(gather, [zero, base, ix, mask, ir.Constant(_I8, 2)])  # v[o] | v[o + 1] << 16
            lo = builder.sitofp(builder.ashr(builder.shl(pair, sixteen), sixteen), _V8F)
            hi = builder.sitofp(builder.ashr(pair, sixteen), _V8F)
            lines.append(lerp(lo, hi, wi))
        value = lerp(lerp(lines[0], lines[1], wj), lerp(lines[2], lines[3], wj), wk)
        ptr = builder.gep(data(8, a_out), [a_t])
        builder.store(value, builder.bitcast(ptr, _V8F.as_pointer()), align=4)
        return context.get_dummy_value()

    return sig, codegen

