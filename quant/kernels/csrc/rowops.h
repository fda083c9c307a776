/* Row-wise float32 ops of a decode step: RMSNorm and rotary embedding of one position.
 *
 * ggr_rms_norm: y[r] = x[r] / sqrt(mean_i x[r][i]^2 + eps) * w (w may be NULL: no weight), rows
 *   of d floats at x + r * ldx, y contiguous (rows, d).
 * ggr_rope: y (rows, d) = x (rows, d) with the first n_rot dims of every row rotated by the
 *   angles whose cos / sin (n_rot / 2 each) are given (one position), the rest copied. Pairs
 *   are (2i, 2i+1) ("norm", GGML_ROPE_TYPE_NORMAL) or (i, i + n_rot/2) (neox):
 *       y_a = x_a cos_i - x_b sin_i,   y_b = x_a sin_i + x_b cos_i.
 */
#ifndef GGR_ROWOPS_H
#define GGR_ROWOPS_H
#include "common.h"

INLINE void rms_norm_row(const float *x, int64_t d, const float *w, float eps, float *y) {
    int64_t i = 0;
    float ss = 0.0f;
#ifdef __AVX2__
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= d; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    ss = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
#endif
    for (; i < d; i++) ss += x[i] * x[i];
    const float s = 1.0f / sqrtf(ss / (float)d + eps);
    for (i = 0; i < d; i++) y[i] = w ? x[i] * s * w[i] : x[i] * s;
}

INLINE void rope_row(const float *x, int64_t d, int64_t n_rot, const float *c, const float *s, int neox, float *y) {
    const int64_t half = n_rot / 2;
    for (int64_t i = 0; i < half; i++) {
        const int64_t a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        const float xa = x[a], xb = x[b];
        y[a] = xa * c[i] - xb * s[i];
        y[b] = xa * s[i] + xb * c[i];
    }
    for (int64_t i = n_rot; i < d; i++) y[i] = x[i];
}

/* `rows` rows of d floats (at x + r * ldx; y contiguous, may be x when ldx == d): RMSNorm / RoPE */
INLINE void rms_norm_rows(const float *x, int64_t rows, int64_t d, int64_t ldx, const float *w, float eps, float *y) {
    for (int64_t r = 0; r < rows; r++) rms_norm_row(x + r * ldx, d, w, eps, y + r * d);
}

INLINE void rope_rows(const float *x, int64_t rows, int64_t d, int64_t n_rot, const float *c, const float *s, int neox,
                      float *y) {
    for (int64_t r = 0; r < rows; r++) rope_row(x + r * d, d, n_rot, c, s, neox, y + r * d);
}

#endif
