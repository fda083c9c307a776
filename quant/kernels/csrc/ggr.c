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
 *   ggr_gemv_multi(mats, count, x, m, k, y, act, threads)
 *       Several W (ggr_matrix: type, blocks, row_bytes, n; up to GGR_MAX_MATRICES) against one
 *       x in one OpenMP region. act 0: y (m, sum n) holds the matrices' outputs side by side
 *       (as if their rows were one W: Q, K, V). act 1 (SiLU) / 2 (GELU, tanh form): two
 *       matrices gate and up of equal n and y (m, n) = act(x @ G.T) * (x @ U.T). Same codes.
 *       ggr_gemv is ggr_gemv_multi of one matrix.
 *   ggr_attend(job, out, threads)
 *       One query position's attention over a float32 / f16 key-value cache (attend.h).
 *   ggr_rms_norm(x, rows, d, ldx, w, eps, y), ggr_rope(x, rows, d, n_rot, cos, sin, neox, y)
 *       Row ops of the decode step (rowops.h); single-threaded, not counted in ggr_kernel_ns.
 *   ggr_block_step(block, x, m, cos, sin, k_caches, v_caches, kv_type, n_ctx, pos, threads)
 *       One transformer block's decode step for one token of each of m sequences, row r in
 *       its own cache k_caches[r] / v_caches[r] at pos[r] (block_step.h): attention, and the
 *       dense FFN when the block has one, with the same kernels as the calls above.
 *   ggr_experts_step(experts, x, ids, weights, k, out, threads)
 *       The k routed experts of one token, weighted and summed (block_step.h).
 *   ggr_route(logits, t, e, routing, ids, weights)
 *       Softmax / sigmoid routing of t rows of router logits to k experts each (block_step.h).
 *   ggr_moe_step(experts, router, routing, x, out, ids, weights, threads)
 *       A sparse FFN's routed part for one token: router, routing, experts in one call.
 *   ggr_kernel_ns() -> nanoseconds spent in ggr_gemv*, ggr_attend, ggr_*_step and
 *       ggr_dequant so far (for profiles).
 *   ggr_dequant(type, src, n_blocks, dst, threads)
 *       dst (n_blocks * block_size float32) = the blocks' weights, bit-exact with gguf-py's
 *       numpy dequantizers (same float32 operations in the same order, hence -ffp-contract=off:
 *       a fused multiply-add would round `d*q + m` once instead of twice). Returns 0 or -1.
 *
 * Files: common.h (helpers), blocks.h (layouts + scalar dequantizers), fused_avx2.h (the fused
 * AVX2 rows), block_step.h (a block's decode step); here the drivers and the format table.
 * Without AVX2+FMA+F16C the decode kernels fall back to "dequantize a block into a stack
 * buffer, then a float dot" in plain C.
 * A new format: a layout + deq_ in blocks.h, a row_ in fused_avx2.h, one DEFINE line and one
 * table row here.
 */
#include <time.h>
#include "blocks.h"
#include "attend.h"
#include "rowops.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define GGR_ABI 8
#define GGR_MAX_MATRICES 8

enum { GGR_Q8K = 1 };      /* ggr_matrix.flags: round x to Q8_K and dot in integers where the type can */

typedef struct {           /* one weight matrix of ggr_gemv_multi: n rows of row_bytes raw blocks */
    int32_t type, flags;
    const uint8_t *w;
    int64_t row_bytes, n;
} ggr_matrix;

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define GGR_AVX2 1
#include "fused_avx2.h"
#include "q8k_avx2.h"
#include "q80_avx2.h"
#endif
#if defined(GGR_AVX2) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define GGR_AVX512 1
#include "fused_avx512.h"
#endif
#include "xprep.h"

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
    for (int r = 0; r < mm; r++) job->y[(r0 + r) * job->ldy + i] = hsum(acc[r]);
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
INLINE void gemv_float_row(const gemv_job *job, int64_t i, deq_fn deq, deq_n_fn deq_n, int es) {
    const uint8_t *row = job->w + i * job->row_bytes;
    const int64_t full = job->k / 32 * 32;
    float buf[32] ALIGNED;
    for (int64_t r = 0; r < job->m; r++) {
        const float *x = job->x + r * job->k;
        float acc[LANES] ALIGNED = {0};
        for (int64_t j = 0; j < full; j += 32) {
            deq(row + es * j, buf);
            dot_lanes(acc, buf, x + j, 32);
        }
        float s = hsum(acc);
        if (full < job->k) {
            deq_n(row + es * full, buf, (int)(job->k - full));
            for (int64_t j = full; j < job->k; j++) s += buf[j - full] * x[j];
        }
        job->y[r * job->ldy + i] = s;
    }
}

/* ---- per-format kernels ---- */

#ifdef GGR_AVX2
#define GEMV_BODY(name, QK, TS) avx_rows(job, xs, i, row_##name, NULL, QK, TS)
#define FLOAT_BODY(name, ES) avx_rows(job, xs, i, row_##name, deq_##name##_n, 32, 32 * (ES))
#else
#define GEMV_BODY(name, QK, TS) gemv_rows(job, i, deq_##name, QK, TS)
#define FLOAT_BODY(name, ES) gemv_float_row(job, i, deq_##name, deq_##name##_n, ES)
#endif

/* Each format's rows [lo, hi) of one job, run by one thread; the drivers below split rows. */
#define DEFINE_KERNELS(name, QK, TS)                                                         \
    static void rows_##name(const gemv_job *job, const x_sums *xs, int64_t lo, int64_t hi) { \
        (void)xs;                                                                            \
        for (int64_t i = lo; i < hi; i++) GEMV_BODY(name, QK, TS);                           \
    }                                                                                        \
    static void dequant_##name(const uint8_t *src, int64_t nb, float *dst, int threads) {    \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")    \
        for (int64_t b = 0; b < nb; b++) deq_##name(src + b * TS, dst + b * QK);             \
    }

/* The formats with AVX-512 rows (fused_avx512.h) take them where the build has AVX-512 */
#ifdef GGR_AVX512
#define DEFINE_KERNELS_512(name, QK, TS)                                                     \
    static void rows_##name(const gemv_job *job, const x_sums *xs, int64_t lo, int64_t hi) { \
        (void)xs;                                                                            \
        for (int64_t i = lo; i < hi; i++) avx512_rows(job, i, row512_##name, QK, TS);        \
    }                                                                                        \
    static void dequant_##name(const uint8_t *src, int64_t nb, float *dst, int threads) {    \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if(threads > 1)")    \
        for (int64_t b = 0; b < nb; b++) deq_##name(src + b * TS, dst + b * QK);             \
    }
#define ROW_KIND_512 3
#else
#define DEFINE_KERNELS_512(name, QK, TS) DEFINE_KERNELS(name, QK, TS)
#define ROW_KIND_512 ROW_KIND
#endif
#ifdef GGR_AVX2
#define ROW_KIND 2
#else
#define ROW_KIND 1
#endif

#define DEFINE_FLOAT_KERNELS(name, ES)                                                         \
    static void rows_##name(const gemv_job *job, const x_sums *xs, int64_t lo, int64_t hi) { \
        (void)xs;                                                                            \
        for (int64_t i = lo; i < hi; i++) FLOAT_BODY(name, ES);                                \
    }

DEFINE_KERNELS_512(q4_0, 32, 18)
DEFINE_KERNELS(q4_1, 32, 20)
DEFINE_KERNELS_512(q5_0, 32, 22)
DEFINE_KERNELS_512(q5_1, 32, 24)
DEFINE_KERNELS_512(q8_0, 32, 34)
DEFINE_KERNELS(q2_k, QK_K, 84)
DEFINE_KERNELS(q3_k, QK_K, 110)
DEFINE_KERNELS(q4_k, QK_K, 144)
DEFINE_KERNELS(q5_k, QK_K, 176)
DEFINE_KERNELS(q6_k, QK_K, 210)
DEFINE_KERNELS_512(iq4_nl, 32, 18)
DEFINE_KERNELS_512(iq4_xs, QK_K, 136)
DEFINE_KERNELS(iq2_xxs, QK_K, 66)
DEFINE_KERNELS(iq2_xs, QK_K, 74)
DEFINE_KERNELS(iq2_s, QK_K, 82)
DEFINE_KERNELS(iq3_xxs, QK_K, 98)
DEFINE_KERNELS(iq3_s, QK_K, 110)
DEFINE_KERNELS(iq1_s, QK_K, 50)
DEFINE_KERNELS(iq1_m, QK_K, 56)
DEFINE_KERNELS(tq1_0, QK_K, 54)
DEFINE_KERNELS(tq2_0, QK_K, 66)
DEFINE_KERNELS(mxfp4, 32, 17)
DEFINE_FLOAT_KERNELS(f32, 4)
DEFINE_FLOAT_KERNELS(f16, 2)
DEFINE_FLOAT_KERNELS(bf16, 2)

/* Integer rows against x in Q8_K (xs->q8), see q8k_avx2.h; only with AVX2 */
#ifdef GGR_AVX2
#define DEFINE_Q8K_KERNELS(name)                                                                \
    static void rows_q8k_##name(const gemv_job *job, const x_sums *xs, int64_t lo, int64_t hi) { \
        q8k_rows(job, xs->q8, lo, hi, dot_##name##_q8k);                                        \
    }
DEFINE_Q8K_KERNELS(q4_k)
DEFINE_Q8K_KERNELS(q6_k)
DEFINE_Q8K_KERNELS(q5_k)
DEFINE_Q8K_KERNELS(iq4_xs)
DEFINE_Q8K_KERNELS(q2_k)
DEFINE_Q8K_KERNELS(q3_k)
#define ROWS_Q8K(name) rows_q8k_##name
/* Integer rows against x in Q8_0 (xs->q80), see q80_avx2.h: with_min for the "_1" formats */
#define DEFINE_Q80_KERNELS(name, TS, WITH_MIN)                                                  \
    static void rows_q80_##name(const gemv_job *job, const x_sums *xs, int64_t lo, int64_t hi) { \
        q80_rows(job, xs->q80, lo, hi, TS, idot_##name, WITH_MIN);                              \
    }
DEFINE_Q80_KERNELS(q4_0, 18, 0)
DEFINE_Q80_KERNELS(q4_1, 20, 1)
DEFINE_Q80_KERNELS(q5_0, 22, 0)
DEFINE_Q80_KERNELS(q5_1, 24, 1)
DEFINE_Q80_KERNELS(q8_0, 34, 0)
DEFINE_Q80_KERNELS(iq4_nl, 18, 0)
#define ROWS_Q80(name) rows_q80_##name
#else
#define ROWS_Q8K(name) NULL
#define ROWS_Q80(name) NULL
#endif

/* ---- the format table, indexed by GGML type id ---- */

typedef void (*rows_fn)(const gemv_job *, const x_sums *, int64_t, int64_t);

enum { XR_NONE = 0, XR_Q8K = 1, XR_Q80 = 2 };   /* x rounded to Q8_K per 256 / to Q8_0 per 32 */

typedef struct {
    int block_size, type_size;
    rows_fn rows;                                               /* float x */
    void (*dequant)(const uint8_t *, int64_t, float *, int);   /* NULL: not offered natively */
    rows_fn rows_q8k;                                           /* integer rows; NULL: none */
    int x_round;                                                /* the x they take: XR_Q8K or XR_Q80 */
} format_ops;

enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3, GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q8_0 = 8,
       GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14,
       GGML_IQ2_XXS = 16, GGML_IQ2_XS = 17, GGML_IQ3_XXS = 18, GGML_IQ1_S = 19, GGML_IQ4_NL = 20,
       GGML_IQ3_S = 21, GGML_IQ2_S = 22, GGML_IQ4_XS = 23, GGML_IQ1_M = 29, GGML_BF16 = 30,
       GGML_TQ1_0 = 34, GGML_TQ2_0 = 35, GGML_MXFP4 = 39, GGML_TYPE_END = 64 };

static const format_ops FORMATS[GGML_TYPE_END] = {
    [GGML_Q4_0] = {32, 18, rows_q4_0, dequant_q4_0, ROWS_Q80(q4_0), XR_Q80},
    [GGML_Q4_1] = {32, 20, rows_q4_1, dequant_q4_1, ROWS_Q80(q4_1), XR_Q80},
    [GGML_Q5_0] = {32, 22, rows_q5_0, dequant_q5_0, ROWS_Q80(q5_0), XR_Q80},
    [GGML_Q5_1] = {32, 24, rows_q5_1, dequant_q5_1, ROWS_Q80(q5_1), XR_Q80},
    [GGML_Q8_0] = {32, 34, rows_q8_0, dequant_q8_0, ROWS_Q80(q8_0), XR_Q80},
    [GGML_Q2_K] = {QK_K, 84, rows_q2_k, dequant_q2_k, ROWS_Q8K(q2_k), XR_Q8K},
    [GGML_Q3_K] = {QK_K, 110, rows_q3_k, dequant_q3_k, ROWS_Q8K(q3_k), XR_Q8K},
    [GGML_Q4_K] = {QK_K, 144, rows_q4_k, dequant_q4_k, ROWS_Q8K(q4_k), XR_Q8K},
    [GGML_Q5_K] = {QK_K, 176, rows_q5_k, dequant_q5_k, ROWS_Q8K(q5_k), XR_Q8K},
    [GGML_Q6_K] = {QK_K, 210, rows_q6_k, dequant_q6_k, ROWS_Q8K(q6_k), XR_Q8K},
    [GGML_IQ4_NL] = {32, 18, rows_iq4_nl, dequant_iq4_nl, ROWS_Q80(iq4_nl), XR_Q80},
    [GGML_IQ4_XS] = {QK_K, 136, rows_iq4_xs, dequant_iq4_xs, ROWS_Q8K(iq4_xs), XR_Q8K},
    [GGML_IQ2_XXS] = {QK_K, 66, rows_iq2_xxs, dequant_iq2_xxs},
    [GGML_IQ2_XS] = {QK_K, 74, rows_iq2_xs, dequant_iq2_xs},
    [GGML_IQ2_S] = {QK_K, 82, rows_iq2_s, dequant_iq2_s},
    [GGML_IQ3_XXS] = {QK_K, 98, rows_iq3_xxs, dequant_iq3_xxs},
    [GGML_IQ3_S] = {QK_K, 110, rows_iq3_s, dequant_iq3_s},
    [GGML_IQ1_S] = {QK_K, 50, rows_iq1_s, dequant_iq1_s},
    [GGML_IQ1_M] = {QK_K, 56, rows_iq1_m, dequant_iq1_m},
    [GGML_TQ1_0] = {QK_K, 54, rows_tq1_0, dequant_tq1_0},
    [GGML_TQ2_0] = {QK_K, 66, rows_tq2_0, dequant_tq2_0},
    [GGML_MXFP4] = {32, 17, rows_mxfp4, dequant_mxfp4},
    [GGML_F32] = {1, 4, rows_f32, NULL},
    [GGML_F16] = {1, 2, rows_f16, NULL},
    [GGML_BF16] = {1, 2, rows_bf16, NULL},
};

static int needs_grids(int type) {
    return type == GGML_IQ2_XXS || type == GGML_IQ2_XS || type == GGML_IQ2_S || type == GGML_IQ3_XXS ||
           type == GGML_IQ3_S || type == GGML_IQ1_S || type == GGML_IQ1_M;
}

/* a format's kernels; none for the codebook types until ggr_set_grids has run */
static const format_ops *ops(int type) {
    if (type < 0 || type >= GGML_TYPE_END || !FORMATS[type].rows) return NULL;
    return needs_grids(type) && !GRIDS_READY ? NULL : &FORMATS[type];
}

int ggr_abi_version(void) { return GGR_ABI; }
int ggr_block_size(int type) { return ops(type) ? ops(type)->block_size : 0; }
int ggr_type_size(int type) { return ops(type) ? ops(type)->type_size : 0; }
int ggr_has_dequant(int type) { return ops(type) && ops(type)->dequant; }
int ggr_has_q8k(int type) { return ops(type) && ops(type)->rows_q8k; }
/* the rounding of x a type's integer rows take: XR_Q8K (1), XR_Q80 (2); 0 without such rows */
int ggr_x_round(int type) { return ggr_has_q8k(type) ? ops(type)->x_round : XR_NONE; }
/* 1 if the integer rows use VNNI dot products in this build */
int ggr_has_vnni(void) {
#ifdef GGR_VNNI
    return 1;
#else
    return 0;
#endif
}

/* Which float-x decode rows a type takes in this build: 1 generic C, 2 AVX2, 3 AVX-512
 * (the DEFINE_KERNELS_512 formats above); 0 unsupported. Fixed at compile time by -march. */
int ggr_row_kind(int type) {
    if (!ops(type)) return 0;
    switch (type) {
    case GGML_Q4_0: case GGML_Q5_0: case GGML_Q5_1: case GGML_Q8_0: case GGML_IQ4_NL: case GGML_IQ4_XS:
        return ROW_KIND_512;
    default:
        return ROW_KIND;
    }
}

/* ---- the gemv drivers ---- */

enum { ACT_NONE = 0, ACT_SILU = 1, ACT_GELU_TANH = 2 };

INLINE float act_silu(float g) { return g / (1.0f + expf(-g)); }
INLINE float act_gelu_tanh(float g) {      /* ggml_gelu / torch gelu(approximate="tanh") */
    return 0.5f * g * (1.0f + tanhf(0.7978845608028654f * (g + 0.044715f * g * g * g)));
}

/* Output rows [lo, hi) of the matrices' rows laid end to end (matrix j's rows after those of
 * matrices 0 .. j-1): each matrix computes its part of the range. */
static void rows_range(const gemv_job *jobs, const rows_fn *fs, int count, const x_sums *xs,
                       int64_t lo, int64_t hi) {
    int64_t off = 0;
    for (int j = 0; j < count; j++) {
        const int64_t a = lo > off ? lo : off, b = hi < off + jobs[j].n ? hi : off + jobs[j].n;
        if (a < b) fs[j](&jobs[j], xs, a - off, b - off);
        off += jobs[j].n;
    }
}

/* y (m, F) = act(gate) * up for output rows [lo, hi): gate in g (ldy F), up already in y.
 * Vectorised with exp256: silu(g) = g / (1 + e^-g), tanh(u) = 1 - 2 / (e^2u + 1). */
static void glu_range(int act, float *g, float *y, int64_t m, int64_t f, int64_t lo, int64_t hi) {
    const float c = 0.7978845608028654f;            /* sqrt(2 / pi) */
    for (int64_t r = 0; r < m; r++) {
        float *gr = g + r * f, *yr = y + r * f;
        int64_t i = lo;
#ifdef __AVX2__
        const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
        for (; i + 8 <= hi; i += 8) {
            const __m256 x = _mm256_loadu_ps(gr + i);
            __m256 a;
            if (act == ACT_SILU) {
                a = _mm256_div_ps(x, _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), x))));
            } else {
                const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
                const __m256 u = _mm256_mul_ps(_mm256_set1_ps(c), _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), x3, x));
                const __m256 t = _mm256_sub_ps(one, _mm256_div_ps(two, _mm256_add_ps(exp256(_mm256_add_ps(u, u)), one)));
                a = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(one, t));
            }
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(a, _mm256_loadu_ps(yr + i)));
        }
#endif
        for (; i < hi; i++) yr[i] *= act == ACT_SILU ? act_silu(gr[i]) : act_gelu_tanh(gr[i]);
    }
}

/* One OpenMP region for every matrix: thread t of nt takes output rows [N t / nt, N (t+1) / nt)
 * of the N rows (static, so each output is computed the same way whatever the thread count).
 * With an activation there are two matrices (gate, up) of F rows each and the range is over
 * F: a thread computes gate and up for its rows, then their product, with no barrier. */
static void run_jobs(const gemv_job *jobs, const rows_fn *fs, int count, const x_sums *xs,
                     int act, float *gate, int threads) {
    int64_t total = 0;
    for (int j = 0; j < count; j++) total += jobs[j].n;
    if (act != ACT_NONE) total = jobs[0].n;
    #pragma omp parallel num_threads(threads) if(threads > 1)
    {
#ifdef _OPENMP
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#else
        const int t = 0, nt = 1;
#endif
        const int64_t lo = total * t / nt, hi = total * (t + 1) / nt;
        if (act == ACT_NONE) {
            rows_range(jobs, fs, count, xs, lo, hi);
        } else {
            fs[0](&jobs[0], xs, lo, hi);
            fs[1](&jobs[1], xs, lo, hi);
            glu_range(act, gate, jobs[1].y, jobs[1].m, total, lo, hi);
        }
    }
}

/* Nanoseconds spent inside ggr_gemv_multi / ggr_dequant since load (wall clock, all callers):
 * what `gguf-runtime bench --profile` reports as time in the native kernels. */
static int64_t kernel_ns;

static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

int64_t ggr_kernel_ns(void) { return __atomic_load_n(&kernel_ns, __ATOMIC_RELAXED); }

static int gemv_multi(const ggr_matrix *mats, int count, const float *x, int64_t m, int64_t k, float *y,
                      int act, int threads) {
    if (count < 1 || count > GGR_MAX_MATRICES || act < ACT_NONE || act > ACT_GELU_TANH) return -1;
    if (act != ACT_NONE && (count != 2 || mats[0].n != mats[1].n)) return -1;
    gemv_job jobs[GGR_MAX_MATRICES];
    rows_fn fs[GGR_MAX_MATRICES];
    int64_t total = 0;
    int q8k = 0, q80 = 0, floats = 0;
    for (int j = 0; j < count; j++) total += mats[j].n;
    float *gate = act != ACT_NONE ? malloc(sizeof(float) * (size_t)(m * mats[0].n + 1)) : NULL;
    if (act != ACT_NONE && !gate) return -2;
    int64_t off = 0;
    for (int j = 0; j < count; off += mats[j].n, j++) {
        const format_ops *f = ops(mats[j].type);
        if (!f || k % f->block_size || mats[j].row_bytes != k / f->block_size * f->type_size) {
            free(gate);
            return -1;
        }
        const int int8 = (mats[j].flags & GGR_Q8K) && f->rows_q8k;
        fs[j] = int8 ? f->rows_q8k : f->rows;
        q8k |= int8 && f->x_round == XR_Q8K;
        q80 |= int8 && f->x_round == XR_Q80;
        floats |= !int8;
        float *yj = act == ACT_NONE ? y + off : j == 0 ? gate : y;
        jobs[j] = (gemv_job){mats[j].w, mats[j].row_bytes, mats[j].n, m, k, x, yj,
                             act == ACT_NONE ? total : mats[j].n};
    }
    x_sums xs;
    const int ok = prepare_x(&xs, x, m, k, floats, q8k, q80);
    if (ok) run_jobs(jobs, fs, count, &xs, act, gate, threads < 1 ? 1 : threads);
    free(xs.s16);
    free(xs.s32);
    free(xs.q8);
    free(xs.q80);
    free(gate);
    return ok ? 0 : -2;
}

int ggr_gemv_multi(const ggr_matrix *mats, int count, const float *x, int64_t m, int64_t k, float *y,
                   int act, int threads) {
    const int64_t t0 = now_ns();
    const int rc = gemv_multi(mats, count, x, m, k, y, act, threads);
    __atomic_fetch_add(&kernel_ns, now_ns() - t0, __ATOMIC_RELAXED);
    return rc;
}

int ggr_gemv(int type, const uint8_t *w, int64_t row_bytes, int64_t n, const float *x, int64_t m,
             int64_t k, float *y, int threads) {
    const ggr_matrix mat = {type, 0, w, row_bytes, n};
    return ggr_gemv_multi(&mat, 1, x, m, k, y, ACT_NONE, threads);
}

/* out (H, dv) for one query position: see attend.h. Returns 0, -1 on bad sizes, -2 no memory. */
int ggr_attend(const attend_job *a, float *out, int threads) {
    const int64_t t0 = now_ns();
    const int rc = attend_run(a, out, threads);
    __atomic_fetch_add(&kernel_ns, now_ns() - t0, __ATOMIC_RELAXED);
    return rc;
}

#include "block_step.h"

int ggr_block_step(const ggr_block *b, float *x, int64_t m, const float *c, const float *s, void *const *k_caches,
                   void *const *v_caches, int kv_type, int64_t n_ctx, const int64_t *pos, int threads) {
    const int64_t t0 = now_ns();
    const int rc = block_step(b, x, m, c, s, k_caches, v_caches, kv_type, n_ctx, pos, threads < 1 ? 1 : threads);
    __atomic_fetch_add(&kernel_ns, now_ns() - t0, __ATOMIC_RELAXED);
    return rc;
}

int ggr_experts_step(const ggr_experts *s, const float *x, const int32_t *ids, const float *wts, int k, float *out,
                     int threads) {
    const int64_t t0 = now_ns();
    const int rc = experts_step(s, x, ids, wts, k, out, threads < 1 ? 1 : threads);
    __atomic_fetch_add(&kernel_ns, now_ns() - t0, __ATOMIC_RELAXED);
    return rc;
}

int ggr_route(const float *logits, int64_t t, int64_t e, const ggr_routing *r, int32_t *ids, float *w) {
    return route_rows(logits, t, e, r, ids, w);
}

int ggr_moe_step(const ggr_experts *s, const ggr_matrix *router, const ggr_routing *r, const float *x, float *out,
                 int32_t *ids, float *w, int threads) {
    const int64_t t0 = now_ns();
    const int rc = moe_step(s, router, r, x, out, ids, w, threads < 1 ? 1 : threads);
    __atomic_fetch_add(&kernel_ns, now_ns() - t0, __ATOMIC_RELAXED);
    return rc;
}

int ggr_rms_norm(const float *x, int64_t rows, int64_t d, int64_t ldx, const float *w, float eps, float *y) {
    if (rows < 0 || d < 1 || ldx < d) return -1;
    rms_norm_rows(x, rows, d, ldx, w, eps, y);
    return 0;
}

int ggr_rope(const float *x, int64_t rows, int64_t d, int64_t n_rot, const float *c, const float *s, int neox,
             float *y) {
    if (rows < 0 || n_rot < 0 || n_rot % 2 || n_rot > d) return -1;
    rope_rows(x, rows, d, n_rot, c, s, neox, y);
    return 0;
}

int ggr_dequant(int type, const uint8_t *src, int64_t n_blocks, float *dst, int threads) {
    const format_ops *f = ops(type);
    if (!f || !f->dequant) return -1;
    const int64_t t0 = now_ns();
    f->dequant(src, n_blocks, dst, threads < 1 ? 1 : threads);
    __atomic_fetch_add(&kernel_ns, now_ns() - t0, __ATOMIC_RELAXED);
    return 0;
}
