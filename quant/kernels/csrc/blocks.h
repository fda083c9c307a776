/* GGML block layouts and their scalar dequantizers `deq_<name>(block, out)`.
 *
 * Each dequantizer performs gguf-py's float32 operations in gguf-py's order (the build uses
 * -ffp-contract=off), so its output is bit-identical to quant.formats / gguf.quants.
 */
#ifndef GGR_BLOCKS_H
#define GGR_BLOCKS_H
#include "common.h"

/* ---- legacy 32-weight blocks ---------------------------------------------------------------
 * qs nibbles: byte j holds weight j (bits 0-3) and weight j + 16 (bits 4-7).
 * qh (5-bit types): little-endian u32, bit j = 5th bit (value 16) of weight j.
 * Every field is a byte array, so blocks may sit at any address.
 */

/* Q4_0 (18 B): d: f16 | qs: 16 B                 w = d * (q - 8) */
typedef struct { uint8_t d[2], qs[16]; } blk_q4_0;
_Static_assert(sizeof(blk_q4_0) == 18, "Q4_0 block");
INLINE void deq_q4_0(const uint8_t *restrict p, float *restrict w) {
    const blk_q4_0 *b = (const blk_q4_0 *)p;
    const float d = ld_f16(b->d);
    for (int j = 0; j < 16; j++) w[j] = d * (float)((b->qs[j] & 0x0F) - 8);
    for (int j = 0; j < 16; j++) w[j + 16] = d * (float)((b->qs[j] >> 4) - 8);
}

/* Q4_1 (20 B): d: f16 | m: f16 | qs: 16 B         w = d * q + m */
typedef struct { uint8_t d[2], m[2], qs[16]; } blk_q4_1;
_Static_assert(sizeof(blk_q4_1) == 20, "Q4_1 block");
INLINE void deq_q4_1(const uint8_t *restrict p, float *restrict w) {
    const blk_q4_1 *b = (const blk_q4_1 *)p;
    const float d = ld_f16(b->d), m = ld_f16(b->m);
    for (int j = 0; j < 16; j++) w[j] = d * (float)(b->qs[j] & 0x0F) + m;
    for (int j = 0; j < 16; j++) w[j + 16] = d * (float)(b->qs[j] >> 4) + m;
}

/* Q5_0 (22 B): d: f16 | qh: 4 B | qs: 16 B        w = d * (q - 16) */
typedef struct { uint8_t d[2], qh[4], qs[16]; } blk_q5_0;
_Static_assert(sizeof(blk_q5_0) == 22, "Q5_0 block");
INLINE void deq_q5_0(const uint8_t *restrict p, float *restrict w) {
    const blk_q5_0 *b = (const blk_q5_0 *)p;
    const float d = ld_f16(b->d);
    const uint32_t qh = ld_u32(b->qh);
    for (int j = 0; j < 16; j++) {
        const int lo = (b->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
        const int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        w[j] = d * (float)(lo - 16);
        w[j + 16] = d * (float)(hi - 16);
    }
}

/* Q5_1 (24 B): d: f16 | m: f16 | qh: 4 B | qs: 16 B   w = d * q + m */
typedef struct { uint8_t d[2], m[2], qh[4], qs[16]; } blk_q5_1;
_Static_assert(sizeof(blk_q5_1) == 24, "Q5_1 block");
INLINE void deq_q5_1(const uint8_t *restrict p, float *restrict w) {
    const blk_q5_1 *b = (const blk_q5_1 *)p;
    const float d = ld_f16(b->d), m = ld_f16(b->m);
    const uint32_t qh = ld_u32(b->qh);
    for (int j = 0; j < 16; j++) {
        const int lo = (b->qs[j] & 0x0F) | (int)(((qh >> j) & 1) << 4);
        const int hi = (b->qs[j] >> 4) | (int)(((qh >> (j + 16)) & 1) << 4);
        w[j] = d * (float)lo + m;
        w[j + 16] = d * (float)hi + m;
    }
}

/* Q8_0 (34 B): d: f16 | qs: 32 x int8             w = q * d */
typedef struct { uint8_t d[2]; int8_t qs[32]; } blk_q8_0;
_Static_assert(sizeof(blk_q8_0) == 34, "Q8_0 block");
INLINE void deq_q8_0(const uint8_t *restrict p, float *restrict w) {
    const blk_q8_0 *b = (const blk_q8_0 *)p;
    const float d = ld_f16(b->d);
    for (int j = 0; j < 32; j++) w[j] = (float)b->qs[j] * d;
}

/* ---- 256-weight super-blocks ---------------------------------------------------------------
 * 2-bit packing (Q2_K, Q3_K low bits): qs is two 32-byte halves h; bits [2s, 2s+2) of byte
 * 32h + l hold weight 128h + 32s + l. 16-weight sub-block of weight i: i / 16.
 */

/* Q2_K (84 B): scales: 16 B (low nibble: scale, high nibble: min, per 16 weights)
 *            | qs: 64 B (2-bit) | d: f16 | dmin: f16       w = (d*sc) * q - (dmin*m) */
typedef struct { uint8_t scales[16], qs[64], d[2], dmin[2]; } blk_q2_k;
_Static_assert(sizeof(blk_q2_k) == 84, "Q2_K block");
INLINE void deq_q2_k(const uint8_t *restrict p, float *restrict w) {
    const blk_q2_k *b = (const blk_q2_k *)p;
    const float d = ld_f16(b->d), dmin = ld_f16(b->dmin);
    for (int i = 0; i < 16; i++) {                       /* sub-block: 16 weights */
        const float dl = d * (float)(b->scales[i] & 0x0F), ml = dmin * (float)(b->scales[i] >> 4);
        const int h = i / 8, s = (i % 8) / 2, l0 = (i % 2) * 16;
        for (int l = l0; l < l0 + 16; l++)
            w[128 * h + 32 * s + l] = dl * (float)((b->qs[32 * h + l] >> (2 * s)) & 3) - ml;
    }
}

/* Q3_K (110 B): hmask: 32 B | qs: 64 B (low 2 bits) | scales: 12 B | d: f16
 *   hmask: bit (4h + s) of byte l = 3rd bit of weight 128h + 32s + l; clear means "minus 4".
 *   scales, 16 six-bit values stored with a bias of 32:
 *     byte b < 8  : bits 0-3 = low 4 bits of scale b, bits 4-7 = low 4 bits of scale b + 8
 *     byte 8 + c  : bits [2t, 2t+2) = high 2 bits of scale 4t + c          (c, t < 4)
 *                                                     w = (d * (sc - 32)) * q */
typedef struct { uint8_t hmask[32], qs[64], scales[12], d[2]; } blk_q3_k;
_Static_assert(sizeof(blk_q3_k) == 110, "Q3_K block");
INLINE void deq_q3_k(const uint8_t *restrict p, float *restrict w) {
    const blk_q3_k *b = (const blk_q3_k *)p;
    const float d = ld_f16(b->d);
    for (int i = 0; i < 16; i++) {
        const int low = i < 8 ? b->scales[i] & 0x0F : b->scales[i - 8] >> 4;
        const int high = (b->scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        const float dl = d * (float)((low | (high << 4)) - 32);
        const int h = i / 8, s = (i % 8) / 2, l0 = (i % 2) * 16;
        for (int l = l0; l < l0 + 16; l++) {
            const int q = ((b->qs[32 * h + l] >> (2 * s)) & 3) - (((b->hmask[l] >> (4 * h + s)) & 1) ? 0 : 4);
            w[128 * h + 32 * s + l] = dl * (float)q;
        }
    }
}

/* Q4_K / Q5_K scales: 12 B = 8 six-bit scales (sc) and 8 six-bit mins (m), 32 weights each
 *   byte  0-3: EEAAAAAA FFBBBBBB GGCCCCCC HHDDDDDD   sc 0-3 low 6 bits, sc 4-7 high 2 bits
 *   byte  4-7: eeaaaaaa ffbbbbbb ggcccccc hhdddddd   m  0-3 low 6 bits, m  4-7 high 2 bits
 *   byte 8-11: eeeeEEEE ffffFFFF ggggGGGG hhhhHHHH   sc 4-7 low 4 bits, m  4-7 low 4 bits */
INLINE void k_scale_min(const uint8_t *s, int j, float *sc, float *m) {
    if (j < 4) {
        *sc = (float)(s[j] & 63);
        *m = (float)(s[j + 4] & 63);
    } else {
        *sc = (float)((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4));
        *m = (float)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

/* Q4_K (144 B): d: f16 | dmin: f16 | scales: 12 B | qs: 128 B
 *   byte 32g + l: bits 0-3 = weight 64g + l, bits 4-7 = weight 64g + 32 + l   (g < 4, l < 32)
 *                                                     w = (d*sc) * q - (dmin*m) */
typedef struct { uint8_t d[2], dmin[2], scales[12], qs[128]; } blk_q4_k;
_Static_assert(sizeof(blk_q4_k) == 144, "Q4_K block");
INLINE void deq_q4_k(const uint8_t *restrict p, float *restrict w) {
    const blk_q4_k *b = (const blk_q4_k *)p;
    const float d = ld_f16(b->d), dmin = ld_f16(b->dmin);
    for (int g = 0; g < 4; g++) {
        float sc0, m0, sc1, m1;
        k_scale_min(b->scales, 2 * g, &sc0, &m0);
        k_scale_min(b->scales, 2 * g + 1, &sc1, &m1);
        const float d0 = d * sc0, n0 = dmin * m0, d1 = d * sc1, n1 = dmin * m1;
        const uint8_t *q = b->qs + 32 * g;
        for (int l = 0; l < 32; l++) {
            w[64 * g + l] = d0 * (float)(q[l] & 0x0F) - n0;
            w[64 * g + 32 + l] = d1 * (float)(q[l] >> 4) - n1;
        }
    }
}

/* Q5_K (176 B): d: f16 | dmin: f16 | scales: 12 B | qh: 32 B | qs: 128 B
 *   qs as Q4_K; bit 2g of qh[l] = 5th bit of weight 64g + l, bit 2g+1 of weight 64g + 32 + l
 *                                                     w = (d*sc) * q - (dmin*m) */
typedef struct { uint8_t d[2], dmin[2], scales[12], qh[32], qs[128]; } blk_q5_k;
_Static_assert(sizeof(blk_q5_k) == 176, "Q5_K block");
INLINE void deq_q5_k(const uint8_t *restrict p, float *restrict w) {
    const blk_q5_k *b = (const blk_q5_k *)p;
    const float d = ld_f16(b->d), dmin = ld_f16(b->dmin);
    for (int g = 0; g < 4; g++) {
        float sc0, m0, sc1, m1;
        k_scale_min(b->scales, 2 * g, &sc0, &m0);
        k_scale_min(b->scales, 2 * g + 1, &sc1, &m1);
        const float d0 = d * sc0, n0 = dmin * m0, d1 = d * sc1, n1 = dmin * m1;
        const uint8_t *q = b->qs + 32 * g;
        for (int l = 0; l < 32; l++) {
            const int lo = (q[l] & 0x0F) | (((b->qh[l] >> (2 * g)) & 1) << 4);
            const int hi = (q[l] >> 4) | (((b->qh[l] >> (2 * g + 1)) & 1) << 4);
            w[64 * g + l] = d0 * (float)lo - n0;
            w[64 * g + 32 + l] = d1 * (float)hi - n1;
        }
    }
}

/* Q6_K (210 B): ql: 128 B (low 4 bits) | qh: 64 B (high 2 bits) | scales: 16 x int8 | d: f16
 *   half h < 2 covers weights 128h .. 128h+127 with ql[64h ..], qh[32h ..]; for l < 32:
 *     weight 128h +      l: ql[64h + l]      bits 0-3,  qh[32h + l] bits 0-1
 *     weight 128h + 32 + l: ql[64h + 32 + l] bits 0-3,  qh[32h + l] bits 2-3
 *     weight 128h + 64 + l: ql[64h + l]      bits 4-7,  qh[32h + l] bits 4-5
 *     weight 128h + 96 + l: ql[64h + 32 + l] bits 4-7,  qh[32h + l] bits 6-7
 *   scale of weight i: scales[i / 16]                   w = (d*sc) * (q - 32) */
typedef struct { uint8_t ql[128], qh[64]; int8_t scales[16]; uint8_t d[2]; } blk_q6_k;
_Static_assert(sizeof(blk_q6_k) == 210, "Q6_K block");
INLINE void deq_q6_k(const uint8_t *restrict p, float *restrict w) {
    const blk_q6_k *b = (const blk_q6_k *)p;
    const float d = ld_f16(b->d);
    float dl[16];
    for (int i = 0; i < 16; i++) dl[i] = d * (float)b->scales[i];
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        float *o = w + 128 * h;
        const float *s = dl + 8 * h;
        for (int half = 0; half < 2; half++)                 /* l < 16, then l >= 16: one scale each */
            for (int l = 16 * half; l < 16 * half + 16; l++) {
                const int q0 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q1 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                o[l] = s[half] * (float)q0;
                o[l + 32] = s[2 + half] * (float)q1;
                o[l + 64] = s[4 + half] * (float)q2;
                o[l + 96] = s[6 + half] * (float)q3;
            }
    }
}

/* ---- non-linear 4-bit codes ----------------------------------------------------------------- */

/* the 16 values a 4-bit IQ4 code stands for (gguf-py's IQ4_NL/IQ4_XS kvalues) */
static const int8_t IQ4_VALUES[16] ALIGNED = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* IQ4_NL (18 B): d: f16 | qs: 16 B (4-bit codes, nibbles as Q4_0)   w = d * IQ4_VALUES[q] */
typedef struct { uint8_t d[2], qs[16]; } blk_iq4_nl;
_Static_assert(sizeof(blk_iq4_nl) == 18, "IQ4_NL block");
INLINE void deq_iq4_nl(const uint8_t *restrict p, float *restrict w) {
    const blk_iq4_nl *b = (const blk_iq4_nl *)p;
    const float d = ld_f16(b->d);
    for (int j = 0; j < 16; j++) w[j] = d * (float)IQ4_VALUES[b->qs[j] & 0x0F];
    for (int j = 0; j < 16; j++) w[j + 16] = d * (float)IQ4_VALUES[b->qs[j] >> 4];
}

/* IQ4_XS (136 B): d: f16 | scales_h: 2 B | scales_l: 4 B | qs: 128 B
 *   sub-block s < 8 (32 weights), six-bit scale with a bias of 32:
 *     low 4 bits  = nibble s % 2 of scales_l[s / 2] (low nibble first)
 *     high 2 bits = bits [2s, 2s+2) of scales_h read as a little-endian u16
 *   qs[16s .. 16s+15] hold the sub-block's codes, nibbles as IQ4_NL
 *                                                   w = (d * (sc - 32)) * IQ4_VALUES[q] */
typedef struct { uint8_t d[2], scales_h[2], scales_l[4], qs[128]; } blk_iq4_xs;
_Static_assert(sizeof(blk_iq4_xs) == 136, "IQ4_XS block");
INLINE int iq4_xs_iscale(const blk_iq4_xs *b, int s) {      /* sc - 32 of sub-block s */
    const int high = ((b->scales_h[0] | (b->scales_h[1] << 8)) >> (2 * s)) & 3;
    const int low = (b->scales_l[s / 2] >> (4 * (s % 2))) & 0x0F;
    return (low | (high << 4)) - 32;
}
INLINE float iq4_xs_scale(const blk_iq4_xs *b, float d, int s) { return d * (float)iq4_xs_iscale(b, s); }
INLINE void deq_iq4_xs(const uint8_t *restrict p, float *restrict w) {
    const blk_iq4_xs *b = (const blk_iq4_xs *)p;
    const float d = ld_f16(b->d);
    for (int s = 0; s < 8; s++) {
        const float dl = iq4_xs_scale(b, d, s);
        const uint8_t *q = b->qs + 16 * s;
        for (int j = 0; j < 16; j++) w[32 * s + j] = dl * (float)IQ4_VALUES[q[j] & 0x0F];
        for (int j = 0; j < 16; j++) w[32 * s + 16 + j] = dl * (float)IQ4_VALUES[q[j] >> 4];
    }
}

/* ---- float rows: "blocks" of 32 values (the row tail is handled by the float driver) ------- */

/* F16: 32 x f16 little-endian */
INLINE void deq_f16_n(const uint8_t *p, float *w, int n) {
    for (int j = 0; j < n; j++) w[j] = f16_to_f32((uint16_t)(p[2 * j] | (p[2 * j + 1] << 8)));
}
/* BF16: 32 x bf16 little-endian (the high half of an f32) */
INLINE void deq_bf16_n(const uint8_t *p, float *w, int n) {
    for (int j = 0; j < n; j++) w[j] = f32_from_bits((uint32_t)(p[2 * j] | (p[2 * j + 1] << 8)) << 16);
}
/* F32: 32 x f32 little-endian, copied */
INLINE void deq_f32_n(const uint8_t *p, float *w, int n) { memcpy(w, p, sizeof(float) * (size_t)n); }
INLINE void deq_f16(const uint8_t *restrict p, float *restrict w) { deq_f16_n(p, w, 32); }
INLINE void deq_f32(const uint8_t *restrict p, float *restrict w) { deq_f32_n(p, w, 32); }
INLINE void deq_bf16(const uint8_t *restrict p, float *restrict w) { deq_bf16_n(p, w, 32); }

#include "blocks_iq.h"     /* the codebook, ternary and MXFP4 formats */

#endif
