/* Attention of one new query position over a key/value cache, and the vector exp it needs.
 *
 * ggr_attend: out[h] = sum_j p_hj V[g][j] with p_h = softmax_j(c(scale * q_h . K[g][j])),
 * g = h / (H / Hkv) (grouped-query attention), c = cap * tanh(. / cap) when cap > 0 (Gemma 2)
 * else identity. K / V rows are float32 or IEEE half (kv_type 0 / 1) at element offsets
 * g * head_stride + j * row_stride from their base, so a slice of a preallocated cache needs
 * no copy. Work is split into tasks (kv head g, chunk c of the S positions); each task keeps
 * the running softmax state of its chunk (max m, sum l, unnormalised o) for every query head
 * of g, and the chunks are merged exactly as flash-decoding does:
 *     M = max_c m_c,  out = sum_c e^(m_c - M) o_c / sum_c e^(m_c - M) l_c.
 */
#ifndef GGR_ATTEND_H
#define GGR_ATTEND_H
#include "common.h"

/* ---- exp: Cephes-style range reduction + degree-6 polynomial, about 1 ulp, any float ---- */

#ifdef __AVX2__
INLINE __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-103.972084f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);          /* x - n ln2, in two */
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);              /* parts (Cody-Waite) */
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n in two halves so that n down to -150 (subnormal results) scales correctly */
    const __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

#endif

/* y[i] = exp(x[i]) for i < n (in place allowed) */
INLINE void exp_n(const float *x, float *y, int64_t n) {
    int64_t i = 0;
#ifdef __AVX2__
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp256(_mm256_loadu_ps(x + i)));

#endif
    for (; i < n; i++) y[i] = expf(x[i]);
}

/* ---- one cache row as float32 ---- */

INLINE float kv_dot(const float *q, const void *row, int kv_type, int64_t d) {
    int64_t i = 0;
    float s = 0.0f;
#ifdef __AVX2__
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= d; i += 8) {
        const __m256 r = kv_type ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)))
                                 : _mm256_loadu_ps((const float *)row + i);
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), r, acc);
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    s = _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));

#endif
    for (; i < d; i++) s += q[i] * (kv_type ? f16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i]);
    return s;
}

/* o[i] += p * row[i], i < d */
INLINE void kv_axpy(float *o, float p, const void *row, int kv_type, int64_t d) {
    int64_t i = 0;
#ifdef __AVX2__
    const __m256 pv = _mm256_set1_ps(p);
    for (; i + 8 <= d; i += 8) {
        const __m256 r = kv_type ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)))
                                 : _mm256_loadu_ps((const float *)row + i);
        _mm256_storeu_ps(o + i, _mm256_fmadd_ps(pv, r, _mm256_loadu_ps(o + i)));
    }

#endif
    for (; i < d; i++) o[i] += p * (kv_type ? f16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i]);
}

typedef struct {            /* one ggr_attend call (see the top of this file) */
    const float *q;
    const uint8_t *k, *v;
    int64_t n_head, n_kv, dk, dv, s, k_head, k_row, v_head, v_row;   /* strides in elements */
    int kv_type;
    float scale, cap;
} attend_job;

/* Task (g, rows [j0, j1)): for each query head h of kv head g, m[h], l[h] and o[h] (dv) of the
 * chunk; `sc` is scratch of (rep, j1 - j0) floats. */
INLINE void attend_chunk(const attend_job *a, int64_t g, int64_t j0, int64_t j1, float *sc,
                         float *m, float *l, float *o) {
    const int64_t rep = a->n_head / a->n_kv, len = j1 - j0, es = a->kv_type ? 2 : 4;
    const uint8_t *kg = a->k + g * a->k_head * es, *vg = a->v + g * a->v_head * es;
    for (int64_t r = 0; r < rep; r++) {
        const float *q = a->q + (g * rep + r) * a->dk;
        float *s = sc + r * len, mx = -INFINITY, sum = 0.0f;
        for (int64_t j = 0; j < len; j++) {
            float t = a->scale * kv_dot(q, kg + (j0 + j) * a->k_row * es, a->kv_type, a->dk);
            if (a->cap > 0.0f) t = a->cap * tanhf(t / a->cap);
            s[j] = t;
            mx = t > mx ? t : mx;
        }
        for (int64_t j = 0; j < len; j++) s[j] -= mx;
        exp_n(s, s, len);
        for (int64_t j = 0; j < len; j++) sum += s[j];
        m[r] = mx, l[r] = sum;
        memset(o + r * a->dv, 0, sizeof(float) * (size_t)a->dv);
    }
    for (int64_t j = 0; j < len; j++) {       /* each V row once for all query heads of g */
        const uint8_t *row = vg + (j0 + j) * a->v_row * es;
        for (int64_t r = 0; r < rep; r++) kv_axpy(o + r * a->dv, sc[r * len + j], row, a->kv_type, a->dv);
    }
}

#define ATTEND_CHUNK 256          /* cache positions per task (a function of S only: results do */
                                  /* not depend on the thread count) */

/* out (H, dv) for one query position. Returns 0, -1 on bad sizes, -2 without memory. */
static int attend_run(const attend_job *a, float *out, int threads) {
    if (a->s < 1 || a->n_kv < 1 || a->n_head % a->n_kv || a->kv_type < 0 || a->kv_type > 1) return -1;
    const int64_t rep = a->n_head / a->n_kv, n_chunk = (a->s + ATTEND_CHUNK - 1) / ATTEND_CHUNK;
    const int64_t n_task = a->n_kv * n_chunk, per_task = rep * (ATTEND_CHUNK + 2 + a->dv);
    float *work = malloc(sizeof(float) * (size_t)(n_task * per_task));
    if (!work) return -2;
    #pragma omp parallel for schedule(static) num_threads(threads) if(threads > 1 && n_task > 1)
    for (int64_t t = 0; t < n_task; t++) {
        const int64_t g = t / n_chunk, c = t % n_chunk, j0 = c * ATTEND_CHUNK;
        const int64_t j1 = j0 + ATTEND_CHUNK < a->s ? j0 + ATTEND_CHUNK : a->s;
        float *w = work + t * per_task;     /* m (rep) | l (rep) | o (rep, dv) | scores (rep, chunk) */
        attend_chunk(a, g, j0, j1, w + rep * (2 + a->dv), w, w + rep, w + 2 * rep);
    }
    for (int64_t g = 0; g < a->n_kv; g++)
        for (int64_t r = 0; r < rep; r++) {
            float mx = -INFINITY, sum = 0.0f, *o = out + (g * rep + r) * a->dv;
            for (int64_t c = 0; c < n_chunk; c++) {
                const float m = work[(g * n_chunk + c) * per_task + r];
                mx = m > mx ? m : mx;
            }
            memset(o, 0, sizeof(float) * (size_t)a->dv);
            for (int64_t c = 0; c < n_chunk; c++) {
                const float *w = work + (g * n_chunk + c) * per_task, e = expf(w[r] - mx);
                sum += e * w[rep + r];
                for (int64_t i = 0; i < a->dv; i++) o[i] += e * w[2 * rep + r * a->dv + i];
            }
            for (int64_t i = 0; i < a->dv; i++) o[i] /= sum;
        }
    free(work);
    return 0;
}

#endif
