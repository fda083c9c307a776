/* Shared definitions of the native kernels: includes, limits, f16 conversion, field loads. */
#ifndef GGR_COMMON_H
#define GGR_COMMON_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define GGR_MAX_M 8        /* x rows sharing one dequantized block (generic path) */
#define LANES 32           /* independent float accumulators per x row (generic path) */
#define QK_K 256
#define MAX_QK 256
#define ALIGNED __attribute__((aligned(64)))
#define INLINE static inline __attribute__((always_inline))

#ifdef __FMA__
#define MADD(a, b, c) fmaf((a), (b), (c))   /* vectorised to vfmadd; only in dot products */
#else
#define MADD(a, b, c) ((a) * (b) + (c))
#endif

/* ---- helpers ------------------------------------------------------------------------------ */

INLINE float f32_from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
INLINE uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* IEEE half -> float, exact for every input (subnormals, inf, NaN). */
INLINE float f16_to_f32(uint16_t h) {
#ifdef __F16C__
    return _cvtsh_ss(h);
#else
    const uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
    /* normal: move exponent/mantissa into place, rebias by multiplying by 2^-112 */
    const float normal = f32_from_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    /* subnormal: mantissa as the low bits of 0.5's mantissa, minus 0.5 */
    const float subnormal = f32_from_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    return f32_from_bits(sign | f32_bits(two_w < (1u << 27) ? subnormal : normal));
#endif
}

/* float -> IEEE half, rounded to nearest even (as torch's .half() and ggml's F16C path);
 * overflow to inf, NaN kept (quiet). The fallback is FP16's fp16_ieee_from_fp32_value. */
INLINE uint16_t f32_to_f16(float f) {
#ifdef __F16C__
    return (uint16_t)_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT);
#else
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = f32_from_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = f32_bits(base), nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
#endif
}

/* A little-endian f16 / u32 field at any byte address. */
INLINE float ld_f16(const uint8_t *p) { return f16_to_f32((uint16_t)(p[0] | (p[1] << 8))); }
INLINE uint32_t ld_u32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}


typedef void (*deq_fn)(const uint8_t *, float *);
typedef void (*deq_n_fn)(const uint8_t *, float *, int);

typedef struct {           /* y (m, n) = x (m, k) @ W.T, W = n rows of row_bytes; y row r at y + r*ldy */
    const uint8_t *w;
    int64_t row_bytes, n, m, k;
    const float *x;
    float *y;
    int64_t ldy;
} gemv_job;

/* Q8_K (292 B, x only, never stored in files): 256 values x ~ d * qs
 *   d: f32 | qs: 256 x int8 | bsums: 16 x int16, bsums[g] = sum of qs[16g .. 16g+15] */
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } blk_q8k;

typedef struct {           /* what a call precomputes from x, shared by every W row: */
    float *s16, *s32;      /* sums of each x row over 16 / 32 consecutive weights: (m, k/16), (m, k/32) */
    blk_q8k *q8;           /* x rounded to Q8_K, (m, k/256) blocks; NULL when no row kernel needs it */
    struct blk_q8x *q80;   /* x rounded to Q8_0, (m, k/32) blocks (q80_avx2.h); NULL likewise */
} x_sums;

#endif
