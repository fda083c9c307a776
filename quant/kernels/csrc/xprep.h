/* What one gemv call computes from x once, for every W row: the x sums of the fused float
 * rows and the Q8_K blocks of the integer rows (x_sums, common.h). Included by ggr.c after
 * the row headers (quantize_q8k: q8k_avx2.h, only with AVX2). */
#ifndef GGR_XPREP_H
#define GGR_XPREP_H
#include "common.h"

/* x sums per 16 and per 32 weights (the offset terms of the fused rows); NULLs if no memory */
static x_sums sums_of(const float *x, int64_t m, int64_t k) {
    const int64_t g16 = k / 16, g32 = k / 32;
    x_sums xs = {malloc(sizeof(float) * (size_t)(m * g16 + 1)), malloc(sizeof(float) * (size_t)(m * g32 + 1)), NULL, NULL};
    if (!xs.s16 || !xs.s32) return xs;
    for (int64_t r = 0; r < m; r++)
        for (int64_t g = 0; g < g16; g++) {
            float s = 0.0f;
            for (int j = 0; j < 16; j++) s += x[r * k + 16 * g + j];
            xs.s16[r * g16 + g] = s;
            if (g % 2) xs.s32[r * g32 + g / 2] = xs.s16[r * g16 + g - 1] + s;
        }
    return xs;
}

/* What one call's row kernels need from x: the sums (if `floats`: some matrix has float rows),
 * Q8_K blocks (if `q8k`: some has Q8_K integer rows) and Q8_0 blocks (`q80`, likewise). 0 when
 * out of memory. */
static int prepare_x(x_sums *xs, const float *x, int64_t m, int64_t k, int floats, int q8k, int q80) {
    *xs = (x_sums){NULL, NULL, NULL, NULL};
    if (floats && (*xs = sums_of(x, m, k), !xs->s16 || !xs->s32)) return 0;
#ifdef GGR_AVX2
    if (q8k && !(xs->q8 = malloc(sizeof(blk_q8k) * (size_t)(m * (k / QK_K)) + 1))) return 0;
    for (int64_t r = 0; q8k && r < m; r++) quantize_q8k(x + r * k, k, xs->q8 + r * (k / QK_K));
    if (q80 && !(xs->q80 = malloc(sizeof(blk_q8x) * (size_t)(m * (k / 32)) + 1))) return 0;
    for (int64_t r = 0; q80 && r < m; r++) quantize_q80(x + r * k, k, xs->q80 + r * (k / 32));
#else
    (void)q8k, (void)q80;
#endif
    return 1;
}

#endif
