/* Integer decode rows for the 32-weight formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) against x rounded
 * to Q8_0 / Q8_1 (AVX2), as llama.cpp's quantize_row_q8_0 / q8_1 and ggml_vec_dot_*_q8_0 / q8_1.
 *
 * x is quantized once per call, per row and per 32 values, to a blk_q8x (quantize_q8x):
 *     amax = max |x|,  id = 127 / amax (0 for an all-zero block),
 *     qs[j] = round_half_even(x[j] * id)  (|qs| <= 127),
 *     d = fp16(amax / 127),  s = fp16((amax / 127) * sum qs)   (s: Q8_1 only, the offset term)
 * so x ~ d * qs. Q8_0 and Q8_1 round x alike and differ only by s, so one block serves both.
 * A weight block meets it in integers: _mm256_maddubs_epi16 multiplies |w| (or unsigned codes)
 * by the signed qs (sign moved over with _mm256_sign_epi8), pairs add into int16 (at most
 * 2 * 128 * 127, no saturation), _mm256_madd_epi16 sums into 8 int32, one float fmadd by
 * d_w * d_x per block finishes it:
 *     Q4_0 / Q5_0 / Q8_0: w = d_w c (c signed)  ->  d_w d_x (c . qs)
 *     Q4_1 / Q5_1:        w = d_w c + m         ->  d_w d_x (c . qs)  +  m s
 * The integer sums are exact, so the result is x' @ W.T (x' = d * qs) plus, for Q4_1 / Q5_1,
 * m (s - d sum qs) per block (s's fp16 rounding), up to the float rounding of a few products.
 */
#ifndef GGR_Q8_AVX2_H
#define GGR_Q8_AVX2_H
#include "fused_avx2.h"                 /* load32, mask8, nibbles_32, bits_x16, hsum256 */
#include "q8k_avx2.h"                   /* hmax8 */

INLINE float f16_round(float v) { return _cvtsh_ss(_cvtss_sh(v, 0)); }   /* fp32 -> fp16 (nearest even) -> fp32 */

/* k values of x (k % 32 == 0) -> k / 32 blk_q8x blocks */
static void quantize_q8x(const float *x, int64_t k, blk_q8x *y) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);   /* undo packs' lane interleave */
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t b = 0; b < k / 32; b++, x += 32) {
        __m256 v[4], amax = _mm256_setzero_ps();
        for (int u = 0; u < 4; u++) amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[u] = _mm256_loadu_ps(x + 8 * u)));
        const float max = hmax8(amax), d = max / 127.0f;
        const __m256 id = _mm256_set1_ps(max != 0.0f ? 127.0f / max : 0.0f);
        __m256i q[4];
        for (int u = 0; u < 4; u++) q[u] = _mm256_cvtps_epi32(_mm256_mul_ps(v[u], id));
        const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
        _mm256_storeu_si256((__m256i *)y[b].qs, _mm256_permutevar8x32_epi32(p, order));
        const __m256i s8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
        const int sum = _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1)));
        y[b].d = f16_round(d);
        y[b].s = f16_round(d * (float)sum);
    }
}

/* 32 signed int8 codes . 32 int8 qs -> 8 int32 (llama.cpp's mul_sum_i8_pairs) */
INLINE __m256i dot_i8x32(__m256i c, __m256i qs) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(qs, c)), _mm256_set1_epi16(1));
}
/* 32 unsigned codes (< 128) . 32 int8 qs -> 8 int32 */
INLINE __m256i dot_u8x32(__m256i c, __m256i qs) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(c, qs), _mm256_set1_epi16(1));
}

/* Q5 codes: low nibbles | 16 * high bit (0..31) */
INLINE __m256i q5_codes(const uint8_t *qs, const uint8_t *qh) { return _mm256_or_si256(nibbles_32(qs), bits_x16(ld_u32(qh))); }

/* one W row of nb blocks of `type` . one x row of nb blk_q8x; `body` sets the int32 lanes `sumi`
 * of block b (a blk_<type> *) and may add to the float `offs` */
#define DOT_Q8X(name, type, body)                                                             \
    INLINE float dot_##name##_q8x(const uint8_t *row, const blk_q8x *y, int64_t nb) {          \
        __m256 acc = _mm256_setzero_ps();                                                      \
        float offs = 0.0f;                                                                     \
        for (int64_t i = 0; i < nb; i++) {                                                     \
            const type *b = (const type *)(row + i * sizeof(type));                            \
            const __m256i qs = load32(y[i].qs);                                                \
            __m256i sumi;                                                                      \
            body;                                                                              \
            acc = _mm256_fmadd_ps(_mm256_set1_ps(ld_f16(b->d) * y[i].d), _mm256_cvtepi32_ps(sumi), acc); \
        }                                                                                      \
        return hsum256(acc) + offs;                                                            \
    }
DOT_Q8X(q4_0, blk_q4_0, sumi = dot_i8x32(_mm256_sub_epi8(nibbles_32(b->qs), mask8(8)), qs))
DOT_Q8X(q4_1, blk_q4_1, (sumi = dot_u8x32(nibbles_32(b->qs), qs), offs += ld_f16(b->m) * y[i].s))
DOT_Q8X(q5_0, blk_q5_0, sumi = dot_i8x32(_mm256_sub_epi8(q5_codes(b->qs, b->qh), mask8(16)), qs))
DOT_Q8X(q5_1, blk_q5_1, (sumi = dot_u8x32(q5_codes(b->qs, b->qh), qs), offs += ld_f16(b->m) * y[i].s))
DOT_Q8X(q8_0, blk_q8_0, sumi = dot_i8x32(load32(b->qs), qs))

typedef float (*q8x_dot_fn)(const uint8_t *, const blk_q8x *, int64_t);

/* y[r][i] = W row i . x row r (blk_q8x) for output rows [lo, hi) and every x row */
INLINE void q8x_rows(const gemv_job *job, const blk_q8x *xq, int64_t lo, int64_t hi, q8x_dot_fn dot) {
    const int64_t nb = job->k / 32;
    for (int64_t i = lo; i < hi; i++)
        for (int64_t r = 0; r < job->m; r++)
            job->y[r * job->ldy + i] = dot(job->w + i * job->row_bytes, xq + r * nb, nb);
}

#endif
