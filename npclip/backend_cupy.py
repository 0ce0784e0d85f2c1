"""Fused CuPy kernels for the hot array functions; each is the twin of a readable function in npclip.ops.

``npclip.backend.kernels(x)`` returns ``KERNELS`` for a CuPy array: the functions of ``npclip.ops``
with these replaced (same names, same arguments):

    layer_norm(x, weight, bias, eps)           one block per row, float32 statistics
    linear(x, weight, bias=None, residual=None)
                                               a 2-D product, then the bias_act kernel adds the bias
                                               and the residual
    linear_activation(x, weight, bias, name)   a 2-D product, then bias + quick_gelu / gelu in one pass
    attention(q, k, v, mask=None, need_weights=True)
                                               float16: scores, float32 softmax and weights @ v in one
                                               kernel that reads q, k, v in place (views of the [B, L, 3D]
                                               qkv buffer) and writes the merged-head layout [B, L, D];
                                               float32: two cuBLAS products around a softmax kernel

The CUDA sources below are plain strings compiled by CuPy (NVRTC) on first use, one module per element
type and size; they need no header. This module imports CuPy only inside functions, so it imports (and
its sources can be compiled with nvcc, see tests/test_backend_cupy.py) on machines without CuPy.

NPCLIP_CUPY_DISABLE (comma-separated: layer_norm, bias_act, residual, attention, attention_mma,
attention_gemm) sends the named functions back to their readable twins, or a variant back to the one
before it, for comparisons and benchmarks. docs/backend.md says more.
"""

from __future__ import annotations

import os
import types

import numpy as np

from . import ops

# ----------------------------------------------------------------------------------------------
# CUDA sources. T is the element type: float, or float16 held as its 16 bits (half_bits).

COMMON = r"""
typedef unsigned short half_bits;
#define NEG_INF (-__int_as_float(0x7f800000))
#define NEG_MAX (-3.402823466e38f)
#define LOG2E 1.4426950408889634f

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(half_bits h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ half_bits to_half(float f) {
    half_bits h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(half_bits* p, float x) { *p = to_half(x); }
"""

# VEC elements per access: 1, or 16 bytes' worth (4 floats, 8 halves) from 16-byte aligned addresses.
VECTORS = r"""
__device__ __forceinline__ void load_vec(const T* p, float* f) {
#if VEC == 1
    f[0] = to_float(p[0]);
#else
    uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
    #pragma unroll
    for (int i = 0; i < VEC; i++) f[i] = to_float(e[i]);
#endif
}
__device__ __forceinline__ void store_vec(T* p, const float* f) {
#if VEC == 1
    store(p, f[0]);
#else
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
    #pragma unroll
    for (int i = 0; i < VEC; i++) store(e + i, f[i]);
    *reinterpret_cast<uint4*>(p) = raw;
#endif
}
"""

LAYER_NORM = r"""
// layer_norm: one block of LN_THREADS threads per row; mean and variance in float32, one rounding at the end.
// Twin: npclip.ops.layer_norm.
//   x: [R, D], rows row_stride elements apart (unit stride inside a row); weight, bias: [D]
//   -> y: [R, D] contiguous.   grid (R), block (LN_THREADS).   NITER * LN_THREADS * VEC >= D.
__device__ float block_sum(float s, float* partial) {  // every thread gets the block's total
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = s;
    __syncthreads();
    float total = 0.f;
    #pragma unroll
    for (int w = 0; w < LN_THREADS / 32; w++) total += partial[w];
    __syncthreads();  // partial is written again by the next call
    return total;
}

extern "C" __global__ void __launch_bounds__(LN_THREADS)
layer_norm(const T* x, const T* weight, const T* bias, T* y, int D, long long row_stride, float eps)
{
    __shared__ float partial[LN_THREADS / 32];
    const T* xr = x + blockIdx.x * row_stride;
    T* yr = y + (long long)blockIdx.x * D;
    float v[NITER * VEC];  // this thread's elements of the row
    float sum = 0.f;
    #pragma unroll
    for (int it = 0; it < NITER; it++) {
        const int i = (it * LN_THREADS + threadIdx.x) * VEC;
        if (i < D) {
            load_vec(xr + i, v + it * VEC);
            #pragma unroll
            for (int e = 0; e < VEC; e++) sum += v[it * VEC + e];
        }
    }
    const float mean = block_sum(sum, partial) / D;
    float squares = 0.f;
    #pragma unroll
    for (int it = 0; it < NITER; it++) {
        const int i = (it * LN_THREADS + threadIdx.x) * VEC;
        if (i < D) {
            #pragma unroll
            for (int e = 0; e < VEC; e++) {
                const float d = v[it * VEC + e] - mean;
                squares += d * d;
            }
        }
    }
    const float rstd = 1.f / sqrtf(block_sum(squares, partial) / D + eps);  // biased variance, as torch
    #pragma unroll
    for (int it = 0; it < NITER; it++) {
        const int i = (it * LN_THREADS + threadIdx.x) * VEC;
        if (i < D) {
            float w[VEC], b[VEC], out[VEC];
            load_vec(weight + i, w);
            load_vec(bias + i, b);
            #pragma unroll
            for (int e = 0; e < VEC; e++) out[e] = (v[it * VEC + e] - mean) * rstd * w[e] + b[e];
            store_vec(yr + i, out);
        }
    }
}
"""

BIAS_ACT = r"""
// bias_act: y <- act(y + bias) + residual in place, in float32, one rounding (ACT 0: none, 1: quick_gelu,
// 2: exact gelu; RESIDUAL 0: no residual, and the pointer is never read).
// Twin: the bias, activation and residual of npclip.ops.linear / linear_activation after a product without bias.
//   y, residual: [rows, F] contiguous with F = f_vectors * VEC; bias: [F]
//   grid (ceil(f_vectors / blockDim.x), any), block (any): a thread owns one column vector, loads its bias
//   once and walks the rows BA_ROWS at a time (rows r0 .. r0 + BA_ROWS - 1, r0 = BA_ROWS * blockIdx.y, then
//   BA_ROWS * gridDim.y further), every load of a step before its stores, so that BA_ROWS loads are in flight.
__device__ __forceinline__ float activate(float x) {
#if ACT == 1
    return x / (1.f + expf(-1.702f * x));                    // quick_gelu: x * sigmoid(1.702 x)
#elif ACT == 2
    return 0.5f * x * (1.f + erff(x * 0.7071067811865476f));  // gelu: x/2 * (1 + erf(x / sqrt 2))
#else
    return x;
#endif
}

extern "C" __global__ void bias_act(T* __restrict__ y, const T* __restrict__ bias, const T* __restrict__ residual,
                                    int rows, int f_vectors)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;  // this thread's column vector
    if (c >= f_vectors) return;
    const long long F = (long long)f_vectors * VEC;
    float b[VEC];
    load_vec(bias + c * VEC, b);
    for (int r0 = blockIdx.y * BA_ROWS; r0 < rows; r0 += gridDim.y * BA_ROWS) {
        float a[BA_ROWS][VEC];
#if RESIDUAL
        float res[BA_ROWS][VEC];
#endif
        #pragma unroll
        for (int i = 0; i < BA_ROWS; i++) {
            if (r0 + i < rows) {
                load_vec(y + (r0 + i) * F + c * VEC, a[i]);
#if RESIDUAL
                load_vec(residual + (r0 + i) * F + c * VEC, res[i]);
#endif
            }
        }
        #pragma unroll
        for (int i = 0; i < BA_ROWS; i++) {
            if (r0 + i < rows) {
                #pragma unroll
                for (int e = 0; e < VEC; e++) {
                    a[i][e] = activate(a[i][e] + b[e]);
#if RESIDUAL
                    a[i][e] += res[i][e];
#endif
                }
                store_vec(y + (r0 + i) * F + c * VEC, a[i]);
            }
        }
    }
}
"""

SOFTMAX_ROWS = r"""
// softmax_rows: s <- softmax(s * scale + mask) along each row, in place, float32 arithmetic, one rounding:
// the weights between attention_gemm's two products. Twin: the softmax of npclip.ops.attention.
//   s: [B, H, L, L] contiguous (row r = (b * H + h) * L + i); mask element (b, h, i, j) at
//   b * msb + h * msh + i * msq + j * msk (has_mask 0: none; a masked score is clamped at the most negative
//   float, as in attention_simt).   grid (ceil(R / 4)), block (128): one warp per row, SM_ITEMS * 32 >= L.
extern "C" __global__ void __launch_bounds__(128)
softmax_rows(T* s, const T* mask, long long R, int L, int H, long long msb, long long msh, long long msq,
             long long msk, float scale, int has_mask)
{
    const long long r = (long long)blockIdx.x * 4 + (threadIdx.x >> 5);  // this warp's row
    if (r >= R) return;
    const int lane = threadIdx.x & 31;
    const long long bh = r / L;
    const int i = (int)(r - bh * L), h = (int)(bh % H);
    const long long b = bh / H;
    T* row = s + r * L;
    const T* mrow = mask + b * msb + h * msh + i * msq;
    float x[SM_ITEMS];
    float mx = NEG_INF;
    #pragma unroll
    for (int it = 0; it < SM_ITEMS; it++) {
        const int j = it * 32 + lane;
        float val = NEG_INF;
        if (j < L) {
            val = to_float(row[j]) * scale;
            if (has_mask) val = fmaxf(val + to_float(mrow[j * msk]), NEG_MAX);
        }
        x[it] = val;
        mx = fmaxf(mx, val);
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.f;
    #pragma unroll
    for (int it = 0; it < SM_ITEMS; it++) {
        x[it] = it * 32 + lane < L ? expf(x[it] - mx) : 0.f;
        sum += x[it];
    }
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = 1.f / sum;
    #pragma unroll
    for (int it = 0; it < SM_ITEMS; it++) {
        const int j = it * 32 + lane;
        if (j < L) store(row + j, x[it] * inv);
    }
}
"""

# Both attention kernels take the same arguments:
#   q, k, v: [B, H, L, DH] with element strides (sb, sh, sl, 1): views of the qkv buffer need no copy
#   mask: [B, H, L, L] additive, element strides (sb, sh, sq, sk), 0 where broadcast (has_mask = 0: none)
#   -> out: [B, H, L, DH] with element strides (sb, sh, sl, 1): the caller passes a view of [B, L, H, DH],
#      so that merging the heads afterwards is free; weights: [B, H, L, L] contiguous, if need_weights.
# Scores, softmax and sums are float32. A masked score is clamped at the most negative float, so a row
# whose every key is masked comes out uniform, as in transformers' eager attention. need_weights = 1 runs
# two passes over the keys (the first finds each row's max and sum); 0 runs one with an online softmax.
ATTENTION_ARGS = (
    "const T* q, const T* k, const T* v, const T* mask, T* out, T* weights, int L, "
    "long long qsb, long long qsh, long long qsl, long long ksb, long long ksh, long long ksl, "
    "long long vsb, long long vsh, long long vsl, long long msb, long long msh, long long msq, long long msk, "
    "long long osb, long long osh, long long osl, float scale, int has_mask, int need_weights"
)

ATTENTION_SIMT = r"""
// attention_simt: one thread per query row, keys and values staged in shared memory SIMT_K rows at a
// time, float32 arithmetic on the CUDA cores; any L, any head width DH (the q row and the output
// accumulator live in registers). Twin: npclip.ops.attention.
//   grid (ceil(L / SIMT_Q), H, B), block (SIMT_Q).
extern "C" __global__ void __launch_bounds__(SIMT_Q)
attention_simt(ATTENTION_ARGS)
{
    __shared__ float ks[SIMT_K][DH];
    __shared__ float vs[SIMT_K][DH];
    const int b = blockIdx.z, h = blockIdx.y, H = gridDim.y;
    const int i = blockIdx.x * SIMT_Q + threadIdx.x;  // this thread's query row
    const bool active = i < L;
    const T* kb = k + b * ksb + h * ksh;
    const T* vb = v + b * vsb + h * vsh;
    const T* mrow = mask + b * msb + h * msh + (long long)i * msq;
    float qr[DH], acc[DH];
    #pragma unroll
    for (int d = 0; d < DH; d++) {
        qr[d] = active ? to_float(q[b * qsb + h * qsh + (long long)i * qsl + d]) : 0.f;
        acc[d] = 0.f;
    }
    float m = NEG_INF, l = 0.f;  // the row's running max and sum of exp(score - m)
    for (int pass = need_weights ? 0 : 1; pass < 2; pass++) {
        const bool stats_only = need_weights && pass == 0;
        const bool fixed = need_weights && pass == 1;  // m and l are final: p is the weight itself
        for (int k0 = 0; k0 < L; k0 += SIMT_K) {
            const int nk = min(SIMT_K, L - k0);
            __syncthreads();  // the previous tile is no longer read
            for (int e = threadIdx.x; e < nk * DH; e += SIMT_Q) {
                const int j = e / DH, d = e % DH;
                ks[j][d] = to_float(kb[(long long)(k0 + j) * ksl + d]);
                if (!stats_only) vs[j][d] = to_float(vb[(long long)(k0 + j) * vsl + d]);
            }
            __syncthreads();
            if (!active) continue;
            for (int j = 0; j < nk; j++) {
                float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;  // four chains for the dot product
                #pragma unroll
                for (int d = 0; d + 3 < DH; d += 4) {
                    s0 += qr[d] * ks[j][d]; s1 += qr[d + 1] * ks[j][d + 1];
                    s2 += qr[d + 2] * ks[j][d + 2]; s3 += qr[d + 3] * ks[j][d + 3];
                }
                #pragma unroll
                for (int d = DH - DH % 4; d < DH; d++) s0 += qr[d] * ks[j][d];
                float s = ((s0 + s1) + (s2 + s3)) * scale;
                if (has_mask) s = fmaxf(s + to_float(mrow[(long long)(k0 + j) * msk]), NEG_MAX);
                if (stats_only) {
                    const float m_new = fmaxf(m, s);
                    l = l * expf(m - m_new) + expf(s - m_new);
                    m = m_new;
                    continue;
                }
                if (!fixed && s > m) {  // online softmax: a new max rescales what was summed so far
                    const float alpha = expf(m - s);
                    l *= alpha;
                    #pragma unroll
                    for (int d = 0; d < DH; d++) acc[d] *= alpha;
                    m = s;
                }
                float p = expf(s - m);
                if (fixed) {
                    p /= l;
                    store(weights + (((long long)b * H + h) * L + i) * L + k0 + j, p);
                } else {
                    l += p;
                }
                #pragma unroll
                for (int d = 0; d < DH; d++) acc[d] += p * vs[j][d];
            }
        }
    }
    if (!active) return;
    const float norm = need_weights ? 1.f : 1.f / l;
    T* orow = out + b * osb + h * osh + (long long)i * osl;
    #pragma unroll
    for (int d = 0; d < DH; d++) store(orow + d, acc[d] * norm);
}
"""

ATTENTION_MMA = r"""
// attention_mma: the same function on the tensor cores (sm_80 and newer), float16 in and out, float32
// scores, softmax and accumulators (flash-attention style). Twin: npclip.ops.attention.
// A block of 4 warps takes 64 query rows of one (batch, head), 16 rows per warp; keys and values pass
// through shared memory 64 at a time (values transposed). Needs DH % 16 == 0, q/k/v rows 16-byte
// aligned (strides multiples of 8), out strides even.   grid (ceil(L / 64), H, B), block (128).
// mma.sync.m16n8k16 fragments (PTX ISA, "Matrix fragments for mma.m16n8k16"), g = lane / 4, t = lane % 4,
// each 32-bit register a pair of halves, the lower column in the low half:
//   A (16 x 16, row major): a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9]
//   B (16 x 8, "col"):      b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
//   C (16 x 8, float32):    c0, c1 = C[g][2t], C[g][2t+1];  c2, c3 = C[g+8][2t], C[g+8][2t+1]
// So S = Q K^T takes b from K's rows as stored, the S accumulators of two key groups of 8 are the A
// fragment of P for O += P V, and V's b fragment is a row of V transposed.
#define BM 64
#define BN 64
#define KPAD (DH + 8)  // shared row lengths in halves: fragment loads hit 32 different banks
#define VPAD (BN + 8)

__device__ __forceinline__ void mma16816(float* c, const unsigned* a, const unsigned* b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    return (unsigned)to_half(lo) | ((unsigned)to_half(hi) << 16);
}
__device__ __forceinline__ unsigned word(const half_bits* p) { return *reinterpret_cast<const unsigned*>(p); }
__device__ __forceinline__ float quad_max(float x) {  // over the 4 lanes that share a row
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

extern "C" __global__ void __launch_bounds__(128)
attention_mma(ATTENTION_ARGS)
{
    __shared__ __align__(16) half_bits ks[BN * KPAD];  // keys [BN][DH]; first holds the query tile [BM][DH]
    __shared__ __align__(16) half_bits vt[DH * VPAD];  // values transposed [DH][BN]
    const int b = blockIdx.z, h = blockIdx.y, H = gridDim.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int q0 = blockIdx.x * BM;     // the block's first query row
    const int r0 = q0 + warp * 16;      // the warp's first query row; this thread's rows: r0 + g, r0 + g + 8
    const bool warp_active = r0 < L;    // warp-uniform, so the mma instructions see all 32 lanes
    const T* qb = q + b * qsb + h * qsh;
    const T* kb = k + b * ksb + h * ksh;
    const T* vb = v + b * vsb + h * vsh;
    const T* mb = mask + b * msb + h * msh;

    // the query tile, zeros past L -> A fragments in registers
    for (int e = threadIdx.x; e < BM * DH / 8; e += 128) {
        const int r = e / (DH / 8), c = (e % (DH / 8)) * 8;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (q0 + r < L) val = *reinterpret_cast<const uint4*>(qb + (long long)(q0 + r) * qsl + c);
        *reinterpret_cast<uint4*>(ks + r * KPAD + c) = val;
    }
    __syncthreads();
    unsigned qa[DH / 16][4];
    #pragma unroll
    for (int kc = 0; kc < DH / 16; kc++) {
        const half_bits* p = ks + (warp * 16 + g) * KPAD + kc * 16 + 2 * t;
        qa[kc][0] = word(p); qa[kc][1] = word(p + 8 * KPAD); qa[kc][2] = word(p + 8); qa[kc][3] = word(p + 8 * KPAD + 8);
    }

    float o[DH / 8][4];  // O accumulators, in C layout: o[j] covers columns 8j .. 8j+7
    #pragma unroll
    for (int j = 0; j < DH / 8; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF};  // running max of rows g, g + 8 (the same in the 4 lanes of a row)
    float l[2] = {0.f, 0.f};          // this lane's part of the sum of exp(score - m)
    float inv_l[2] = {1.f, 1.f};

    for (int pass = need_weights ? 0 : 1; pass < 2; pass++) {
        const bool stats_only = need_weights && pass == 0;
        const bool fixed = need_weights && pass == 1;  // m and l are final: p is the weight itself
        for (int k0 = 0; k0 < L; k0 += BN) {
            __syncthreads();  // the previous tile (or the query tile) is no longer read
            for (int e = threadIdx.x; e < BN * DH / 8; e += 128) {  // keys: 8 threads per 128-byte row piece
                const int r = e / (DH / 8), c = (e % (DH / 8)) * 8;
                uint4 kv = make_uint4(0u, 0u, 0u, 0u);
                if (k0 + r < L) kv = *reinterpret_cast<const uint4*>(kb + (long long)(k0 + r) * ksl + c);
                *reinterpret_cast<uint4*>(ks + r * KPAD + c) = kv;
            }
            // values, transposed: a warp takes 32 consecutive keys of one 8-column piece, so that its 2-byte
            // stores to a row of vt fall in 16 consecutive words (no bank conflicts)
            for (int e = threadIdx.x; !stats_only && e < BN * DH / 8; e += 128) {
                const int r = e % BN, c = (e / BN) * 8;
                uint4 vv = make_uint4(0u, 0u, 0u, 0u);
                if (k0 + r < L) vv = *reinterpret_cast<const uint4*>(vb + (long long)(k0 + r) * vsl + c);
                const half_bits* ve = reinterpret_cast<const half_bits*>(&vv);
                #pragma unroll
                for (int e2 = 0; e2 < 8; e2++) vt[(c + e2) * VPAD + r] = ve[e2];
            }
            __syncthreads();
            if (!warp_active) continue;

            // S = Q K^T: s[j] holds keys k0 + 8j .. k0 + 8j + 7 of rows g, g + 8
            float s[BN / 8][4];
            #pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
                if (k0 + 8 * j < L) {
                    #pragma unroll
                    for (int kc = 0; kc < DH / 16; kc++) {
                        const half_bits* p = ks + (8 * j + g) * KPAD + kc * 16 + 2 * t;
                        const unsigned kf[2] = {word(p), word(p + 8)};
                        mma16816(s[j], qa[kc], kf);
                    }
                }
            }
            // scale and mask; keys past L get exactly -inf (weight 0); the tile's row maxima
            float tile_max[2] = {NEG_INF, NEG_INF};
            #pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int row = r0 + g + (e >> 1) * 8, key = k0 + 8 * j + 2 * t + (e & 1);
                    float x = s[j][e] * scale;
                    if (has_mask && row < L && key < L) x = fmaxf(x + to_float(mb[row * msq + key * msk]), NEG_MAX);
                    if (key >= L) x = NEG_INF;
                    s[j][e] = x;
                    tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
                }
            }
            float alpha[2] = {1.f, 1.f};
            if (!fixed) {
                #pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float m_new = fmaxf(m[r], quad_max(tile_max[r]));
                    alpha[r] = exp2f((m[r] - m_new) * LOG2E);
                    l[r] *= alpha[r];
                    m[r] = m_new;
                }
            }
            #pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                #pragma unroll
                for (int e = 0; e < 4; e++) {
                    const int r = e >> 1;
                    float p = exp2f((s[j][e] - m[r]) * LOG2E);
                    if (fixed) p *= inv_l[r]; else l[r] += p;
                    s[j][e] = p;
                }
            }
            if (stats_only) continue;
            if (fixed) {  // write the weights of rows < L, keys < L
                #pragma unroll
                for (int j = 0; j < BN / 8; j++) {
                    #pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int row = r0 + g + (e >> 1) * 8, key = k0 + 8 * j + 2 * t + (e & 1);
                        if (row < L && key < L) weights[(((long long)b * H + h) * L + row) * L + key] = to_half(s[j][e]);
                    }
                }
            } else {
                #pragma unroll
                for (int j = 0; j < DH / 8; j++) {
                    o[j][0] *= alpha[0]; o[j][1] *= alpha[0]; o[j][2] *= alpha[1]; o[j][3] *= alpha[1];
                }
            }
            // O += P V, 16 keys at a time
            #pragma unroll
            for (int kc = 0; kc < BN / 16; kc++) {
                if (k0 + 16 * kc < L) {
                    const unsigned pa[4] = {pack2(s[2 * kc][0], s[2 * kc][1]), pack2(s[2 * kc][2], s[2 * kc][3]),
                                            pack2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                            pack2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
                    #pragma unroll
                    for (int j = 0; j < DH / 8; j++) {
                        const half_bits* p = vt + (8 * j + g) * VPAD + 16 * kc + 2 * t;
                        const unsigned vf[2] = {word(p), word(p + 8)};
                        mma16816(o[j], pa, vf);
                    }
                }
            }
        }
        if (stats_only) {
            #pragma unroll
            for (int r = 0; r < 2; r++) inv_l[r] = 1.f / quad_sum(l[r]);
        }
    }
    if (!warp_active) return;
    if (!need_weights) {
        #pragma unroll
        for (int r = 0; r < 2; r++) inv_l[r] = 1.f / quad_sum(l[r]);
    } else {
        inv_l[0] = inv_l[1] = 1.f;  // the weights were normalised already
    }
    T* ob = out + b * osb + h * osh;
    #pragma unroll
    for (int r = 0; r < 2; r++) {
        const int row = r0 + g + 8 * r;
        if (row < L) {
            #pragma unroll
            for (int j = 0; j < DH / 8; j++) {
                *reinterpret_cast<unsigned*>(ob + (long long)row * osl + 8 * j + 2 * t) =
                    pack2(o[j][2 * r] * inv_l[r], o[j][2 * r + 1] * inv_l[r]);
            }
        }
    }
}
"""

KERNEL_SOURCES = {
    "layer_norm": VECTORS + LAYER_NORM,
    "bias_act": VECTORS + BIAS_ACT,
    "attention_simt": ATTENTION_SIMT.replace("ATTENTION_ARGS", ATTENTION_ARGS),
    "attention_mma": ATTENTION_MMA.replace("ATTENTION_ARGS", ATTENTION_ARGS),
    "softmax_rows": SOFTMAX_ROWS,
}

LN_THREADS = 128
BA_ROWS = 4  # bias_act: rows a thread loads before it stores
SIMT_Q, SIMT_K = 64, 32  # attention_simt: queries per block, keys per shared-memory tile
MMA_ROWS = 64  # attention_mma: queries per block
SOFTMAX_MAX_L = 32 * 64  # softmax_rows holds a row in registers, 64 per lane at most
ACTS = {"none": 0, "quick_gelu": 1, "gelu": 2}


def source(name, dtype="float32", **defines):
    """The full CUDA source of one kernel variant: COMMON, the defines, the element type T, the kernel."""
    if name not in KERNEL_SOURCES:
        raise KeyError(f"no kernel {name!r}: expected one of {sorted(KERNEL_SOURCES)}")
    T = {"float32": "float", "float16": "half_bits"}[np.dtype(dtype).name]
    lines = [f"#define {k} {v}" for k, v in sorted(defines.items())]
    return "\n".join([COMMON, *lines, f"typedef {T} T;", KERNEL_SOURCES[name]])


def variants():
    """(name, dtype, defines) of the kernel variants the models use, for compile checks."""
    out = []
    for dt in ("float32", "float16"):
        vec = 16 // np.dtype(dt).itemsize
        for v in (1, vec):
            out.append(("layer_norm", dt, dict(LN_THREADS=LN_THREADS, VEC=v, NITER=2)))
            out += [("bias_act", dt, dict(VEC=v, ACT=a, RESIDUAL=r, BA_ROWS=BA_ROWS))
                    for a in ACTS.values() for r in (0, 1)]
        out += [("attention_simt", dt, dict(DH=dh, SIMT_Q=SIMT_Q, SIMT_K=SIMT_K)) for dh in (14, 64, 80)]
        out += [("softmax_rows", dt, dict(SM_ITEMS=n)) for n in (1, 9, 64)]
    out += [("attention_mma", "float16", dict(DH=dh)) for dh in (16, 64, 80, 128)]
    return out


# ----------------------------------------------------------------------------------------------
# Compiling and launching


def _cupy():
    import cupy

    return cupy


_FUNCTIONS = {}


def _kernel(name, dtype, **defines):
    """The compiled kernel for one variant, compiled by CuPy (NVRTC) on first use and kept."""
    cp = _cupy()
    key = (id(cp), name, np.dtype(dtype).name, tuple(sorted(defines.items())))
    fn = _FUNCTIONS.get(key)
    if fn is None:
        fn = _FUNCTIONS[key] = cp.RawModule(code=source(name, dtype, **defines)).get_function(name)
    return fn


def disabled():
    """The fused functions that NPCLIP_CUPY_DISABLE sends back to their readable twins."""
    return {s.strip() for s in os.environ.get("NPCLIP_CUPY_DISABLE", "").split(",") if s.strip()}


def _fusable(*arrays):
    dt = arrays[0].dtype
    return dt.name in ("float32", "float16") and all(a.dtype == dt for a in arrays)


def _aligned(*arrays):
    return all(a.data.ptr % 16 == 0 for a in arrays)


def _compute_capability():
    return int(_cupy().cuda.Device().compute_capability)


def _estrides(a):
    """Strides in elements (CuPy's are in bytes)."""
    return tuple(s // a.itemsize for s in a.strides)


# ----------------------------------------------------------------------------------------------
# The fused functions, with the signatures of their twins in npclip.ops


def layer_norm(x, weight, bias, eps):
    """Layer normalisation over the last axis: one kernel, one block per row, float32 statistics.

    Twin: ops.layer_norm.  x: [..., D], weight, bias: [D] -> [..., D], dtype of x
    """
    D = x.shape[-1]
    if "layer_norm" in disabled() or not _fusable(x, weight, bias) or x.size == 0 or D > 64 * LN_THREADS:
        return ops.layer_norm(x, weight, bias, eps)
    cp = _cupy()
    rows = x.reshape(-1, D)  # [R, D], a view when the rows are evenly spaced
    if rows.strides[1] != rows.itemsize or rows.strides[0] % rows.itemsize:
        rows = cp.ascontiguousarray(rows)
    weight, bias = cp.ascontiguousarray(weight), cp.ascontiguousarray(bias)
    y = cp.empty(x.shape, dtype=x.dtype)
    _layer_norm_into(rows, weight, bias, eps, y)
    return y


def _layer_norm_into(rows, weight, bias, eps, y):
    """Launch layer_norm. rows: [R, D] (unit inner stride), y: [R, D] contiguous (any shape of that size)."""
    R, D = rows.shape
    row_stride = _estrides(rows)[0]
    vec = 16 // rows.itemsize
    if D % vec or row_stride % vec or not _aligned(rows, weight, bias, y):
        vec = 1
    niter = -(-D // (LN_THREADS * vec))
    fn = _kernel("layer_norm", rows.dtype, LN_THREADS=LN_THREADS, VEC=vec, NITER=niter)
    fn((R,), (LN_THREADS,), (rows, weight, bias, y, np.int32(D), np.int64(row_stride), np.float32(eps)))


def bias_act(y, bias, name="none", residual=None):
    """y <- activation(y + bias) + residual in place (name: "none", "quick_gelu" or "gelu"; residual: None
    or an array like y). y: [M, F] contiguous, bias: [F] contiguous."""
    M, F = y.shape
    if M == 0:
        return y
    vec = 16 // y.itemsize
    if F % vec or not _aligned(y, bias, *([] if residual is None else [residual])):
        vec = 1
    f_vectors = F // vec
    threads = min(128, -(-f_vectors // 32) * 32)
    grid = (-(-f_vectors // threads), min(-(-M // BA_ROWS), 4096))
    fn = _kernel("bias_act", y.dtype, VEC=vec, ACT=ACTS[name], RESIDUAL=int(residual is not None), BA_ROWS=BA_ROWS)
    fn(grid, (threads,), (y, bias, y if residual is None else residual, np.int32(M), np.int32(f_vectors)))
    return y


def _product(x, weight):
    """x @ weight.T as one 2-D product. x: [..., Din], weight: [Dout, Din] -> [M, Dout] contiguous"""
    return _cupy().matmul(x.reshape(-1, x.shape[-1]), weight.T)  # [M, Din] @ [Din, Dout]


def linear(x, weight, bias=None, residual=None):
    """``x @ weight.T + bias + residual`` as one 2-D product and the bias_act kernel for the bias and the
    residual (a residual that is not a contiguous array like the output is added apart).

    Twin: ops.linear.  x: [..., Din], weight: [Dout, Din], bias: [Dout], residual: [..., Dout] -> [..., Dout]
    """
    if bias is None or "bias_act" in disabled() or not _fusable(x, weight, bias):
        return ops.linear(x, weight, bias, residual)
    y = _product(x, weight)  # [M, Dout]
    out_shape = (*x.shape[:-1], weight.shape[0])
    fused = (residual is not None and "residual" not in disabled() and residual.shape == out_shape
             and residual.dtype == y.dtype and residual.flags.c_contiguous)
    bias_act(y, _cupy().ascontiguousarray(bias), "none", residual.reshape(y.shape) if fused else None)
    y = y.reshape(out_shape)
    if residual is not None and not fused:
        y += residual
    return y


def linear_activation(x, weight, bias, name):
    """``activation(x @ weight.T + bias)``: one 2-D product, then bias + activation in one pass.

    Twin: ops.linear_activation.  x: [..., Din], weight: [Dout, Din], bias: [Dout] -> [..., Dout]
    """
    if "bias_act" in disabled() or not _fusable(x, weight, bias) or name not in ACTS:
        return ops.linear_activation(x, weight, bias, name)
    y = _product(x, weight)  # [M, Dout]
    bias_act(y, _cupy().ascontiguousarray(bias), name)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def attention(q, k, v, mask=None, need_weights=True):
    """Scaled dot-product attention, float32 softmax: in one kernel that reads q, k, v in place (float16,
    and float32 with attention_gemm disabled), or, in float32, as two cuBLAS products around the
    softmax_rows kernel (attention_gemm).

    Twin: ops.attention.  q, k, v: [B, H, L, Dh] (any strides; views of the qkv buffer are read as they
    are), mask: broadcastable to [B, H, L, L] -> out [B, H, L, Dh] (from the one-kernel variants a view of
    a [B, L, H*Dh] array, so that merge_heads costs nothing), weights [B, H, L, L], or None when
    need_weights is False.
    """
    if "attention" in disabled() or not _fusable(q, k, v) or q.shape != k.shape or q.shape != v.shape:
        out, weights = ops.attention(q, k, v, mask)
        return out, (weights if need_weights else None)
    if q.dtype.name == "float32" and "attention_gemm" not in disabled() and q.shape[2] <= SOFTMAX_MAX_L:
        return _attention_gemm(q, k, v, mask, need_weights)
    cp = _cupy()
    B, H, L, Dh = q.shape
    merged = cp.empty((B, L, H, Dh), dtype=q.dtype)  # [B, L, H, Dh]: the merged-head layout
    out = merged.transpose(0, 2, 1, 3)  # [B, H, L, Dh], a view
    weights = cp.empty((B, H, L, L), dtype=q.dtype) if need_weights else None
    if q.size:
        _attention_into(q, k, v, mask, out, weights)
    return out, weights


def _attention_gemm(q, k, v, mask, need_weights):
    """float32 attention as cuBLAS products: scores = q kᵀ [B, H, L, L], softmax_rows in place (scale, mask,
    float32), out = weights v. The scores are written once and read twice, but the products run at
    cuBLAS's rate, not the one-thread-per-row rate of attention_simt."""
    cp = _cupy()
    scores = cp.matmul(q, k.transpose(0, 1, 3, 2))  # [B, H, L, L]
    _softmax_rows_into(scores, mask, q.shape[-1] ** -0.5)  # now the weights
    out = cp.matmul(scores, v)  # [B, H, L, Dh]
    return out, (scores if need_weights else None)


def _softmax_rows_into(scores, mask, scale):
    """Launch softmax_rows on contiguous scores [B, H, L, L] (in place), mask broadcastable to it or None."""
    cp = _cupy()
    B, H, L, _ = scores.shape
    if mask is None:
        m, has_mask, mstrides = scores, 0, (0, 0, 0, 0)
    else:
        m = cp.broadcast_to(cp.asarray(mask).astype(scores.dtype, copy=False), scores.shape)
        has_mask, mstrides = 1, _estrides(m)
    R = B * H * L
    fn = _kernel("softmax_rows", scores.dtype, SM_ITEMS=-(-L // 32))
    fn((-(-R // 4),), (128,), (scores, m, np.int64(R), np.int32(L), np.int32(H), *[np.int64(s) for s in mstrides],
                               np.float32(scale), np.int32(has_mask)))


def _attention_variant(q, k, v, out):
    """'mma' (tensor cores) where its conditions hold, else 'simt'."""
    if "attention_mma" in disabled() or q.dtype.name != "float16" or q.shape[-1] % 16 or q.shape[-1] > 128:
        return "simt"
    if any(s % 8 for a in (q, k, v) for s in _estrides(a)[:3]) or not _aligned(q, k, v):
        return "simt"
    if any(s % 2 for s in _estrides(out)[:3]) or out.data.ptr % 4:
        return "simt"
    return "mma" if _compute_capability() >= 80 else "simt"


def _attention_into(q, k, v, mask, out, weights):
    """Launch an attention kernel; out (any strides, unit inner stride) and weights (contiguous or None)
    are written in place."""
    cp = _cupy()
    B, H, L, Dh = q.shape
    q, k, v = (a if a.strides[-1] == a.itemsize and all(s % a.itemsize == 0 for s in a.strides)
               else cp.ascontiguousarray(a) for a in (q, k, v))
    if mask is None:
        m, has_mask = q, 0  # any pointer: it is never read
        mstrides = (0, 0, 0, 0)
    else:
        m = cp.broadcast_to(cp.asarray(mask).astype(q.dtype, copy=False), (B, H, L, L))
        has_mask, mstrides = 1, _estrides(m)
    variant = _attention_variant(q, k, v, out)
    if variant == "mma":
        fn, grid, block = _kernel("attention_mma", q.dtype, DH=Dh), (-(-L // MMA_ROWS), H, B), (128,)
    else:
        fn = _kernel("attention_simt", q.dtype, DH=Dh, SIMT_Q=SIMT_Q, SIMT_K=SIMT_K)
        grid, block = (-(-L // SIMT_Q), H, B), (SIMT_Q,)
    i64 = np.int64
    strides = [i64(s) for a in (q, k, v) for s in _estrides(a)[:3]]
    strides += [i64(s) for s in mstrides] + [i64(s) for s in _estrides(out)[:3]]
    fn(grid, block, (q, k, v, m, out, q if weights is None else weights, np.int32(L), *strides,
                     np.float32(Dh ** -0.5), np.int32(has_mask), np.int32(weights is not None)))
    return variant


# ----------------------------------------------------------------------------------------------
# The namespace npclip.backend.kernels(x) returns for CuPy arrays: npclip.ops with the fused functions.

FUSED = {"layer_norm": layer_norm, "linear": linear, "linear_activation": linear_activation,
         "attention": attention}
READABLE = {name: f for name, f in vars(ops).items()
            if not name.startswith("_") and callable(f) and getattr(f, "__module__", None) == ops.__name__}
KERNELS = types.SimpleNamespace(**{**READABLE, **FUSED})

__all__ = ["KERNELS", "FUSED", "KERNEL_SOURCES", "source", "variants", "layer_norm", "linear",
           "linear_activation", "attention", "bias_act", "disabled"]

