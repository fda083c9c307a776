/* AVX2 rows of the codebook types and MXFP4 (included by fused_avx2.h; layouts in blocks_iq.h).
 *
 * Per 8 weights one grid entry (8 bytes; IQ3: two 4-byte entries) is widened to 8 floats and
 * its signs applied as a flip of the sign bit; unit_dot then multiplies 32 such weights by x
 * and by the group's scale (per 32 weights, or per 16 with TWO_SCALES). MXFP4 is IQ4_NL with
 * its own 16-value table and a power-of-two scale.
 */
#ifndef GGR_FUSED_IQ_AVX2_H
#define GGR_FUSED_IQ_AVX2_H

/* 8 unsigned grid bytes as floats, lane j negated where bit j of `signs` is set */
INLINE __m256 signed8(__m256 v, unsigned signs) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i neg = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)signs), bit), bit);
    return _mm256_xor_ps(v, _mm256_and_ps(_mm256_castsi256_ps(neg), _mm256_set1_ps(-0.0f)));
}
INLINE __m256 grid8(const uint8_t *g, unsigned signs) { return signed8(cvt8(u8x8_at(g)), signs); }
INLINE __m256 grid4x2(const uint8_t *g0, const uint8_t *g1, unsigned signs) {
    uint32_t a, b;
    memcpy(&a, g0, 4), memcpy(&b, g1, 4);
    return signed8(cvt8(_mm256_cvtepu8_epi32(_mm_set_epi32(0, 0, (int)b, (int)a))), signs);
}
/* IQ1: 8 int8 grid values (-1, 0, 1) + delta */
INLINE __m256 grid8_delta(const int8_t *g, float delta) {
    return _mm256_add_ps(cvt8(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)g))), _mm256_set1_ps(delta));
}

INLINE void row_iq2_xxs(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = ld_f16(p);
    for (int g = 0; g < 8; g++) {
        const uint8_t *q = p + 2 + 8 * g;
        const uint32_t meta = ld_u32(q + 4);
        __m256 f[4];
        for (int l = 0; l < 4; l++) f[l] = grid8(IQ2XXS_GRID[q[l]], KSIGNS[(meta >> (7 * l)) & 127]);
        const float db = iq2_scale(d, (int)(meta >> 28));
        unit_dot(A, X, pos + 32 * g, f, db, db, ONE_SCALE);
    }
}

INLINE void row_iq2_xs(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *scales = p + 66;
    for (int g = 0; g < 8; g++) {
        __m256 f[4];
        for (int l = 0; l < 4; l++) {
            const uint16_t q = ld_u16(qs + 2 * (4 * g + l));
            f[l] = grid8(IQ2XS_GRID[q & 511], KSIGNS[q >> 9]);
        }
        unit_dot(A, X, pos + 32 * g, f, iq2_scale(d, scales[g] & 0x0F), iq2_scale(d, scales[g] >> 4), TWO_SCALES);
    }
}

INLINE void row_iq2_s(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *signs = p + 34, *qh = p + 66, *scales = p + 74;
    for (int g = 0; g < 8; g++) {
        __m256 f[4];
        for (int l = 0; l < 4; l++) {
            const int i = 4 * g + l;
            f[l] = grid8(IQ2S_GRID[qs[i] | (((qh[g] >> (2 * l)) & 3) << 8)], signs[i]);
        }
        unit_dot(A, X, pos + 32 * g, f, iq2_scale(d, scales[g] & 0x0F), iq2_scale(d, scales[g] >> 4), TWO_SCALES);
    }
}

INLINE void row_iq3_xxs(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *meta = p + 66;
    for (int g = 0; g < 8; g++) {
        const uint32_t m = ld_u32(meta + 4 * g);
        __m256 f[4];
        for (int l = 0; l < 4; l++)
            f[l] = grid4x2(IQ3XXS_GRID[qs[8 * g + 2 * l]], IQ3XXS_GRID[qs[8 * g + 2 * l + 1]],
                           KSIGNS[(m >> (7 * l)) & 127]);
        const float db = d * (0.5f + (float)(m >> 28)) * 0.5f;
        unit_dot(A, X, pos + 32 * g, f, db, db, ONE_SCALE);
    }
}

INLINE void row_iq3_s(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *qh = p + 66, *signs = p + 74, *scales = p + 106;
    for (int g = 0; g < 8; g++) {
        __m256 f[4];
        for (int l = 0; l < 4; l++) {
            const int i = 8 * g + 2 * l;             /* grid entries i, i + 1: 8 weights */
            f[l] = grid4x2(IQ3S_GRID[qs[i] | (((qh[g] >> (2 * l)) & 1) << 8)],
                           IQ3S_GRID[qs[i + 1] | (((qh[g] >> (2 * l + 1)) & 1) << 8)], signs[4 * g + l]);
        }
        const float db = d * (float)(1 + 2 * ((scales[g / 2] >> (4 * (g % 2))) & 0x0F));
        unit_dot(A, X, pos + 32 * g, f, db, db, ONE_SCALE);
    }
}

INLINE void row_iq1_s(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *qh = p + 34;
    for (int g = 0; g < 8; g++) {
        const uint16_t h = ld_u16(qh + 2 * g);
        const float delta = f32_from_bits(f32_bits(IQ1_DELTA) ^ ((uint32_t)(h >> 15) << 31));  /* no branch */
        __m256 f[4];
        for (int l = 0; l < 4; l++) f[l] = grid8_delta(IQ1S_GRID[qs[4 * g + l] | (((h >> (3 * l)) & 7) << 8)], delta);
        const float dl = d * (float)(2 * ((h >> 12) & 7) + 1);
        unit_dot(A, X, pos + 32 * g, f, dl, dl, ONE_SCALE);
    }
}

INLINE void row_iq1_m(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const uint8_t *qs = p, *qh = p + 32, *sc = p + 48;
    uint16_t s16[4];
    const float d = iq1_m_scales(sc, s16);
    for (int g = 0; g < 8; g++) {                    /* 32 weights: groups of 8 i = 4g .. 4g+3 */
        __m256 f[4];
        for (int l = 0; l < 4; l++) {
            const int i = 4 * g + l, nib = (qh[i / 2] >> (4 * (i % 2))) & 0x0F;
            const float delta = f32_from_bits(f32_bits(IQ1_DELTA) ^ ((uint32_t)(nib & 8) << 28));
            f[l] = grid8_delta(IQ1S_GRID[qs[i] | ((nib & 7) << 8)], delta);
        }
        const float d0 = d * (float)(2 * ((s16[g / 2] >> (6 * (g % 2))) & 7) + 1);
        const float d1 = d * (float)(2 * ((s16[g / 2] >> (6 * (g % 2) + 3)) & 7) + 1);
        unit_dot(A, X, pos + 32 * g, f, d0, d1, TWO_SCALES);
    }
}

INLINE void row_mxfp4(accs *A, const xrows *X, int64_t pos, const uint8_t *p) {
    const float d = e8m0_half(p[0]);
    const __m256i table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)MXFP4_VALUES));
    __m256 f[4];
    codes_i8(_mm256_shuffle_epi8(table, nibbles_32(p + 1)), f);
    unit_dot(A, X, pos, f, d, d, ONE_SCALE);
}

#endif
