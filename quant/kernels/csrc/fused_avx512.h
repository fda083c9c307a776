/* Fused dequantize-and-dot rows for x86-64 with AVX-512 (F, BW, VL): Q4_0, Q5_0, Q5_1, Q8_0,
 * IQ4_NL, IQ4_XS.
 *
 * Where a block's codes are 4 or 5 bits, its weights are dequantized exactly in registers by a
 * table lookup: the 16 (32) values a code can stand for in this block or sub-block, computed
 * with gguf-py's float32 operations (d * (q - 8), d * q + m, d * IQ4_VALUES[q], ...), sit in
 * one (two) zmm and `vpermps` (`vpermt2ps`) picks 16 weights per instruction by their code (it
 * reads only the low 4 / 5 bits of each index lane, so a byte's high nibble needs no mask).
 * Q8_0 sums q*x and scales once per block, as the AVX2 row does. So every row here differs from
 * x @ dequantize(W).T in float32 summation order only.
 *
 * Which formats take these rows is measured (BENCHMARKS.md section 1, "AVX-512 rows"): on the
 * AMD EPYC (Zen 4, 512-bit operations issued as two 256-bit halves) they beat the AVX2 rows for
 * these six formats (IQ4 1.4-1.5x, Q5_0 1.2x, the others 1.0-1.05x); the same table approach for
 * Q4_1 / Q4_K / Q5_K and a Q6_K row were 0.9-1.0x there and are not built.
 *
 * Per x row two accumulators take alternate 32-weight units (parity `par`), each unit summed
 * as mul + fma first: the dependent chain is one add per 64 weights. Each x row's operations
 * do not depend on how many rows the call has (1-4 per pass), so a batch of sequences decodes
 * as each would alone.
 */
#ifndef GGR_FUSED_AVX512_H
#define GGR_FUSED_AVX512_H
#include "fused_avx2.h"                 /* FUSED_M, xrows, blocks.h */

typedef struct {                        /* per x row r: y = reduce(a + b) */
    __m512 a[FUSED_M], b[FUSED_M];
} accs512;

static const float IOTA16[16] ALIGNED = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

INLINE __m512 iota16(float add) { return _mm512_add_ps(_mm512_load_ps(IOTA16), _mm512_set1_ps(add)); }
/* 16 bytes -> 16 int32 lanes (the byte's code bits, plus any bits above them) */
INLINE __m512i u8x16(const uint8_t *p) { return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)); }
INLINE __m512i hi4(__m512i v) { return _mm512_srli_epi32(v, 4); }
/* a 16-entry table indexed by the low 4 bits of each lane */
INLINE __m512 look16(__m512i idx, __m512 table) { return _mm512_permutexvar_ps(idx, table); }

/* 32 weights (w0: 0-15, w1: 16-31) . x at pos, into accumulator `par` of every row */
INLINE void dot32(accs512 *A, const xrows *X, int64_t pos, __m512 w0, __m512 w1, int par) {
    for (int r = 0; r < X->mm; r++) {
        const float *x = X->x + r * X->k + pos;
        const __m512 p = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(w0, _mm512_loadu_ps(x)));
        if (par) A->b[r] = _mm512_add_ps(A->b[r], p);
        else A->a[r] = _mm512_add_ps(A->a[r], p);
    }
}
/* the same with the codes q0, q1 as floats and one scale d for all 32: d * (q . x) */
INLINE void dot32_scaled(accs512 *A, const xrows *X, int64_t pos, __m512 q0, __m512 q1, float d, int par) {
    const __m512 vd = _mm512_set1_ps(d);
    for (int r = 0; r < X->mm; r++) {
        const float *x = X->x + r * X->k + pos;
        const __m512 p = _mm512_fmadd_ps(q1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(q0, _mm512_loadu_ps(x)));
        if (par) A->b[r] = _mm512_fmadd_ps(vd, p, A->b[r]);
        else A->a[r] = _mm512_fmadd_ps(vd, p, A->a[r]);
    }
}

/* 16 nibble bytes (byte j: weight j low, weight j + 16 high) looked up in one table */
INLINE void nib16_dot(accs512 *A, const xrows *X, int64_t pos, const uint8_t *qs, __m512 table, int par) {
    const __m512i v = u8x16(qs);
    dot32(A, X, pos, look16(v, table), look16(hi4(v), table), par);
}

/* ---- one block per format; pos = the block's first weight in the row ---- */

INLINE void row512_q4_0(accs512 *A, const xrows *X, int64_t pos, const uint8_t *p, int par) {
    const blk_q4_0 *b = (const blk_q4_0 *)p;                       /* w = d * (q - 8) */
    nib16_dot(A, X, pos, b->qs, _mm512_mul_ps(_mm512_set1_ps(ld_f16(b->d)), iota16(-8.0f)), par);
}
INLINE void row512_iq4_nl(accs512 *A, const xrows *X, int64_t pos, const uint8_t *p, int par) {
    const blk_iq4_nl *b = (const blk_iq4_nl *)p;                   /* w = d * IQ4_VALUES[q] */
    const __m512 values = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)IQ4_VALUES)));
    nib16_dot(A, X, pos, b->qs, _mm512_mul_ps(_mm512_set1_ps(ld_f16(b->d)), values), par);
}

/* 5-bit codes: nibble | (qh bit << 4) indexes lo (codes 0-15) or hi (16-31) by vpermt2ps */
INLINE void q5_dot(accs512 *A, const xrows *X, int64_t pos, const uint8_t *qs, uint32_t qh, __m512 lo, __m512 hi,
                   int par) {
    const __m512i v = u8x16(qs), low4 = _mm512_set1_epi32(0x0F), b4 = _mm512_set1_epi32(16);
    const __m512i i0 = _mm512_mask_or_epi32(_mm512_and_si512(v, low4), (__mmask16)qh, _mm512_and_si512(v, low4), b4);
    const __m512i i1 = _mm512_mask_or_epi32(hi4(v), (__mmask16)(qh >> 16), hi4(v), b4);
    dot32(A, X, pos, _mm512_permutex2var_ps(lo, i0, hi), _mm512_permutex2var_ps(lo, i1, hi), par);
}
INLINE void row512_q5_0(accs512 *A, const xrows *X, int64_t pos, const uint8_t *p, int par) {
    const blk_q5_0 *b = (const blk_q5_0 *)p;                       /* w = d * (q - 16) */
    const __m512 d = _mm512_set1_ps(ld_f16(b->d));
    q5_dot(A, X, pos, b->qs, ld_u32(b->qh), _mm512_mul_ps(d, iota16(-16.0f)), _mm512_mul_ps(d, iota16(0.0f)), par);
}
INLINE void row512_q5_1(accs512 *A, const xrows *X, int64_t pos, const uint8_t *p, int par) {
    const blk_q5_1 *b = (const blk_q5_1 *)p;                       /* w = d * q + m */
    const __m512 d = _mm512_set1_ps(ld_f16(b->d)), m = _mm512_set1_ps(ld_f16(b->m));
    q5_dot(A, X, pos, b->qs, ld_u32(b->qh), _mm512_add_ps(_mm512_mul_ps(d, iota16(0.0f)), m),
           _mm512_add_ps(_mm512_mul_ps(d, iota16(16.0f)), m), par);
}
INLINE void row512_q8_0(accs512 *A, const xrows *X, int64_t pos, const uint8_t *p, int par) {
    const blk_q8_0 *b = (const blk_q8_0 *)p;                       /* w = q * d, d factored out */
    const __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs)));
    const __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16))));
    dot32_scaled(A, X, pos, q0, q1, ld_f16(b->d), par);
}

INLINE void row512_iq4_xs(accs512 *A, const xrows *X, int64_t pos, const uint8_t *p, int par) {
    (void)par;
    const blk_iq4_xs *b = (const blk_iq4_xs *)p;                   /* w = (d * (sc - 32)) * IQ4_VALUES[q] */
    const float d = ld_f16(b->d);
    const __m512 values = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_load_si128((const __m128i *)IQ4_VALUES)));
    for (int s = 0; s < 8; s++)
        nib16_dot(A, X, pos + 32 * s, b->qs + 16 * s, _mm512_mul_ps(_mm512_set1_ps(iq4_xs_scale(b, d, s)), values), s & 1);
}

/* ---- the row driver ---- */

typedef void (*row512_fn)(accs512 *, const xrows *, int64_t, const uint8_t *, int);

/* y[r][i] for x rows r0 .. r0+mm-1; blocks in pairs so that 32-weight formats alternate parity */
INLINE void avx512_row(const gemv_job *job, int64_t i, int64_t r0, int mm, row512_fn blk, int qk, int ts) {
    const uint8_t *row = job->w + i * job->row_bytes;
    const xrows X = {job->x + r0 * job->k, NULL, NULL, job->k, mm};
    accs512 A;
    for (int r = 0; r < mm; r++) A.a[r] = A.b[r] = _mm512_setzero_ps();
    const int64_t nb = job->k / qk;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        blk(&A, &X, b * qk, row + b * ts, 0);
        blk(&A, &X, (b + 1) * qk, row + (b + 1) * ts, 1);
    }
    if (b < nb) blk(&A, &X, b * qk, row + b * ts, 0);
    for (int r = 0; r < mm; r++) job->y[(r0 + r) * job->ldy + i] = _mm512_reduce_add_ps(_mm512_add_ps(A.a[r], A.b[r]));
}

/* all x rows for output row i, in groups of 1-4 rows whose count is a compile-time constant */
INLINE void avx512_rows(const gemv_job *job, int64_t i, row512_fn blk, int qk, int ts) {
    for (int64_t r0 = 0; r0 < job->m; r0 += FUSED_M) {
        switch (job->m - r0 < FUSED_M ? (int)(job->m - r0) : FUSED_M) {
        case 1: avx512_row(job, i, r0, 1, blk, qk, ts); break;
        case 2: avx512_row(job, i, r0, 2, blk, qk, ts); break;
        case 3: avx512_row(job, i, r0, 3, blk, qk, ts); break;
        default: avx512_row(job, i, r0, 4, blk, qk, ts); break;
        }
    }
}

#endif
