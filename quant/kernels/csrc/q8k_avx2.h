/* Integer decode rows for the K-quants (Q2_K-Q6_K) and IQ4_XS against x rounded to Q8_K (AVX2,
 * VNNI where the build has it), as llama.cpp pairs them.
 *
 * x is quantized once per call, per row and per 256 values, to a Q8_K block (quantize_q8k):
 *     d = max / -127 (max: the value of largest |x|; 0 for an all-zero block),
 *     qs[j] = min(127, round_half_even(x[j] * (-127 / max))),  bsums[g] = sum of qs[16g .. 16g+15]
 * so x ~ d * qs. A weight block then meets it in integers: _mm256_maddubs_epi16 multiplies the
 * unsigned weight codes (0..15 / 0..63) by the signed int8 qs and adds pairs into int16 (at most
 * 2 * 63 * 127, no saturation), _mm256_madd_epi16 applies the integer sub-block scale into
 * int32, and one float multiply per block by d_w * d_x finishes it. The offsets go through bsums:
 *     Q4_K: w = (d sc) q - (dmin m)   ->  d d_x sum sc_s (q.qs)_s  -  dmin d_x sum m_s bsums32_s
 *     Q6_K: w = (d sc) (q - 32)       ->  d d_x (sum sc_g (q.qs)_g  -  32 sum sc_g bsums_g)
 * and likewise Q5_K (Q4_K's), Q2_K, Q3_K and IQ4_XS (at each row). The integer sums are exact, so the result equals x' @ W.T in float64 (x' = d * qs, the
 * dequantized Q8_K x) up to the float rounding of a few products per block.
 */
#ifndef GGR_Q8K_AVX2_H
#define GGR_Q8K_AVX2_H
#include "fused_avx2.h"                 /* load32, mask8, hsum256, q6_k_codes */

/* The two integer multiply-adds of the rows, on VNNI where the build has it (AVX512-VNNI with
 * VL, or AVX-VNNI): the same exact int32 sums either way, in fewer instructions.
 *   dot_u8s8(a, b): 8 int32 lanes, lane i = sum of a[4i+t] * b[4i+t] (a unsigned, b signed;
 *                   without VNNI via maddubs, whose int16 pair sums must not saturate: every
 *                   caller keeps |a b| pairs <= 2 * 128 * 127)
 *   madd_acc(acc, a, b): acc + pairwise int16 products summed into int32 lanes */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define GGR_VNNI "AVX512-VNNI"
INLINE __m256i dot_u8s8(__m256i a, __m256i b) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b); }
INLINE __m256i madd_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
#elif defined(__AVXVNNI__)
#define GGR_VNNI "AVX-VNNI"
INLINE __m256i dot_u8s8(__m256i a, __m256i b) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), a, b); }
INLINE __m256i madd_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_avx_epi32(acc, a, b); }
#else
INLINE __m256i dot_u8s8(__m256i a, __m256i b) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1));
}
INLINE __m256i madd_acc(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
#endif

INLINE int32_t hsum_i32(__m256i v) {
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    return _mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1)));
}

/* horizontal max / min of 8 floats */
INLINE float hmax8(__m256 v) {
    v = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
    v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
    return _mm256_cvtss_f32(_mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0xB1)));
}
INLINE float hmin8(__m256 v) {
    v = _mm256_min_ps(v, _mm256_permute2f128_ps(v, v, 1));
    v = _mm256_min_ps(v, _mm256_shuffle_ps(v, v, 0x4E));
    return _mm256_cvtss_f32(_mm256_min_ps(v, _mm256_shuffle_ps(v, v, 0xB1)));
}

/* The value of largest |x| among 256, the first one on a tie of magnitudes (llama.cpp's choice) */
INLINE float signed_max(const float *x) {
    __m256 hi = _mm256_loadu_ps(x), lo = hi;
    for (int j = 8; j < QK_K; j += 8) {
        hi = _mm256_max_ps(hi, _mm256_loadu_ps(x + j));
        lo = _mm256_min_ps(lo, _mm256_loadu_ps(x + j));
    }
    const float top = hmax8(hi), bottom = -hmin8(lo);
    if (top != bottom) return top > bottom ? top : -bottom;
    for (int j = 0; j < QK_K; j++)                        /* +a and -a both there (or all 0) */
        if (fabsf(x[j]) == top) return x[j];
    return 0.0f;
}

/* k values of x (k % 256 == 0) -> k / 256 Q8_K blocks. The products iscale * x and their
 * rounding (cvtps: to nearest, ties to even) are llama.cpp's; packs saturates at +-127 / -128,
 * and |iscale * x| <= 127 rounds into [-127, 127], so that is its min(127, v). */
static void quantize_q8k(const float *x, int64_t k, blk_q8k *y) {
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);   /* undo packs' lane interleave */
    for (int64_t b = 0; b < k / QK_K; b++, x += QK_K) {
        blk_q8k *o = &y[b];
        const float max = signed_max(x);
        if (max == 0.0f) {
            memset(o, 0, sizeof(*o));
            continue;
        }
        const float iscale = -127.0f / max;
        const __m256 vs = _mm256_set1_ps(iscale);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i q[4];
            for (int v = 0; v < 4; v++) q[v] = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + j + 8 * v)));
            const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(o->qs + j), _mm256_permutevar8x32_epi32(p, order));
        }
        for (int g = 0; g < QK_K / 16; g++) {             /* 16 int8 -> int16, pairwise sums, total */
            const __m256i w = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(o->qs + 16 * g))),
                                                _mm256_set1_epi16(1));
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
            o->bsums[g] = (int16_t)_mm_cvtsi128_si32(_mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1)));
        }
        o->d = 1.0f / iscale;
    }
}

/* Q4_K scales/mins (layout in blocks.h) as 16 int16: sc 0-7, then m 0-7 */
INLINE __m256i q4k_scales_mins(const uint8_t *s) {
    const uint32_t s0 = ld_u32(s), s1 = ld_u32(s + 4), s2 = ld_u32(s + 8);
    const uint32_t lo6 = 0x3F3F3F3F, lo4 = 0x0F0F0F0F, lo2 = 0x03030303;
    return _mm256_cvtepu8_epi16(_mm_setr_epi32((int)(s0 & lo6), (int)((s2 & lo4) | (((s0 >> 6) & lo2) << 4)),
                                               (int)(s1 & lo6), (int)(((s2 >> 4) & lo4) | (((s1 >> 6) & lo2) << 4))));
}

/* int16 lane `j` of an 8-lane int16 vector broadcast to 16 int16 lanes (a byte shuffle per half) */
#define I16_LANE(v, j) _mm256_shuffle_epi8((v), _mm256_set1_epi16((short)(((2 * (j) + 1) << 8) | (2 * (j)))))

/* one W row of nb Q4_K (`qh` 0) or Q5_K (`qh` 1: the 5th bit of each code from qh, as 16;
 * maddubs pairs <= 2 * 31 * 127) blocks . one x row of nb Q8_K blocks. The two layouts share
 * d, dmin and scales; Q5_K has qh (32 B) before qs. `qh` is a compile-time constant. */
INLINE float dot_q45_k_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb, int qh) {
    const __m256i low4 = mask8(0x0F);
    const int64_t ts = qh ? (int64_t)sizeof(blk_q5_k) : (int64_t)sizeof(blk_q4_k);
    __m256 acc = _mm256_setzero_ps();
    __m128 acc_m = _mm_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *p = row + i * ts;                  /* d, dmin, scales: at the same offsets */
        const blk_q4_k *b = (const blk_q4_k *)p;
        const uint8_t *qs = qh ? ((const blk_q5_k *)p)->qs : b->qs;
        const __m256i high = qh ? load32(((const blk_q5_k *)p)->qh) : _mm256_setzero_si256();
        const __m256i sm = q4k_scales_mins(b->scales);
        /* mins: m_s * (sum of qs over sub-block s) = m_s * (bsums[2s] + bsums[2s+1]) */
        const __m256i bs = load32(y[i].bsums);
        const __m128i bs32 = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1));
        const __m128i mins = _mm_madd_epi16(_mm256_extracti128_si256(sm, 1), bs32);
        const float dx = y[i].d;
        acc_m = _mm_fmadd_ps(_mm_set1_ps(dx * ld_f16(b->dmin)), _mm_cvtepi32_ps(mins), acc_m);
        const __m256i sc = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sm));
        __m256i sumi = _mm256_setzero_si256();
        for (int g = 0; g < 4; g++) {                     /* sub-blocks 2g (low nibbles), 2g+1 (high) */
            const __m256i q = load32(qs + 32 * g);
            __m256i c0 = _mm256_and_si256(q, low4), c1 = _mm256_and_si256(_mm256_srli_epi16(q, 4), low4);
            if (qh) {
                c0 = _mm256_or_si256(c0, _mm256_slli_epi16(bits_at(high, 2 * g, 1), 4));
                c1 = _mm256_or_si256(c1, _mm256_slli_epi16(bits_at(high, 2 * g + 1, 1), 4));
            }
            sumi = madd_acc(sumi, I16_LANE(sc, 2 * g), _mm256_maddubs_epi16(c0, load32(y[i].qs + 64 * g)));
            sumi = madd_acc(sumi, I16_LANE(sc, 2 * g + 1), _mm256_maddubs_epi16(c1, load32(y[i].qs + 64 * g + 32)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(dx * ld_f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    acc_m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    return hsum256(acc) - _mm_cvtss_f32(_mm_add_ss(acc_m, _mm_movehdup_ps(acc_m)));
}
INLINE float dot_q4_k_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb) { return dot_q45_k_q8k(row, y, nb, 0); }
INLINE float dot_q5_k_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb) { return dot_q45_k_q8k(row, y, nb, 1); }

/* int16 lanes 0-7 = sc8[g], lanes 8-15 = sc8[g + 1] (int8 scales widened) */
INLINE __m256i pair_scales(__m128i sc8, int g) {
    return _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, _mm_set_epi64x(0x0101010101010101LL * (g + 1),
                                                                     0x0101010101010101LL * g)));
}

/* one W row of nb Q6_K blocks . one x row of nb Q8_K blocks */
INLINE float dot_q6_k_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const blk_q6_k *b = (const blk_q6_k *)(row + i * sizeof(blk_q6_k));
        const __m128i sc8 = _mm_loadu_si128((const __m128i *)b->scales);
        const __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
        /* 32 * sum_g sc_g * bsums_g: the -32 of every code */
        const __m256i offs = _mm256_slli_epi32(_mm256_madd_epi16(sc16, load32(y[i].bsums)), 5);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q[4];
            q6_k_codes(b, h, q);
            for (int u = 0; u < 4; u++) {                 /* weights 128h + 32u ..: scales 8h+2u, 8h+2u+1 */
                const int g = 8 * h + 2 * u;
                const __m256i p = _mm256_maddubs_epi16(q[u], load32(y[i].qs + 128 * h + 32 * u));
                sumi = madd_acc(sumi, pair_scales(sc8, g), p);   /* weights 0-15: scale g, 16-31: g + 1 */
            }
        }
        sumi = _mm256_sub_epi32(sumi, offs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * ld_f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc);
}

/* one W row of nb IQ4_XS blocks . one x row of nb Q8_K blocks: per 32 weights the int8 values
 * . qs (signed x signed, as q80_avx2.h's dot_s8s8) times the sub-block's integer scale sc - 32;
 * a lane sums at most 8 x 4 products of 127 x 127 times 32 < 2^24, exact as a float */
INLINE float dot_iq4_xs_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const blk_iq4_xs *b = (const blk_iq4_xs *)(row + i * sizeof(blk_iq4_xs));
        __m256i sumi = _mm256_setzero_si256();
        for (int s = 0; s < 8; s++) {
            const int ls = iq4_xs_iscale(b, s);
            const __m256i v = iq4_codes(b->qs + 16 * s), x = load32(y[i].qs + 32 * s);
            const __m256i dot = dot_u8s8(_mm256_sign_epi8(v, v), _mm256_sign_epi8(x, v));
            sumi = _mm256_add_epi32(sumi, _mm256_mullo_epi32(dot, _mm256_set1_epi32(ls)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * ld_f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc);
}

/* one W row of nb Q2_K blocks . one x row of nb Q8_K blocks (16-weight groups g):
 *     w = (d sc_g) q - (dmin m_g)  ->  d d_x sum_g sc_g (q.qs)_g  -  dmin d_x sum_g m_g bsums_g */
INLINE float dot_q2_k_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    float acc_m = 0.0f;
    for (int64_t i = 0; i < nb; i++) {
        const blk_q2_k *b = (const blk_q2_k *)(row + i * sizeof(blk_q2_k));
        const __m128i raw = _mm_loadu_si128((const __m128i *)b->scales);
        const __m128i sc = _mm_and_si128(raw, _mm_set1_epi8(0x0F)), mn = _mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0x0F));
        const int32_t mins = hsum_i32(_mm256_madd_epi16(_mm256_cvtepu8_epi16(mn), load32(y[i].bsums)));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qs = load32(b->qs + 32 * h);
            for (int s = 0; s < 4; s++) {             /* weights 128h + 32s ..: groups 8h+2s, 8h+2s+1 */
                const __m256i p = _mm256_maddubs_epi16(bits_at(qs, 2 * s, 3), load32(y[i].qs + 128 * h + 32 * s));
                sumi = madd_acc(sumi, pair_scales(sc, 8 * h + 2 * s), p);
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * ld_f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
        acc_m += y[i].d * ld_f16(b->dmin) * (float)mins;
    }
    return hsum256(acc) - acc_m;
}

/* one W row of nb Q3_K blocks . one x row of nb Q8_K blocks: with u = q + 4 in 0..7 (the low
 * 2 bits, plus 4 where the hmask bit is set),
 *     w = (d sc'_g) q  ->  d d_x (sum_g sc'_g (u.qs)_g  -  4 sum_g sc'_g bsums_g),  sc' = sc - 32 */
INLINE float dot_q3_k_q8k(const uint8_t *row, const blk_q8k *y, int64_t nb) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++) {
        const blk_q3_k *b = (const blk_q3_k *)(row + i * sizeof(blk_q3_k));
        const __m128i sc = q3k_scales(b->scales);
        const __m256i offs = _mm256_slli_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(sc), load32(y[i].bsums)), 2);
        const __m256i hmask = load32(b->hmask);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i qs = load32(b->qs + 32 * h);
            for (int s = 0; s < 4; s++) {
                const __m256i u = _mm256_or_si256(bits_at(qs, 2 * s, 3), _mm256_slli_epi16(bits_at(hmask, 4 * h + s, 1), 2));
                const __m256i p = _mm256_maddubs_epi16(u, load32(y[i].qs + 128 * h + 32 * s));
                sumi = madd_acc(sumi, pair_scales(sc, 8 * h + 2 * s), p);
            }
        }
        sumi = _mm256_sub_epi32(sumi, offs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * ld_f16(b->d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum256(acc);
}

typedef float (*q8k_dot_fn)(const uint8_t *, const blk_q8k *, int64_t);

/* y[r][i] = W row i . x row r (Q8_K) for output rows [lo, hi) and every x row */
INLINE void q8k_rows(const gemv_job *job, const blk_q8k *xq, int64_t lo, int64_t hi, q8k_dot_fn dot) {
    const int64_t nb = job->k / QK_K;
    for (int64_t i = lo; i < hi; i++)
        for (int64_t r = 0; r < job->m; r++)
            job->y[r * job->ldy + i] = dot(job->w + i * job->row_bytes, xq + r * nb, nb);
}

#endif
