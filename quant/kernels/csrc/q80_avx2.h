/* Integer decode rows for the 32-weight formats against x rounded to Q8_0, as llama.cpp pairs
 * them (Q4_0, Q5_0, Q8_0, IQ4_NL with Q8_0; Q4_1, Q5_1 with Q8_1, which is Q8_0's rounding plus
 * the block's sum).
 *
 * x is rounded once per call, per row and per 32 values (quantize_q80, llama.cpp's AVX2
 * quantize_row_q8_0): amax = max |x|, d = f16(amax / 127), id = amax ? 127 / amax : 0,
 * qs[j] = round_half_even(x[j] * id) (|x * id| <= 127), sum = sum of qs; x ~ d * qs. A block
 * then meets it in integers (8 int32 lanes of 4 products each, exact):
 *     Q4_0 / Q5_0: w = d_w (q - 8 | 16)      ->  d_w d_x (q - 8|16) . qs       (signed x signed)
 *     Q8_0 / IQ4_NL: w = d_w v (v int8)       ->  d_w d_x v . qs
 *     Q4_1 / Q5_1: w = d_w q + m              ->  d_w d_x q . qs  +  m d_x sum  (unsigned x signed)
 * Signed x signed goes through |a| and sign(b, a) (one operand unsigned, as the instructions
 * need); x's codes are never -128, so sign(b, a) cannot overflow. The integer dot is
 * `vpdpbusd` where the build has AVX512-VNNI (+VL) or AVX-VNNI, else maddubs + madd (no
 * saturation: |pair| <= 2 * 128 * 127). So the result is x' @ W.T (x' = d * qs, the rounded x)
 * up to the float rounding of one product and sum per block.
 */
#ifndef GGR_Q80_AVX2_H
#define GGR_Q80_AVX2_H
#include "q8k_avx2.h"                   /* dot_u8s8, hmax8, load32, nibbles_32, iq4_codes, hsum256 */

/* x rounded to Q8_0 (x only): d (an f16 value, as float) | sum of qs | 32 x int8 */
typedef struct blk_q8x { float d; int32_t sum; int8_t qs[32]; } blk_q8x;

/* k values of x (k % 32 == 0) -> k / 32 blk_q8x */
static void quantize_q80(const float *x, int64_t k, blk_q8x *y) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);   /* undo packs' lane interleave */
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < k / 32; b++, x += 32) {
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int i = 0; i < 4; i++) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[i] = _mm256_loadu_ps(x + 8 * i)));
        const float top = hmax8(amax);
        const float id = top != 0.0f ? 127.0f / top : 0.0f;
        __m256i q[4];
        for (int i = 0; i < 4; i++) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(id)));
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        const __m256i qs = _mm256_permutevar8x32_epi32(p, order);
        _mm256_storeu_si256((__m256i *)y[b].qs, qs);
        y[b].d = f16_to_f32(f32_to_f16(top / 127.0f));
        y[b].sum = (int32_t)hsum_i32(dot_u8s8(_mm256_set1_epi8(1), qs));
    }
}

/* 8 int32 lanes, each the sum of 4 products of signed a and signed b (b never -128) */
INLINE __m256i dot_s8s8(__m256i a, __m256i b) { return dot_u8s8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)); }

/* 32 nibble codes minus `off`: 16 bytes (byte j: weight j low, weight j + 16 high) -> int8 */
INLINE __m256i nib_codes(const uint8_t *qs, int off) { return _mm256_sub_epi8(nibbles_32(qs), mask8(off)); }
/* the 5th bits of a Q5 block (qh bit j = weight j) as 16 per byte */
INLINE __m256i q5_codes(const uint8_t *qs, const uint8_t *qh) { return _mm256_or_si256(nibbles_32(qs), bits_x16(ld_u32(qh))); }

/* Each format: the int32 lanes of one block . x block, and the block's float factor(s) */
INLINE __m256i idot_q4_0(const uint8_t *p, const blk_q8x *x) {
    return dot_s8s8(nib_codes(((const blk_q4_0 *)p)->qs, 8), load32(x->qs));
}
INLINE __m256i idot_q5_0(const uint8_t *p, const blk_q8x *x) {
    const blk_q5_0 *b = (const blk_q5_0 *)p;
    return dot_s8s8(_mm256_sub_epi8(q5_codes(b->qs, b->qh), mask8(16)), load32(x->qs));
}
INLINE __m256i idot_q8_0(const uint8_t *p, const blk_q8x *x) { return dot_s8s8(load32(((const blk_q8_0 *)p)->qs), load32(x->qs)); }
INLINE __m256i idot_iq4_nl(const uint8_t *p, const blk_q8x *x) { return dot_s8s8(iq4_codes(((const blk_iq4_nl *)p)->qs), load32(x->qs)); }
INLINE __m256i idot_q4_1(const uint8_t *p, const blk_q8x *x) { return dot_u8s8(nibbles_32(((const blk_q4_1 *)p)->qs), load32(x->qs)); }
INLINE __m256i idot_q5_1(const uint8_t *p, const blk_q8x *x) {
    const blk_q5_1 *b = (const blk_q5_1 *)p;
    return dot_u8s8(q5_codes(b->qs, b->qh), load32(x->qs));
}

typedef __m256i (*idot_fn)(const uint8_t *, const blk_q8x *);

/* one W row of nb blocks (ts bytes, d at offset 0, m at 2 when `with_min`) . one x row */
INLINE float dot_q80_row(const uint8_t *row, const blk_q8x *x, int64_t nb, int ts, idot_fn idot, int with_min) {
    __m256 acc = _mm256_setzero_ps();
    float acc_m = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *p = row + i * ts;
        const __m256 s = _mm256_set1_ps(ld_f16(p) * x[i].d);
        acc = _mm256_fmadd_ps(s, _mm256_cvtepi32_ps(idot(p, &x[i])), acc);
        if (with_min) acc_m += ld_f16(p + 2) * (x[i].d * (float)x[i].sum);
    }
    return hsum256(acc) + acc_m;
}

/* y[r][i] = W row i . x row r (Q8_0) for output rows [lo, hi) and every x row */
INLINE void q80_rows(const gemv_job *job, const blk_q8x *xq, int64_t lo, int64_t hi, int ts, idot_fn idot, int with_min) {
    const int64_t nb = job->k / 32;
    for (int64_t i = lo; i < hi; i++)
        for (int64_t r = 0; r < job->m; r++)
            job->y[r * job->ldy + i] = dot_q80_row(job->w + i * job->row_bytes, xq + r * nb, nb, ts, idot, with_min);
}

#endif
