/* One transformer block's decode step (one token each of m sequences) in a single call: what the Python decoder
 * does op by op for one position, with the same kernels, so the result is bit-identical to it.
 *
 *   h = rms_norm(x, attn_norm)
 *   q | k | v = h @ [Wq; Wk; Wv].T (+ bias)            gemv_multi, as QLinearGroup
 *   q, k = qk_norm(q), qk_norm(k)                        whole projection (2) or per head (1)
 *   q, k = rope(q), rope(k)                              cos / sin of this position
 *   K[:, pos] = k, V[:, pos] = v                         the layer's cache (Hkv, n_ctx, D), float32
 *                                                        or IEEE half (kv_type 0 / 1, rounded to nearest)
 *   a = attend(q, K[:, lo:pos+1], V[:, lo:pos+1])        lo = pos - window + 1 with a window
 *   h = post_attn_norm(a @ Wo.T (+ bias))
 *   x = x + h (* residual_scale)
 * and, when `act` is set (a dense gated FFN; else the caller runs the FFN from Python):
 *   h = post_ffw_norm(down(act(gate(n)) * up(n))), n = rms_norm(x, ffn_norm)
 *   x = x + h (* residual_scale)
 * Any norm pointer may be NULL (no such norm). x (d) is updated in place.
 * The routed experts of a sparse FFN have their own call (experts_step, below).
 * Included by ggr.c after the gemv driver (gemv_multi) and the row ops.
 */
#ifndef GGR_BLOCK_STEP_H
#define GGR_BLOCK_STEP_H

typedef struct {
    int64_t d, n_head, n_kv, dk, dv, n_rot, window, n_ff;
    int32_t neox, qk_norm;        /* qk_norm: 0 none, 1 per head (Dk), 2 over the whole projection */
    int32_t n_qkv, act;           /* n_qkv: 1 (a fused QKV matrix) or 3; act 0: no FFN in this call */
    float eps, attn_scale, attn_cap, residual_scale;      /* residual_scale 0: none */
    const float *attn_norm, *qkv_bias, *q_norm, *k_norm, *o_bias, *post_attn_norm;
    const float *ffn_norm, *post_ffw_norm;
    ggr_matrix qkv[3], o, gate_up[2], down;
} ggr_block;

/* x += h (* scale): the residual add of the Python decoder (x + (h * s if s else h)) */
INLINE void residual_add(float *x, const float *h, int64_t d, float scale) {
    for (int64_t i = 0; i < d; i++) x[i] += scale != 0.0f ? h[i] * scale : h[i];
}

INLINE void add_bias(float *y, const float *b, int64_t n) {
    if (b)
        for (int64_t i = 0; i < n; i++) y[i] += b[i];
}

/* n floats into a cache row of type kv_type (0 float32, 1 IEEE half) at element `at` */
INLINE void store_row(void *cache, int kv_type, int64_t at, const float *src, int64_t n) {
    if (kv_type == 0) {
        memcpy((float *)cache + at, src, sizeof(float) * (size_t)n);
        return;
    }
    uint16_t *dst = (uint16_t *)cache + at;
    int64_t i = 0;
#ifdef __F16C__
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < n; i++) dst[i] = f32_to_f16(src[i]);
}

/* m rows, row r of its own sequence: cos / sin row r, cache k_caches[r] / v_caches[r], position
 * pos[r]. The projections take all m rows in one gemv_multi (each row computed as it is alone);
 * norms, rope, the cache write and attention run per row. */
static int block_attention(const ggr_block *b, float *x, int64_t m, const float *c, const float *s,
                           void *const *k_caches, void *const *v_caches, int kv_type, int64_t n_ctx,
                           const int64_t *pos, float *h, float *qkv, float *att, int threads) {
    const int64_t nq = b->n_head * b->dk, nk = b->n_kv * b->dk, nv = b->n_kv * b->dv, nt = nq + nk + nv;
    const int64_t d = b->d, half = b->n_rot / 2, na = b->n_head * b->dv, es = kv_type ? 2 : 4;
    for (int64_t r = 0; r < m; r++) rms_norm_row(x + r * d, d, b->attn_norm, b->eps, h + r * d);
    int rc = gemv_multi(b->qkv, b->n_qkv, h, m, d, qkv, ACT_NONE, threads);
    if (rc) return rc;
    for (int64_t r = 0; r < m && !rc; r++) {
        float *q = qkv + r * nt, *k = q + nq, *v = k + nk;
        add_bias(q, b->qkv_bias, nt);
        if (b->qk_norm == 2) {
            rms_norm_rows(q, 1, nq, nq, b->q_norm, b->eps, q);
            rms_norm_rows(k, 1, nk, nk, b->k_norm, b->eps, k);
        } else if (b->qk_norm == 1) {
            rms_norm_rows(q, b->n_head, b->dk, b->dk, b->q_norm, b->eps, q);
            rms_norm_rows(k, b->n_kv, b->dk, b->dk, b->k_norm, b->eps, k);
        }
        rope_rows(q, b->n_head, b->dk, b->n_rot, c + r * half, s + r * half, b->neox, q);
        rope_rows(k, b->n_kv, b->dk, b->n_rot, c + r * half, s + r * half, b->neox, k);
        for (int64_t g = 0; g < b->n_kv; g++) {
            store_row(k_caches[r], kv_type, (g * n_ctx + pos[r]) * b->dk, k + g * b->dk, b->dk);
            store_row(v_caches[r], kv_type, (g * n_ctx + pos[r]) * b->dv, v + g * b->dv, b->dv);
        }
        const int64_t lo = b->window > 0 && pos[r] - b->window + 1 > 0 ? pos[r] - b->window + 1 : 0;
        const attend_job job = {q, (const uint8_t *)k_caches[r] + lo * b->dk * es,
                                (const uint8_t *)v_caches[r] + lo * b->dv * es, b->n_head, b->n_kv, b->dk, b->dv,
                                pos[r] + 1 - lo, n_ctx * b->dk, b->dk, n_ctx * b->dv, b->dv, kv_type,
                                b->attn_scale, b->attn_cap};
        rc = attend_run(&job, att + r * na, threads);
    }
    if (rc || (rc = gemv_multi(&b->o, 1, att, m, na, h, ACT_NONE, threads))) return rc;
    for (int64_t r = 0; r < m; r++) {
        add_bias(h + r * d, b->o_bias, d);
        if (b->post_attn_norm) rms_norm_rows(h + r * d, 1, d, d, b->post_attn_norm, b->eps, h + r * d);
        residual_add(x + r * d, h + r * d, d, b->residual_scale);
    }
    return 0;
}

static int block_ffn(const ggr_block *b, float *x, int64_t m, float *h, float *f, int threads) {
    const int64_t d = b->d;
    for (int64_t r = 0; r < m; r++) rms_norm_row(x + r * d, d, b->ffn_norm, b->eps, h + r * d);
    int rc = gemv_multi(b->gate_up, 2, h, m, d, f, b->act, threads);
    if (rc || (rc = gemv_multi(&b->down, 1, f, m, b->n_ff, h, ACT_NONE, threads))) return rc;
    for (int64_t r = 0; r < m; r++) {
        if (b->post_ffw_norm) rms_norm_rows(h + r * d, 1, d, d, b->post_ffw_norm, b->eps, h + r * d);
        residual_add(x + r * d, h + r * d, d, b->residual_scale);
    }
    return 0;
}

/* The routed experts of one token (a sparse FFN's decode step; the router runs in Python):
 *   out = sum_j w_j * down_e(act(gate_e(x)) * up_e(x)),  e = ids[j], j = 0 .. k-1 in the order given
 * summed as the Python decoder sums them (out = y_0 w_0, then out += y_j w_j). Each stack is
 * given as its expert 0 (w: the stack's first byte, n: rows per expert); expert e's rows start
 * e * n * row_bytes further on. */
typedef struct {
    ggr_matrix gate, up, down;
    int64_t n_expert;
    int32_t act;
} ggr_experts;

INLINE ggr_matrix expert_of(ggr_matrix m, int64_t e) {
    m.w += e * m.n * m.row_bytes;
    return m;
}

static int experts_step(const ggr_experts *s, const float *x, const int32_t *ids, const float *wts, int k,
                        float *out, int threads) {
    const int64_t d = s->down.n, f = s->up.n;
    if (k < 1 || s->gate.n != f || s->act <= ACT_NONE || s->act > ACT_GELU_TANH) return -1;
    for (int j = 0; j < k; j++)
        if (ids[j] < 0 || ids[j] >= s->n_expert) return -1;
    float *buf = malloc(sizeof(float) * (size_t)(f + d));
    if (!buf) return -2;
    float *h = buf, *y = buf + f;
    int rc = 0;
    for (int j = 0; j < k && !rc; j++) {
        const ggr_matrix gate_up[2] = {expert_of(s->gate, ids[j]), expert_of(s->up, ids[j])};
        const ggr_matrix down = expert_of(s->down, ids[j]);
        rc = gemv_multi(gate_up, 2, x, 1, d, h, s->act, threads);
        if (!rc) rc = gemv_multi(&down, 1, h, 1, f, y, ACT_NONE, threads);
        for (int64_t i = 0; !rc && i < d; i++) out[i] = j ? out[i] + y[i] * wts[j] : y[i] * wts[j];
    }
    free(buf);
    return rc;
}

/* One token's routing, as gguf_runtime.moe.route for gating 1 (softmax) or 2 (sigmoid):
 *   p = softmax(l) | sigmoid(l) over the e router logits l (float32, expf; the softmax subtracts
 *   the max and sums in expert order), selection by p + bias (bias may be NULL) best first,
 *   ties to the lower id; w_j = p[id_j], then with `norm` w /= max(sum w, 2^-14) (ggml's clamp),
 *   then w *= scale. p: scratch of e floats. */
typedef struct {
    int32_t k, gating, norm;
    float scale;
    const float *bias;      /* (e,) selection bias (DeepSeek-V3's exp_probs_b) or NULL */
} ggr_routing;

static int route_row(const float *l, int64_t e, const ggr_routing *r, float *p, int32_t *ids, float *w) {
    if (r->k < 1 || r->k > e || (r->gating != 1 && r->gating != 2)) return -1;
    if (r->gating == 1) {
        float top = l[0], sum = 0.0f;
        for (int64_t j = 1; j < e; j++) top = l[j] > top ? l[j] : top;
        for (int64_t j = 0; j < e; j++) sum += (p[j] = expf(l[j] - top));
        for (int64_t j = 0; j < e; j++) p[j] /= sum;
    } else {
        for (int64_t j = 0; j < e; j++) p[j] = 1.0f / (1.0f + expf(-l[j]));
    }
    float total = 0.0f;
    for (int s = 0; s < r->k; s++) {            /* k small: one scan per pick */
        int64_t best = -1;
        float best_score = 0.0f;
        for (int64_t j = 0; j < e; j++) {
            int taken = 0;
            for (int t = 0; t < s; t++) taken |= ids[t] == j;
            const float score = r->bias ? p[j] + r->bias[j] : p[j];
            if (!taken && (best < 0 || score > best_score)) best = j, best_score = score;
        }
        ids[s] = (int32_t)best;
        total += (w[s] = p[best]);
    }
    const float div = total > 6.103515625e-5f ? total : 6.103515625e-5f;
    for (int s = 0; s < r->k; s++) {
        if (r->norm) w[s] /= div;
        if (r->scale != 1.0f) w[s] *= r->scale;
    }
    return 0;
}

/* t rows of logits (t, e) -> ids (t, k) and weights (t, k). Returns 0, -1 on bad sizes, -2 no memory. */
static int route_rows(const float *logits, int64_t t, int64_t e, const ggr_routing *r, int32_t *ids, float *w) {
    float *p = malloc(sizeof(float) * (size_t)(e > 0 ? e : 1));
    if (!p) return -2;
    int rc = e < 1 ? -1 : 0;
    for (int64_t i = 0; i < t && !rc; i++) rc = route_row(logits + i * e, e, r, p, ids + i * r->k, w + i * r->k);
    free(p);
    return rc;
}

/* A sparse FFN's routed part for one token in one call: logits = router @ x (gemv_multi, as
 * the router's own decode call), route_row, the k experts in expert-id order (as
 * moe.MoE._routed_one orders them), experts_step. ids / w (k each) receive the choice. */
static int moe_step(const ggr_experts *s, const ggr_matrix *router, const ggr_routing *r, const float *x,
                    float *out, int32_t *ids, float *w, int threads) {
    const int64_t e = router->n, d = s->down.n;
    if (e != s->n_expert || r->k < 1 || r->k > e) return -1;
    float *buf = malloc(sizeof(float) * (size_t)(2 * e));
    if (!buf) return -2;
    int rc = gemv_multi(router, 1, x, 1, d, buf, ACT_NONE, threads);
    if (!rc) rc = route_row(buf, e, r, buf + e, ids, w);
    for (int a = 1; !rc && a < r->k; a++)        /* insertion sort by id, weights along */
        for (int b = a; b > 0 && ids[b - 1] > ids[b]; b--) {
            const int32_t ti = ids[b]; ids[b] = ids[b - 1]; ids[b - 1] = ti;
            const float tw = w[b]; w[b] = w[b - 1]; w[b - 1] = tw;
        }
    free(buf);
    return rc ? rc : experts_step(s, x, ids, w, r->k, out, threads);
}

/* m rows of m sequences (see block_attention). Returns 0, -1 on bad sizes (as gemv_multi /
 * attend_run), -2 without memory. */
static int block_step(const ggr_block *b, float *x, int64_t m, const float *c, const float *s,
                      void *const *k_caches, void *const *v_caches, int kv_type, int64_t n_ctx,
                      const int64_t *pos, int threads) {
    if (m < 1 || kv_type < 0 || kv_type > 1 || b->n_qkv < 1 || b->n_qkv > 3 || b->act < ACT_NONE || b->act > ACT_GELU_TANH)
        return -1;
    for (int64_t r = 0; r < m; r++)
        if (pos[r] < 0 || pos[r] >= n_ctx) return -1;
    const int64_t n_qkv = (b->n_head + 2 * b->n_kv) * (b->dk > b->dv ? b->dk : b->dv);
    const int64_t n_h = b->d > b->n_ff ? b->d : b->n_ff;
    float *buf = malloc(sizeof(float) * (size_t)(m * (2 * n_h + n_qkv + b->n_head * b->dv)));
    if (!buf) return -2;
    float *h = buf, *f = buf + m * n_h, *qkv = f + m * n_h, *att = qkv + m * n_qkv;
    int rc = block_attention(b, x, m, c, s, k_caches, v_caches, kv_type, n_ctx, pos, h, qkv, att, threads);
    if (!rc && b->act != ACT_NONE) rc = block_ffn(b, x, m, h, f, threads);
    free(buf);
    return rc;
}

#endif
