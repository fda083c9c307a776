/* Fused dequantize-and-dot rows for x86-64 with AVX2 + FMA + F16C.
 *
 * No dequantized weight is ever stored. Each format's row_<name> walks one block (layout as
 * drawn in blocks.h) and hands 32-weight "units" to unit_dot as four float vectors of the raw
 * integer codes q (weight order) with the unit's scales: w = s0*q (weights 0-15), s1*q (16-31).
 * Offsets (Q4_1's m, the K-quant mins, Q4_0's -8) are factored out of the dot:
 *     sum_j (s*q_j + c) * x_j = s * sum_j q_j*x_j + c * sum_j x_j
 * with the x sums per 16 / 32 weights computed once per call (xrows.xs16 / xs32). So the inner
 * work is one int->float convert and one FMA per 8 weights and x row, and the float rounding
 * differs from dequantize-then-dot only in summation order.
 *
 * For one x row, q*x is summed first and scaled per unit (fewest operations); for several rows
 * the unit is scaled once and then FMA'd into every row's accumulators.
 */
#ifndef GGR_FUSED_AVX2_H
#define GGR_FUSED_AVX2_H
#include "blocks.h"

#define FUSED_M 4          /* x rows per pass over a W row: 4 x 2 accumulators + 4 codes = 12 ymm */

typedef struct {            /* per x row r: y = hsum(a + b + o) + c */
    __m256 a[FUSED_M], b[FUSED_M];      /* scaled q.x of weights 0-15 / 16-31 of each unit */
    __m256 o[FUSED_M];                  /* vector offset terms (K-quant mins . x sums) */
    float c[FUSED_M];                   /* scalar offset terms */
} accs;

typedef struct {            /* x rows r0 .. r0+mm-1 of one call, row r at x + r*k */
    const float *x, *xs16, *xs32;       /* xs16 / xs32: sums of x per 16 / 32 weights */
    int64_t k;
    int mm;
} xrows;

enum { ONE_SCALE = 0, TWO_SCALES = 1 };

/* ---- integer codes -> 4 float vectors (weights 0-7, 8-15, 16-23, 24-31) ---- */

INLINE __m256 cvt8(__m256i v) { return _mm256_cvtepi32_ps(v); }
INLINE __m256i u8x8_at(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }

/* 32 int8 codes in memory */
INLINE void codes_i8_mem(const int8_t *q, __m256 f[4]) {
    for (int v = 0; v < 4; v++) f[v] = cvt8(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + 8 * v))));
}
/* 32 int8 codes in a register */
INLINE void codes_i8(__m256i q, __m256 f[4]) {
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    f[0] = cvt8(_mm256_cvtepi8_epi32(lo));
    f[1] = cvt8(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    f[2] = cvt8(_mm256_cvtepi8_epi32(hi));
    f[3] = cvt8(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
}
/* 16 bytes of nibbles (byte j: weight j low, weight j + 16 high) -> one unit, codes 0..15 */
INLINE void codes_nib16_mem(const uint8_t *qs, __m256 f[4]) {
    const __m256i v0 = u8x8_at(qs), v1 = u8x8_at(qs + 8), m = _mm256_set1_epi32(0x0F);
    f[0] = cvt8(_mm256_and_si256(v0, m));
    f[1] = cvt8(_mm256_and_si256(v1, m));
    f[2] = cvt8(_mm256_srli_epi32(v0, 4));
    f[3] = cvt8(_mm256_srli_epi32(v1, 4));
}
/* 32 bytes of nibbles -> two units: `lo` = low nibbles of bytes 0-31, `hi` = high nibbles */
INLINE void codes_nib32_mem(const uint8_t *qs, __m256 lo[4], __m256 hi[4]) {
    const __m256i m = _mm256_set1_epi32(0x0F);
    for (int v = 0; v < 4; v++) {
        const __m256i b = u8x8_at(qs + 8 * v);
        lo[v] = cvt8(_mm256_and_si256(b, m));
        hi[v] = cvt8(_mm256_srli_epi32(b, 4));
    }
}

/* Q5 codes: 16 nibble bytes as above plus `qh` (bit j = 16s bit of weight j) -> codes 0..31.
 * Lane l of vector v needs bit 8v + l at bit 4: shift right by 8v + l - 4 (v = 0: shift
 * qh << 4 right by l instead; bits 28-31 are not needed there). */
INLINE void codes_q5_mem(const uint8_t *qs, uint32_t qh, __m256 f[4]) {
    const __m256i v0 = u8x8_at(qs), v1 = u8x8_at(qs + 8), m = _mm256_set1_epi32(0x0F), b4 = _mm256_set1_epi32(16);
    const __m256i h = _mm256_set1_epi32((int)qh), lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i h0 = _mm256_and_si256(_mm256_srlv_epi32(_mm256_slli_epi32(h, 4), lane), b4);
    const __m256i h1 = _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_add_epi32(lane, _mm256_set1_epi32(4))), b4);
    const __m256i h2 = _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_add_epi32(lane, _mm256_set1_epi32(12))), b4);
    const __m256i h3 = _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_add_epi32(lane, _mm256_set1_epi32(20))), b4);
    f[0] = cvt8(_mm256_or_si256(_mm256_and_si256(v0, m), h0));
    f[1] = cvt8(_mm256_or_si256(_mm256_and_si256(v1, m), h1));
    f[2] = cvt8(_mm256_or_si256(_mm256_srli_epi32(v0, 4), h2));
    f[3] = cvt8(_mm256_or_si256(_mm256_srli_epi32(v1, 4), h3));
}

/* ---- byte-domain helpers for the formats that assemble codes from several bit fields ---- */

INLINE __m256i mask8(int v) { return _mm256_set1_epi8((char)v); }
INLINE __m256i bits_at(__m256i v, int shift, int mask) {   /* (byte >> shift) & mask, per byte */
    return _mm256_and_si256(_mm256_srli_epi16(v, shift), mask8(mask));
}
INLINE __m256i nibbles_32(const uint8_t *qs) {             /* 16 B -> byte j = weight j */
    const __m128i v = _mm_loadu_si128((const __m128i *)qs);
    const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
    return _mm256_set_m128i(hi, lo);
}
INLINE __m256i bits_x16(uint32_t bits) {                   /* byte j = 16 * bit j of `bits` */
    const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    const __m256i select = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);   /* byte j = byte j/8 */
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, select), select);
    return _mm256_and_si256(v, mask8(16));
}
INLINE __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* 8 / 16 bytes (4 per u32, little-endian) -> 8 / 16 floats * d */
INLINE __m256 bytes8_u(uint32_t lo, uint32_t hi, float d) {
    return _mm256_mul_ps(_mm256_set1_ps(d), cvt8(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)hi, (int)lo))));
}
INLINE __m256 bytes8_i(__m128i v, float d) { return _mm256_mul_ps(_mm256_set1_ps(d), cvt8(_mm256_cvtepi8_epi32(v))); }

/* ---- accumulation ---- */

/* Every x row is dotted the same way whatever the row count (mm is a compile-time 1..4), so
 * row r of a call equals that row alone: a batch of sequences decodes as each would alone. Per
 * row: the 32 products summed in one FMA chain, then scaled into the accumulator (5 ops; 6 with
 * two scales, one per half). */
INLINE void unit_dot(accs *A, const xrows *X, int64_t pos, const __m256 f[4], float s0, float s1, int mode) {
    const __m256 v0 = _mm256_set1_ps(s0), v1 = _mm256_set1_ps(s1);
    for (int r = 0; r < X->mm; r++) {
        const float *x = X->x + r * X->k + pos;
        __m256 p0 = _mm256_mul_ps(f[0], _mm256_loadu_ps(x));
        p0 = _mm256_fmadd_ps(f[1], _mm256_loadu_ps(x + 8), p0);
        if (mode & TWO_SCALES) {
            __m256 p1 = _mm256_mul_ps(f[2], _mm256_loadu_ps(x + 16));
            p1 = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(x + 24), p1);
            A->a[r] = _mm256_fmadd_ps(v0, p0, A->a[r]);
            A->b[r] = _mm256_fmadd_ps(v1, p1, A->b[r]);
        } else {
            p0 = _mm256_fmadd_ps(f[2], _mm256_loadu_ps(x + 16), p0);
            p0 = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(x + 24), p0);
            A->a[r] = _mm256_fmadd_ps(v0, p0, A->a[r]);
        }
    }
}

/* c * (sum of x over the 32 weights at pos), every row */
INLINE void offset32(accs *A, const xrows *X, int64_t pos, float c) {
    for (int r = 0; r < X->mm; r++) A->c[r] += c * X->xs32[r * (X->k / 32) + pos / 32];
}
/* sum_i c[i] * (sum of x over the i-th 32 weights from pos), i < 8 */
INLINE void offset32x8(accs *A, const xrows *X, int64_t pos, __m256 c) {
    for (int r = 0; r < X->mm; r++)
        A->o[r] = _mm256_fmadd_ps(c, _mm256_loadu_ps(X->xs32 + r * (X->k / 32) + pos / 32), A->o[r]);
}
/* sum_i c[i] * (sum of x over the i-th 16 weights from pos), i < 16 */
INLINE void offset16x16(accs *A, const xrows *X, int64_t pos, __m256 c0, __m256 c1) {
    for (int r = 0; r < X->mm; r++) {
        const float *xs = X->xs16 + r * (X->k / 16) + pos / 16;
        A->o[r] = _mm256_fmadd_ps(c0, _mm256_loadu_ps(xs), A->o[r]);
        A->o[r] = _mm256_fmadd_ps(c1, _mm256_loadu_ps(xs + 8), A->o[r]);
    }
}

/* ---- one block per format; pos = the block's first weight in the row ---- */

INLINE void row_q4_0(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q4_0 *b = (const blk_q4_0 *)p;
    const float d = ld_f16(b->d);
    __m256 f[4];
    codes_nib16_mem(b->qs, f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
    offset32(A, X, pos, -8.0f * d);                       /* d * (q - 8) */
}
INLINE void row_q4_1(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q4_1 *b = (const blk_q4_1 *)p;
    const float d = ld_f16(b->d);
    __m256 f[4];
    codes_nib16_mem(b->qs, f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
    offset32(A, X, pos, ld_f16(b->m));                    /* d * q + m */
}
INLINE void row_q5_0(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q5_0 *b = (const blk_q5_0 *)p;
    const float d = ld_f16(b->d);
    __m256 f[4];
    codes_q5_mem(b->qs, ld_u32(b->qh), f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
    offset32(A, X, pos, -16.0f * d);                      /* d * (q - 16) */
}
INLINE void row_q5_1(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q5_1 *b = (const blk_q5_1 *)p;
    const float d = ld_f16(b->d);
    __m256 f[4];
    codes_q5_mem(b->qs, ld_u32(b->qh), f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
    offset32(A, X, pos, ld_f16(b->m));                    /* d * q + m */
}
INLINE void row_q8_0(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q8_0 *b = (const blk_q8_0 *)p;
    const float d = ld_f16(b->d);
    __m256 f[4];
    codes_i8_mem(b->qs, f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
}
INLINE void row_q2_k(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q2_k *b = (const blk_q2_k *)p;
    const float d = ld_f16(b->d), dmin = ld_f16(b->dmin);
    const __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
    const __m128i lo = _mm_and_si128(sc, _mm_set1_epi8(0x0F)), hi = _mm_and_si128(_mm_srli_epi16(sc, 4), _mm_set1_epi8(0x0F));
    float dl[16] ALIGNED;                                 /* d * scale, per 16 weights */
    _mm256_store_ps(dl, bytes8_i(lo, d));
    _mm256_store_ps(dl + 8, bytes8_i(_mm_srli_si128(lo, 8), d));
    offset16x16(A, X, pos, bytes8_i(hi, -dmin), bytes8_i(_mm_srli_si128(hi, 8), -dmin));
    for (int h = 0; h < 2; h++) {
        const __m256i qs = load32(b->qs + 32 * h);
        for (int s = 0; s < 4; s++) {
            __m256 f[4];
            codes_i8(bits_at(qs, 2 * s, 3), f);
            unit_dot(A, X, pos + 128 * h + 32 * s, f, dl[8 * h + 2 * s], dl[8 * h + 2 * s + 1], TWO_SCALES);
        }
    }
}
/* Q3_K's 16 six-bit scales minus their bias of 32, as int8 (layout in blocks.h): 4 per u32,
 * low nibbles from bytes 0-7, high crumbs from bytes 8-11 */
INLINE __m128i q3k_scales(const uint8_t *scales) {
    const uint32_t s0 = ld_u32(scales), s1 = ld_u32(scales + 4), hc = ld_u32(scales + 8);
    const uint32_t m4 = 0x0F0F0F0F, m2 = 0x03030303;
    return _mm_sub_epi8(_mm_set_epi32((int)(((s1 >> 4) & m4) | (((hc >> 6) & m2) << 4)),
                                      (int)(((s0 >> 4) & m4) | (((hc >> 4) & m2) << 4)),
                                      (int)((s1 & m4) | (((hc >> 2) & m2) << 4)),
                                      (int)((s0 & m4) | ((hc & m2) << 4))),
                        _mm_set1_epi8(32));
}
INLINE void row_q3_k(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q3_k *b = (const blk_q3_k *)p;
    const float d = ld_f16(b->d);
    const __m128i sc = q3k_scales(b->scales);
    float dl[16] ALIGNED;
    _mm256_store_ps(dl, bytes8_i(sc, d));
    _mm256_store_ps(dl + 8, bytes8_i(_mm_srli_si128(sc, 8), d));
    const __m256i hmask = load32(b->hmask);
    for (int h = 0; h < 2; h++) {
        const __m256i qs = load32(b->qs + 32 * h);
        for (int s = 0; s < 4; s++) {
            /* a clear hmask bit subtracts 4 */
            const __m256i minus4 = _mm256_andnot_si256(_mm256_slli_epi16(bits_at(hmask, 4 * h + s, 1), 2), mask8(4));
            __m256 f[4];
            codes_i8(_mm256_sub_epi8(bits_at(qs, 2 * s, 3), minus4), f);
            unit_dot(A, X, pos + 128 * h + 32 * s, f, dl[8 * h + 2 * s], dl[8 * h + 2 * s + 1], TWO_SCALES);
        }
    }
}
/* Q4_K / Q5_K: d * scale per 32 weights into dl[8]; the -(dmin * min) terms into the offsets */
INLINE void k_scales(accs *A, const xrows *X, int64_t pos, const uint8_t *scales, float d, float dmin, float dl[8]) {
    const uint32_t a = ld_u32(scales), m = ld_u32(scales + 4), c = ld_u32(scales + 8);
    const uint32_t k6 = 0x3F3F3F3F, k4 = 0x0F0F0F0F, k2 = 0x30303030;
    const uint32_t sc_lo = a & k6, sc_hi = (c & k4) | ((a >> 2) & k2);
    const uint32_t mn_lo = m & k6, mn_hi = ((c >> 4) & k4) | ((m >> 2) & k2);
    _mm256_store_ps(dl, bytes8_u(sc_lo, sc_hi, d));
    offset32x8(A, X, pos, bytes8_u(mn_lo, mn_hi, -dmin));
}
INLINE void row_q4_k(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q4_k *b = (const blk_q4_k *)p;
    float dl[8] ALIGNED;
    k_scales(A, X, pos, b->scales, ld_f16(b->d), ld_f16(b->dmin), dl);
    for (int g = 0; g < 4; g++) {
        __m256 lo[4], hi[4];
        codes_nib32_mem(b->qs + 32 * g, lo, hi);
        unit_dot(A, X, pos + 64 * g, lo, dl[2 * g], dl[2 * g], ONE_SCALE);
        unit_dot(A, X, pos + 64 * g + 32, hi, dl[2 * g + 1], dl[2 * g + 1], ONE_SCALE);
    }
}
INLINE void row_q5_k(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q5_k *b = (const blk_q5_k *)p;
    float dl[8] ALIGNED;
    k_scales(A, X, pos, b->scales, ld_f16(b->d), ld_f16(b->dmin), dl);
    const __m256i qh = load32(b->qh);
    for (int g = 0; g < 4; g++) {
        const __m256i qs = load32(b->qs + 32 * g);
        __m256 f[4];
        codes_i8(_mm256_or_si256(_mm256_and_si256(qs, mask8(0x0F)), _mm256_slli_epi16(bits_at(qh, 2 * g, 1), 4)), f);
        unit_dot(A, X, pos + 64 * g, f, dl[2 * g], dl[2 * g], ONE_SCALE);
        codes_i8(_mm256_or_si256(bits_at(qs, 4, 0x0F), _mm256_slli_epi16(bits_at(qh, 2 * g + 1, 1), 4)), f);
        unit_dot(A, X, pos + 64 * g + 32, f, dl[2 * g + 1], dl[2 * g + 1], ONE_SCALE);
    }
}
/* Q6_K half h: q[u] = the unsigned codes (0..63) of weights 128h + 32u .. + 31, byte j = weight j */
INLINE void q6_k_codes(const blk_q6_k *b, int h, __m256i q[4]) {
    const __m256i la = load32(b->ql + 64 * h), lb = load32(b->ql + 64 * h + 32), qh = load32(b->qh + 32 * h);
    q[0] = _mm256_or_si256(_mm256_and_si256(la, mask8(0x0F)), _mm256_slli_epi16(bits_at(qh, 0, 3), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(lb, mask8(0x0F)), _mm256_slli_epi16(bits_at(qh, 2, 3), 4));
    q[2] = _mm256_or_si256(bits_at(la, 4, 0x0F), _mm256_slli_epi16(bits_at(qh, 4, 3), 4));
    q[3] = _mm256_or_si256(bits_at(lb, 4, 0x0F), _mm256_slli_epi16(bits_at(qh, 6, 3), 4));
}
INLINE void row_q6_k(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_q6_k *b = (const blk_q6_k *)p;
    const float d = ld_f16(b->d);
    float dl[16] ALIGNED;
    _mm256_store_ps(dl, bytes8_i(_mm_loadl_epi64((const __m128i *)b->scales), d));
    _mm256_store_ps(dl + 8, bytes8_i(_mm_loadl_epi64((const __m128i *)(b->scales + 8)), d));
    for (int h = 0; h < 2; h++) {
        __m256i q[4];
        q6_k_codes(b, h, q);
        for (int u = 0; u < 4; u++) {
            __m256 f[4];
            codes_i8(_mm256_sub_epi8(q[u], mask8(32)), f);
            unit_dot(A, X, pos + 128 * h + 32 * u, f, dl[8 * h + 2 * u], dl[8 * h + 2 * u + 1], TWO_SCALES);
        }
    }
}

/* IQ4: 4-bit codes looked up in IQ4_VALUES (int8) with one byte shuffle per 32 weights */
INLINE __m256i iq4_codes(const uint8_t *qs) {
    const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)IQ4_VALUES));
    return _mm256_shuffle_epi8(table, nibbles_32(qs));
}
INLINE void row_iq4_nl(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_iq4_nl *b = (const blk_iq4_nl *)p;
    const float d = ld_f16(b->d);
    __m256 f[4];
    codes_i8(iq4_codes(b->qs), f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
}
INLINE void row_iq4_xs(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const blk_iq4_xs *b = (const blk_iq4_xs *)p;
    const float d = ld_f16(b->d);
    for (int s = 0; s < 8; s++) {
        const float dl = iq4_xs_scale(b, d, s);
        __m256 f[4];
        codes_i8(iq4_codes(b->qs + 16 * s), f);
        unit_dot(A, X, pos + 32 * s, f, dl, dl, ONE_SCALE);
    }
}

/* F32 / F16 / BF16 rows: units of 32 values, FMA'd directly (the k % 32 tail is the driver's) */
INLINE void float_unit(accs *A, const xrows *X, int64_t pos, const __m256 f[4]) {
    for (int r = 0; r < X->mm; r++) {
        const float *x = X->x + r * X->k + pos;
        A->a[r] = _mm256_fmadd_ps(f[0], _mm256_loadu_ps(x), A->a[r]);
        A->b[r] = _mm256_fmadd_ps(f[1], _mm256_loadu_ps(x + 8), A->b[r]);
        A->o[r] = _mm256_fmadd_ps(f[2], _mm256_loadu_ps(x + 16), A->o[r]);
        A->a[r] = _mm256_fmadd_ps(f[3], _mm256_loadu_ps(x + 24), A->a[r]);
    }
}
INLINE void row_f16(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    __m256 f[4];
    for (int v = 0; v < 4; v++) f[v] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 16 * v)));
    float_unit(A, X, pos, f);
}
INLINE void row_f32(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float *w = (const float *)p;
    const __m256 f[4] = {_mm256_loadu_ps(w), _mm256_loadu_ps(w + 8), _mm256_loadu_ps(w + 16), _mm256_loadu_ps(w + 24)};
    float_unit(A, X, pos, f);
}
INLINE void row_bf16(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    __m256 f[4];
    for (int v = 0; v < 4; v++)
        f[v] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * v))), 16));
    float_unit(A, X, pos, f);
}

/* Ternary rows: the block is dequantized into L1 by its scalar deq_<name>, then FMA'd against
 * x in units of 32 as the float rows. */
#define DEQ_ROW(name, QK)                                                                    \
    INLINE void row_##name(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {         \
        float w[QK] ALIGNED;                                                                 \
        deq_##name(p, w);                                                                    \
        for (int u = 0; u < QK; u += 32) {                                                   \
            const __m256 f[4] = {_mm256_load_ps(w + u), _mm256_load_ps(w + u + 8),           \
                                 _mm256_load_ps(w + u + 16), _mm256_load_ps(w + u + 24)};    \
            float_unit(A, X, pos + u, f);                                                    \
        }                                                                                    \
    }
DEQ_ROW(tq1_0, QK_K)
DEQ_ROW(tq2_0, QK_K)

#include "fused_iq_avx2.h"     /* the codebook types and MXFP4 */

/* ---- the row driver ---- */

typedef void (*row_fn)(accs *, const xrows *, int64_t, const uint8_t *);

INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* y[r][i] for x rows r0 .. r0+mm-1; `deq_n` (float rows only) dequantizes the k % qk tail. */
INLINE void avx_row(const gemv_job *job, const x_sums *xs, int64_t i, int64_t r0, int mm, row_fn blk,
                    deq_n_fn deq_n, int qk, int ts) {
    const uint8_t *row = job->w + i * job->row_bytes;
    const xrows X = {job->x + r0 * job->k, xs->s16 + r0 * (job->k / 16), xs->s32 + r0 * (job->k / 32), job->k, mm};
    accs A;
    for (int r = 0; r < mm; r++) A.a[r] = A.b[r] = A.o[r] = _mm256_setzero_ps(), A.c[r] = 0.0f;
    const int64_t nb = job->k / qk;
    for (int64_t b = 0; b < nb; b++) blk(&A, &X, b * qk, row + b * ts);
    for (int r = 0; r < mm; r++) {
        float s = hsum256(_mm256_add_ps(_mm256_add_ps(A.a[r], A.b[r]), A.o[r])) + A.c[r];
        if (deq_n && nb * qk < job->k) {
            float tail[32];
            const float *x = X.x + r * job->k;
            deq_n(row + nb * ts, tail, (int)(job->k - nb * qk));
            for (int64_t j = nb * qk; j < job->k; j++) s += tail[j - nb * qk] * x[j];
        }
        job->y[(r0 + r) * job->ldy + i] = s;
    }
}

/* all x rows for output row i, in groups of 1-4 rows whose count is a compile-time constant
 * (so that every accumulator lives in a register); the row's bytes stay in L1 between groups */
INLINE void avx_rows(const gemv_job *job, const x_sums *xs, int64_t i, row_fn blk, deq_n_fn deq_n, int qk, int ts) {
    for (int64_t r0 = 0; r0 < job->m; r0 += FUSED_M) {
        switch (job->m - r0 < FUSED_M ? (int)(job->m - r0) : FUSED_M) {
        case 1: avx_row(job, xs, i, r0, 1, blk, deq_n, qk, ts); break;
        case 2: avx_row(job, xs, i, r0, 2, blk, deq_n, qk, ts); break;
        case 3: avx_row(job, xs, i, r0, 3, blk, deq_n, qk, ts); break;
        default: avx_row(job, xs, i, r0, 4, blk, deq_n, qk, ts); break;
        }
    }
}

#endif
