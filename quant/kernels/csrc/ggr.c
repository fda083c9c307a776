/* Native kernels for GGML block formats: C11 + OpenMP, no torch headers, called via ctypes.
 *
 * Built on first use by quant/kernels/native.py (cc -O3 -march=native -fopenmp -shared -fPIC
 * -ffp-contract=off -std=gnu11). Exported contract (CPU memory, contiguous arrays, no aliasing):
 *
 *   ggr_abi_version()                          -> GGR_ABI (the Python side refuses a mismatch)
 *   ggr_block_size(type), ggr_type_size(type)  -> the GGML type's block geometry, 0 = unsupported
 *   ggr_has_dequant(type)                      -> 1 if ggr_dequant handles the type
 *   ggr_gemv(type, w, row_bytes, n, x, m, k, y, threads)
 *       y[r][i] = sum_j x[r][j] * W[i][j] for x (m, k) float32, W (n, k) stored as n rows of
 *       `row_bytes` raw blocks, y (m, n) float32. Each block is decoded once per group of up to
 *       FUSED_M (AVX2) / GGR_MAX_M (generic C) x rows; OpenMP splits the n output rows over
 *       `threads` threads (statically; each output is computed the same way whatever the thread
 *       count). Float32 rounding differs from x @ dequantize(W).T in summation order only.
 *       Returns 0; -1 for an unsupported type or a k / row_bytes that do not match; -2 if out
 *       of memory.
 *   ggr_dequant(type, src, n_blocks, dst, threads)
 *       dst (n_blocks * block_size float32) = the blocks' weights, bit-exact with gguf-py's
 *       numpy dequantizers (same float32 operations in the same order, hence -ffp-contract=off:
 *       a fused multiply-add would round `d*q + m` once instead of twice). Returns 0 or -1.
 *
 * Files: common.h (helpers), blocks.h (layouts + scalar dequantizers), fused_avx2.h (the fused
 * AVX2 rows); here the drivers and the format table. Without AVX2+FMA+F16C the decode kernels
 * fall back to "dequantize a block into a stack buffer, then a float dot" in plain C.
 * A new format: a layout + deq_ in blocks.h, a row_ in fused_avx2.h, one DEFINE line and one
 * table row here.
 */
#include "blocks.h"

#define GGR_ABI 1

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GGR_AVX2 1
#include "fused_avx2.h"
#endif

/* ---- generic rows: dequantize one block into a stack buffer, dot it with every x row ---- */

INLINE float hsum(const float *acc) {
    float s = 0.0f;
    for (int l = 0; l < LANES; l++) s += acc[l];
    return s;
}

/* acc[l] += sum over j = l (mod LANES) of w[j] * x[j], for `len` a multiple of LANES */
INLINE void dot_lanes(float *acc, const float *w, const float *x, int len) {
    for (int j = 0; j < len; j += LANES)
        for (int l = 0; l < LANES; l++) acc[l] = MADD(w[j + l], x[j + l], acc[l]);
}

/* y[r][i] for x rows r0 .. r0+mm-1 and output row i: dequantize each block once, dot it with
 * every x row. `mm` is a compile-time 1 on the decode fast path (acc then lives in registers). */
INLINE void gemv_row(const gemv_job *job, int64_t i, int64_t r0, int mm, deq_fn deq, int qk, int ts) {
    const uint8_t *row = job->w + i * job->row_bytes;
    const int64_t nb = job->k / qk;
    float acc[GGR_MAX_M][LANES] ALIGNED;
    float buf[MAX_QK] ALIGNED;
    memset(acc, 0, sizeof(acc));
    for (int64_t b = 0; b < nb; b++) {
        deq(row + b * ts, buf);
        for (int r = 0; r < mm; r++) dot_lanes(acc[r], buf, job->x + (r0 + r) * job->k + b * qk, qk);
    }
    for (int r = 0; r < mm; r++) job->y[(r0 + r) * job->n + i] = hsum(acc[r]);
}

INLINE void gemv_rows(const gemv_job *job, int64_t i, deq_fn deq, int qk, int ts) {
    if (job->m == 1) {
        gemv_row(job, i, 0, 1, deq, qk, ts);
        return;
    }
    for (int64_t r0 = 0; r0 < job->m; r0 += GGR_MAX_M) {
        const int mm = job->m - r0 < GGR_MAX_M ? (int)(job->m - r0) : GGR_MAX_M;
        gemv_row(job, i, r0, mm, deq, qk, ts);
    }
}

/* Float rows: any k; whole 32-value groups through the lanes, the tail scalar. */
INLINE void gemv_float_row(const gemv_job *job, int64_t i, deq_fn deq, deq_n_fn deq_n) {
    const uint8_t *row = job->w + i * job->row_bytes;
    const int64_t full = job->k / 32 * 32;
    float buf[32] ALIGNED;
    for (int64_t r = 0; r < job->m; r++) {
        const float *x = job->x + r * job->k;
        float acc[LANES] ALIGNED = {0};
        for (int64_t j = 0; j < full; j += 32) {
            deq(row + 2 * j, buf);
            dot_lanes(acc, buf, x + j, 32);
        }
        float s = hsum(acc);
        if (full < job->k) {
            deq_n(row + 2 * full, buf, (int)(job->k - full));
            for (int64_t j = full; j < job->k; j++) s += buf[j - full] * x[j];
        }
        job->y[r * job->n + i] = s;
    }
}

/* ---- per-format kernels ---- */

#ifdef GGR_AVX2
#define GEMV_BODY(name, QK, TS) avx_rows(job, xs, i, row_##name, NULL, QK, TS)
#define FLOAT_BODY(name) avx_rows(job, xs, i, row_##name, deq_##name##_n, 32, 64)
#else
#define GEMV_BODY(name, QK, TS) gemv_rows(job, i, deq_##name, QK, TS)
#define FLOAT_BODY(name) gemv_float_row(job, i, deq_##name, deq_##name##_n)
#endif

#define OMP_ROWS _Pragma("omp parallel for schedule(static) num_threads(job->threads) if(job->threads > 1)")

#define DEFINE_KERNELS(name, QK, TS)                                                         \
    static void gemv_##name(const gemv_job *job, const x_sums *xs) {                         \
        (void)xs;                                                                            \
        OMP_ROWS for (int64_t i = 0; i < job->n; i++) GEMV_BODY(name, QK, TS);               \
    }                                                                                        \
    static void dequant_##name(const uint8_t *src, int64_t nb, float *dst, int threads) {    \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")    \
        for (int64_t b = 0; b < nb; b++) deq_##name(src + b * TS, dst + b * QK);             \
    }

#define DEFINE_FLOAT_KERNELS(name)                                                           \
    static void gemv_##name(const gemv_job *job, const x_sums *xs) {                         \
        (void)xs;                                                                            \
        OMP_ROWS for (int64_t i = 0; i < job->n; i++) FLOAT_BODY(name);                      \
    }

DEFINE_KERNELS(q4_0, 32, 18)
DEFINE_KERNELS(q4_1, 32, 20)
DEFINE_KERNELS(q5_0, 32, 22)
DEFINE_KERNELS(q5_1, 32, 24)
DEFINE_KERNELS(q8_0, 32, 34)
DEFINE_KERNELS(q2_k, QK_K, 84)
DEFINE_KERNELS(q3_k, QK_K, 110)
DEFINE_KERNELS(q4_k, QK_K, 144)
DEFINE_KERNELS(q5_k, QK_K, 176)
DEFINE_KERNELS(q6_k, QK_K, 210)
DEFINE_KERNELS(iq4_nl, 32, 18)
DEFINE_KERNELS(iq4_xs, QK_K, 136)
DEFINE_FLOAT_KERNELS(f16)
DEFINE_FLOAT_KERNELS(bf16)

/* ---- the format table, indexed by GGML type id ---- */

typedef struct {
    int block_size, type_size;
    void (*gemv)(const gemv_job *, const x_sums *);
    void (*dequant)(const uint8_t *, int64_t, float *, int);   /* NULL: not offered natively */
} format_ops;

enum { GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q8_0 = 8,
       GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14,
       GGML_IQ4_NL = 20, GGML_IQ4_XS = 23, GGML_BF16 = 30, GGML_TYPE_END = 64 };

static const format_ops FORMATS[GGML_TYPE_END] = {
    [GGML_Q4_0] = {32, 18, gemv_q4_0, dequant_q4_0},
    [GGML_Q4_1] = {32, 20, gemv_q4_1, dequant_q4_1},
    [GGML_Q5_0] = {32, 22, gemv_q5_0, dequant_q5_0},
    [GGML_Q5_1] = {32, 24, gemv_q5_1, dequant_q5_1},
    [GGML_Q8_0] = {32, 34, gemv_q8_0, dequant_q8_0},
    [GGML_Q2_K] = {QK_K, 84, gemv_q2_k, dequant_q2_k},
    [GGML_Q3_K] = {QK_K, 110, gemv_q3_k, dequant_q3_k},
    [GGML_Q4_K] = {QK_K, 144, gemv_q4_k, dequant_q4_k},
    [GGML_Q5_K] = {QK_K, 176, gemv_q5_k, dequant_q5_k},
    [GGML_Q6_K] = {QK_K, 210, gemv_q6_k, dequant_q6_k},
    [GGML_IQ4_NL] = {32, 18, gemv_iq4_nl, dequant_iq4_nl},
    [GGML_IQ4_XS] = {QK_K, 136, gemv_iq4_xs, dequant_iq4_xs},
    [GGML_F16] = {1, 2, gemv_f16, NULL},
    [GGML_BF16] = {1, 2, gemv_bf16, NULL},
};

static const format_ops *ops(int type) {
    return type >= 0 && type < GGML_TYPE_END && FORMATS[type].gemv ? &FORMATS[type] : NULL;
}

/* x sums per 16 and per 32 weights (the offset terms of the fused rows); NULLs if no memory */
static x_sums sums_of(const float *x, int64_t m, int64_t k) {
    const int64_t g16 = k / 16, g32 = k / 32;
    x_sums xs = {malloc(sizeof(float) * (size_t)(m * g16 + 1)), malloc(sizeof(float) * (size_t)(m * g32 + 1))};
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

int ggr_abi_version(void) { return GGR_ABI; }
int ggr_block_size(int type) { return ops(type) ? ops(type)->block_size : 0; }
int ggr_type_size(int type) { return ops(type) ? ops(type)->type_size : 0; }
int ggr_has_dequant(int type) { return ops(type) && ops(type)->dequant; }

int ggr_gemv(int type, const uint8_t *w, int64_t row_bytes, int64_t n, const float *x, int64_t m,
             int64_t k, float *y, int threads) {
    const format_ops *f = ops(type);
    if (!f || k % f->block_size || row_bytes != k / f->block_size * f->type_size) return -1;
    const gemv_job job = {w, row_bytes, n, m, k, x, y, threads < 1 ? 1 : threads};
    x_sums xs = sums_of(x, m, k);
    const int ok = xs.s16 && xs.s32;
    if (ok) f->gemv(&job, &xs);
    free(xs.s16);
    free(xs.s32);
    return ok ? 0 : -2;
}

int ggr_dequant(int type, const uint8_t *src, int64_t n_blocks, float *dst, int threads) {
    const format_ops *f = ops(type);
    if (!f || !f->dequant) return -1;
    f->dequant(src, n_blocks, dst, threads < 1 ? 1 : threads);
    return 0;
}
