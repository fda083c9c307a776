/* Codebook (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S), ternary (TQ1_0, TQ2_0) and
 * MXFP4 blocks: scalar dequantizers `deq_<name>(block, out)`, layouts as in quant/formats.py
 * and quant/formats_iq.py, gguf-py's float32 operations in gguf-py's order (bit-identical).
 *
 * The grids and the IQ2 sign table are not in this source: Python hands them over once after
 * loading (ggr_set_grids, from quant/data/iq_grids.npz); until then ggr_grids_ready() is 0
 * and the Python side offers none of the seven codebook types natively.
 */
#ifndef GGR_BLOCKS_IQ_H
#define GGR_BLOCKS_IQ_H
#include "common.h"

static uint8_t IQ2XXS_GRID[256][8], IQ2XS_GRID[512][8], IQ2S_GRID[1024][8];
static uint8_t IQ3XXS_GRID[256][4], IQ3S_GRID[512][4];
static int8_t IQ1S_GRID[2048][8];
static uint8_t KSIGNS[128];
static int GRIDS_READY = 0;

int ggr_set_grids(const uint8_t *iq2xxs, const uint8_t *iq2xs, const uint8_t *iq2s, const uint8_t *iq3xxs,
                  const uint8_t *iq3s, const int8_t *iq1s, const uint8_t *ksigns) {
    memcpy(IQ2XXS_GRID, iq2xxs, sizeof IQ2XXS_GRID);
    memcpy(IQ2XS_GRID, iq2xs, sizeof IQ2XS_GRID);
    memcpy(IQ2S_GRID, iq2s, sizeof IQ2S_GRID);
    memcpy(IQ3XXS_GRID, iq3xxs, sizeof IQ3XXS_GRID);
    memcpy(IQ3S_GRID, iq3s, sizeof IQ3S_GRID);
    memcpy(IQ1S_GRID, iq1s, sizeof IQ1S_GRID);
    memcpy(KSIGNS, ksigns, sizeof KSIGNS);
    GRIDS_READY = 1;
    return 0;
}
int ggr_grids_ready(void) { return GRIDS_READY; }

INLINE uint16_t ld_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* the IQ2 scale of nibble s: (d * (0.5 + s)) * 0.25, in gguf-py's order */
INLINE float iq2_scale(float d, int s) { return d * (0.5f + (float)s) * 0.25f; }

/* IQ1_M: the four u16 scale words, and d from their top nibbles (low nibble first) */
INLINE float iq1_m_scales(const uint8_t *sc, uint16_t s16[4]) {
    uint16_t dbits = 0;
    for (int j = 0; j < 4; j++) s16[j] = ld_u16(sc + 2 * j), dbits |= (uint16_t)((s16[j] >> 12) << (4 * j));
    return f16_to_f32(dbits);
}

/* MXFP4's E8M0 scale e: 2^(e - 128) (ggml_e8m0_to_fp32_half; e < 2 subnormal) */
INLINE float e8m0_half(uint8_t e) { return f32_from_bits(e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23); }

/* 8 weights db * grid[j], negated where bit j of `signs` is set ((db*g)*-1 is exact negation,
 * done as a flip of the sign bit: no branch on random bits) */
INLINE void put8(float *w, float db, const uint8_t *g, unsigned signs) {
    for (int j = 0; j < 8; j++)
        w[j] = f32_from_bits(f32_bits(db * (float)g[j]) ^ (((signs >> j) & 1u) << 31));
}

/* IQ2_XXS (66 B): d: f16 | per 32 weights a u32 of 4 iq2xxs indices and a u32 of four 7-bit
 * ksigns indices (bits 0-27) and a scale s (bits 28-31)   w = (d * (0.5 + s) * 0.25) * g * sign */
INLINE void deq_iq2_xxs(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p);
    for (int g = 0; g < 8; g++, w += 32) {
        const uint8_t *q = p + 2 + 8 * g;
        const uint32_t meta = ld_u32(q + 4);
        const float db = iq2_scale(d, (int)(meta >> 28));
        for (int l = 0; l < 4; l++) put8(w + 8 * l, db, IQ2XXS_GRID[q[l]], KSIGNS[(meta >> (7 * l)) & 127]);
    }
}

/* IQ2_XS (74 B): d: f16 | qs: 32 x u16 (bits 0-8 iq2xs index, 9-15 ksigns index)
 * | scales: 8 B (a nibble per 16 weights, low first)      w = (d * (0.5 + s) * 0.25) * g * sign */
INLINE void deq_iq2_xs(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *scales = p + 66;
    for (int i = 0; i < 32; i++) {
        const float db = iq2_scale(d, (scales[i / 4] >> (4 * ((i / 2) % 2))) & 0x0F);
        const uint16_t q = ld_u16(qs + 2 * i);
        put8(w + 8 * i, db, IQ2XS_GRID[q & 511], KSIGNS[q >> 9]);
    }
}

/* IQ2_S (82 B): d: f16 | qs: 32 B (index bits 0-7) | signs: 32 B | qh: 8 B (index bits 8-9, 4
 * crumbs per byte) | scales: 8 B (nibbles per 16 weights) w = (d * (0.5 + s) * 0.25) * g * sign */
INLINE void deq_iq2_s(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *signs = p + 34, *qh = p + 66, *scales = p + 74;
    for (int i = 0; i < 32; i++) {
        const float db = iq2_scale(d, (scales[i / 4] >> (4 * ((i / 2) % 2))) & 0x0F);
        const int idx = qs[i] | (((qh[i / 4] >> (2 * (i % 4))) & 3) << 8);
        put8(w + 8 * i, db, IQ2S_GRID[idx], signs[i]);
    }
}

/* 4 weights db * grid[j], negated where bit j of `signs` is set */
INLINE void put4(float *w, float db, const uint8_t *g, unsigned signs) {
    for (int j = 0; j < 4; j++)
        w[j] = f32_from_bits(f32_bits(db * (float)g[j]) ^ (((signs >> j) & 1u) << 31));
}

/* IQ3_XXS (98 B): d: f16 | qs: 64 B (iq3xxs indices, 4 values each) | per 32 weights a u32:
 * four 7-bit ksigns indices (bits 0-27), scale s (28-31)  w = (d * (0.5 + s) * 0.5) * g * sign */
INLINE void deq_iq3_xxs(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *meta = p + 66;
    for (int g = 0; g < 8; g++, w += 32) {
        const uint32_t m = ld_u32(meta + 4 * g);
        const float db = d * (0.5f + (float)(m >> 28)) * 0.5f;
        for (int l = 0; l < 4; l++) {
            const unsigned sg = KSIGNS[(m >> (7 * l)) & 127];
            put4(w + 8 * l, db, IQ3XXS_GRID[qs[8 * g + 2 * l]], sg);
            put4(w + 8 * l + 4, db, IQ3XXS_GRID[qs[8 * g + 2 * l + 1]], sg >> 4);
        }
    }
}

/* IQ3_S (110 B): d: f16 | qs: 64 B (index bits 0-7) | qh: 8 B (index bit 8) | signs: 32 B
 * | scales: 4 B (nibbles per 32 weights)                  w = (d * (1 + 2s)) * g * sign */
INLINE void deq_iq3_s(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *qh = p + 66, *signs = p + 74, *scales = p + 106;
    for (int g = 0; g < 8; g++, w += 32) {
        const int s = (scales[g / 2] >> (4 * (g % 2))) & 0x0F;
        const float db = d * (float)(1 + 2 * s);
        for (int l = 0; l < 8; l++) {
            const int i = 8 * g + l;
            const int idx = qs[i] | (((qh[i / 8] >> (i % 8)) & 1) << 8);
            put4(w + 4 * l, db, IQ3S_GRID[idx], signs[i / 2] >> (4 * (i % 2)));
        }
    }
}

#define IQ1_DELTA 0.125f

/* IQ1_S (50 B): d: f16 | qs: 32 B (index bits 0-7) | qh: 8 x u16 per 32 weights (bits 3l..3l+2
 * index bits 8-10 of group l, 12-14 scale s, 15 delta sign)   w = (d * (2s + 1)) * (g + delta) */
INLINE void deq_iq1_s(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p);
    const uint8_t *qs = p + 2, *qh = p + 34;
    for (int g = 0; g < 8; g++, w += 32) {
        const uint16_t h = ld_u16(qh + 2 * g);
        const float dl = d * (float)(2 * ((h >> 12) & 7) + 1);
        const float delta = h & 0x8000 ? -IQ1_DELTA : IQ1_DELTA;
        for (int l = 0; l < 4; l++) {
            const int8_t *gr = IQ1S_GRID[qs[4 * g + l] | (((h >> (3 * l)) & 7) << 8)];
            for (int j = 0; j < 8; j++) w[8 * l + j] = dl * ((float)gr[j] + delta);
        }
    }
}

/* IQ1_M (56 B): qs: 32 B (index bits 0-7) | qh: 16 B (per 8 weights a nibble: bits 0-2 index
 * bits 8-10, bit 3 delta sign) | scales: 4 x u16 (bits 3j..3j+2 scale of 16 weights; bits 12-15
 * of the four: the f16 d, low nibble first)               w = (d * (2s + 1)) * (g + delta) */
INLINE void deq_iq1_m(const uint8_t *restrict p, float *restrict w) {
    const uint8_t *qs = p, *qh = p + 32, *sc = p + 48;
    uint16_t s16[4];
    const float d = iq1_m_scales(sc, s16);
    for (int i = 0; i < 32; i++) {                           /* group of 8 weights */
        const int s = (s16[i / 8] >> (3 * ((i / 2) % 4))) & 7;
        const float dl = d * (float)(2 * s + 1);
        const int nib = (qh[i / 2] >> (4 * (i % 2))) & 0x0F;
        const float delta = nib & 8 ? -IQ1_DELTA : IQ1_DELTA;
        const int8_t *gr = IQ1S_GRID[qs[i] | ((nib & 7) << 8)];
        for (int j = 0; j < 8; j++) w[8 * i + j] = dl * ((float)gr[j] + delta);
    }
}

/* TQ1_0 (54 B): qs: 48 B | qh: 4 B | d: f16; base-3 digit k of byte q: ((q * 3^k mod 256) * 3) >> 8;
 * qs[0:32] digit k -> weight 32k + j, qs[32:48] -> 160 + 16k + j, qh -> 240 + 4k + j
 *                                                         w = d * (t - 1) */
INLINE void deq_tq1_0(const uint8_t *restrict p, float *restrict w) {
    static const uint8_t POW3[5] = {1, 3, 9, 27, 81};
    const uint8_t *qs = p, *qh = p + 48;
    const float d = ld_f16(p + 52);
    for (int k = 0; k < 5; k++) {
        for (int j = 0; j < 32; j++) w[32 * k + j] = d * (float)((((uint8_t)(qs[j] * POW3[k]) * 3) >> 8) - 1);
        for (int j = 0; j < 16; j++) w[160 + 16 * k + j] = d * (float)((((uint8_t)(qs[32 + j] * POW3[k]) * 3) >> 8) - 1);
    }
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++) w[240 + 4 * k + j] = d * (float)((((uint8_t)(qh[j] * POW3[k]) * 3) >> 8) - 1);
}

/* TQ2_0 (66 B): qs: 64 B (2-bit, runs of 32: weight 128h + 32r + j in bits 2r of byte 32h + j)
 * | d: f16                                                w = d * (q - 1) */
INLINE void deq_tq2_0(const uint8_t *restrict p, float *restrict w) {
    const float d = ld_f16(p + 64);
    for (int h = 0; h < 2; h++)
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 32; j++) w[128 * h + 32 * r + j] = d * (float)(((p[32 * h + j] >> (2 * r)) & 3) - 1);
}

/* MXFP4 (17 B, 32 weights): e: E8M0 | qs: 16 B (E2M1 codes, nibbles as Q4_0)
 *                                                         w = 2^(e-128) * MXFP4_VALUES[q] */
static const int8_t MXFP4_VALUES[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
INLINE void deq_mxfp4(const uint8_t *restrict p, float *restrict w) {
    const float d = e8m0_half(p[0]);
    for (int j = 0; j < 16; j++) {
        w[j] = d * (float)MXFP4_VALUES[p[1 + j] & 0x0F];
        w[j + 16] = d * (float)MXFP4_VALUES[p[1 + j] >> 4];
    }
}

#endif
