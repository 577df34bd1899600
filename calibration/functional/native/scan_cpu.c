/*
 * CPU recurrences for jetmamba's fp reference model: the Mamba1 selective scan and the Mamba2
 * (SSD) state recurrence, fp32, for calibration and evaluation on machines without a GPU.
 *
 * Semantics are defined by selective_scan_ref / ssd_scan_ref / causal_conv1d_ref in
 * jetmamba/calibration/functional/ (same arguments, same layouts); tests compare them.
 *
 * The causal depthwise convolution (SiLU fused) is here too: it sits between the projections
 * and would otherwise cost several passes of PyTorch elementwise work.
 *
 * Layout: activations are time-major, [batch, seqlen, channels], each row contiguous but rows
 * may be strided (so slices of a projection's output are read in place). The work is split into
 * (batch item, channel block) items run by an OpenMP parallel loop: built with -fopenmp, the
 * library binds to the libgomp PyTorch has already loaded and shares its threads (a separate
 * thread pool would fight PyTorch's spinning OpenMP workers for the cores). The time loop is
 * sequential; the inner loop runs over channels (Mamba1) or the head dimension (Mamba2) so it
 * vectorizes without horizontal sums.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* exp(x) with a Cody-Waite range reduction and a degree-6 polynomial (max rel. error ~2e-7).
 * Written without calls or branches so that the compiler vectorizes the loops that use it:
 * the scan computes one exp per (time, channel, state), which dominates its cost. */
static inline float jm_expf(float x)
{
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    /* round to nearest by the 1.5 * 2^23 trick: vectorizes where roundf does not */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* softplus(x) = max(x, 0) + log(1 + exp(-|x|)), the log by its atanh series in
 * s = u / (2 + u), s <= 1/3 (abs. error < 2e-7); branch-free, so it vectorizes too. */
static inline float jm_softplusf(float x)
{
    const float u = jm_expf(x < 0.0f ? x : -x);
    const float s = u / (2.0f + u), s2 = s * s;
    float p = 1.0f / 13.0f;
    p = p * s2 + 1.0f / 11.0f;
    p = p * s2 + 1.0f / 9.0f;
    p = p * s2 + 1.0f / 7.0f;
    p = p * s2 + 1.0f / 5.0f;
    p = p * s2 + 1.0f / 3.0f;
    p = p * s2 + 1.0f;
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * p;
}

static inline float jm_siluf(float x)
{
    return x / (1.0f + jm_expf(-x));
}

/* ---------------------------------------------------------------- causal depthwise conv1d */

typedef struct {
    int64_t batch, seqlen, channels, width;
    const float *x;  int64_t x_bs, x_ts;   /* [batch, seqlen, channels] */
    const float *w_t;                      /* [width, channels]: weight transposed */
    const float *bias;                     /* [channels], or NULL */
    const float *state_in;                 /* [batch, width-1, channels]: inputs before x */
    float *y;                              /* [batch, seqlen, channels] */
    float *state_out;                      /* [batch, width-1, channels]: the last width-1 inputs */
    int32_t silu;
} jm_conv_args;

/* y[t,c] = act(bias[c] + sum_k w[c,k] xs[t+k, c]) over xs = state_in ++ x.  Returns 0. */
static int conv_item(const jm_conv_args *a, int64_t b, int64_t c_begin, int64_t c_end)
{
    const int64_t K = a->width, S = K - 1, C = a->channels, L = a->seqlen;
    const float *st = a->state_in + b * S * C;
    for (int64_t t = 0; t < L; ++t) {
        float *yp = a->y + (b * L + t) * C;
        for (int64_t c = c_begin; c < c_end; ++c)
            yp[c] = a->bias != NULL ? a->bias[c] : 0.0f;
        for (int64_t k = 0; k < K; ++k) {
            const int64_t r = t + k - S; /* row of x; negative: row S + r of the state */
            const float *src = r < 0 ? st + (S + r) * C : a->x + b * a->x_bs + r * a->x_ts;
            const float *wk = a->w_t + k * C;
            for (int64_t c = c_begin; c < c_end; ++c)
                yp[c] += wk[c] * src[c];
        }
        if (a->silu)
            for (int64_t c = c_begin; c < c_end; ++c)
                yp[c] = jm_siluf(yp[c]);
    }
    float *so = a->state_out + b * S * C;
    for (int64_t j = 0; j < S; ++j) {
        const int64_t r = L - S + j;
        const float *src = r < 0 ? st + (S + r) * C : a->x + b * a->x_bs + r * a->x_ts;
        for (int64_t c = c_begin; c < c_end; ++c)
            so[j * C + c] = src[c];
    }
    return 0;
}

/* ---------------------------------------------------------------- Mamba1 selective scan */

typedef struct {
    int64_t batch, seqlen, dim, dstate;
    const float *x;  int64_t x_bs, x_ts;   /* [batch, seqlen, dim] conv output */
    const float *dt; int64_t dt_bs, dt_ts; /* [batch, seqlen, dim] step (raw when dt_softplus) */
    const float *dt_bias;                  /* [dim], or NULL */
    int32_t dt_softplus;                   /* dt <- softplus(dt + dt_bias) */
    const float *z;  int64_t z_bs, z_ts;   /* [batch, seqlen, dim] gate, or NULL */
    const float *B;  int64_t B_bs, B_ts;   /* [batch, seqlen, dstate] */
    const float *C;  int64_t C_bs, C_ts;   /* [batch, seqlen, dstate] */
    const float *A_t;                      /* [dstate, dim]: A transposed, channel-contiguous */
    const float *D;                        /* [dim], or NULL */
    float *y;        int64_t y_bs, y_ts;   /* [batch, seqlen, dim] output */
    float *h;                              /* [batch, dim, dstate]: initial state in, final out */
} jm_scan1_args;

/* Channels per block: a compile-time width so the inner loops have constant trip counts, the
 * accumulators stay in vector registers and no aliasing checks are emitted. Tails are padded. */
#ifndef JM_W
#define JM_W 32
#endif

/* dt[d] <- softplus(dt[d] + dt_bias[d]) when asked; then
 * h[d,n] <- exp(dt[d] A[d,n]) h[d,n] + dt[d] x[d] B[n];  y[d] = sum_n h[d,n] C[n] + D[d] x[d];
 * y[d] *= silu(z[d]).  Returns 0, or 1 when out of memory. */
static int scan1_item(const jm_scan1_args *a, int64_t b, int64_t d_begin, int64_t d_end)
{
    const int64_t N = a->dstate;
    float *hl = (float *)malloc(sizeof(float) * (size_t)(2 * N * JM_W));
    if (hl == NULL)
        return 1;
    float *al = hl + N * JM_W; /* this block of A, padded with zeros */
    float *hg = a->h + b * a->dim * N;
    for (int64_t d0 = d_begin; d0 < d_end; d0 += JM_W) {
        const int64_t nd = (d_end - d0) < JM_W ? (d_end - d0) : JM_W;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < JM_W; ++i) {
                hl[n * JM_W + i] = i < nd ? hg[(d0 + i) * N + n] : 0.0f;
                al[n * JM_W + i] = i < nd ? a->A_t[n * a->dim + d0 + i] : 0.0f;
            }
        for (int64_t t = 0; t < a->seqlen; ++t) {
            const float *xp = a->x + b * a->x_bs + t * a->x_ts + d0;
            const float *dtp = a->dt + b * a->dt_bs + t * a->dt_ts + d0;
            const float *Bp = a->B + b * a->B_bs + t * a->B_ts;
            const float *Cp = a->C + b * a->C_bs + t * a->C_ts;
            float dv[JM_W], dx[JM_W], acc[JM_W];
            /* padded loads first, then unconditional loops the compiler vectorizes (a softplus per
             * channel and step is otherwise as costly as the scan itself); padding lanes have
             * x = 0 and A = 0, so their state stays 0 whatever their dt is */
            for (int64_t i = 0; i < JM_W; ++i) {
                dv[i] = i < nd ? dtp[i] + (a->dt_bias != NULL ? a->dt_bias[d0 + i] : 0.0f) : 0.0f;
                dx[i] = i < nd ? xp[i] : 0.0f;
                acc[i] = 0.0f;
            }
            if (a->dt_softplus)
                for (int64_t i = 0; i < JM_W; ++i)
                    dv[i] = jm_softplusf(dv[i]);
            for (int64_t i = 0; i < JM_W; ++i)
                dx[i] *= dv[i];
            for (int64_t n = 0; n < N; ++n) {
                const float bn = Bp[n], cn = Cp[n];
                float *hn = hl + n * JM_W;
                const float *an = al + n * JM_W;
                for (int64_t i = 0; i < JM_W; ++i) {
                    const float hv = jm_expf(dv[i] * an[i]) * hn[i] + dx[i] * bn;
                    hn[i] = hv;
                    acc[i] += hv * cn;
                }
            }
            float *yp = a->y + b * a->y_bs + t * a->y_ts + d0;
            const float *zp = a->z != NULL ? a->z + b * a->z_bs + t * a->z_ts + d0 : NULL;
            for (int64_t i = 0; i < nd; ++i) {
                float v = acc[i];
                if (a->D != NULL)
                    v += a->D[d0 + i] * xp[i];
                if (zp != NULL)
                    v *= jm_siluf(zp[i]);
                yp[i] = v;
            }
        }
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < nd; ++i)
                hg[(d0 + i) * N + n] = hl[n * JM_W + i];
    }
    free(hl);
    return 0;
}

/* ---------------------------------------------------------------- Mamba2 SSD recurrence */

typedef struct {
    int64_t batch, seqlen, nheads, headdim, ngroups, dstate;
    const float *x;  int64_t x_bs, x_ts;   /* [batch, seqlen, nheads*headdim] */
    const float *dt; int64_t dt_bs, dt_ts; /* [batch, seqlen, nheads] after softplus and clamp */
    const float *B;  int64_t B_bs, B_ts;   /* [batch, seqlen, ngroups*dstate] */
    const float *C;  int64_t C_bs, C_ts;   /* [batch, seqlen, ngroups*dstate] */
    const float *A;                        /* [nheads] */
    const float *D;                        /* [nheads], or NULL */
    float *y;        int64_t y_bs, y_ts;   /* [batch, seqlen, nheads*headdim] output */
    float *h;                              /* [batch, nheads, headdim, dstate]: in and out */
} jm_ssd_args;

/* Per head (group g = head / (nheads/ngroups)):
 * h[p,n] <- exp(dt A) h[p,n] + dt x[p] B[g,n];  y[p] = sum_n h[p,n] C[g,n] + D x[p]. */
static int ssd_item(const jm_ssd_args *a, int64_t b, int64_t head_begin, int64_t head_end)
{
    const int64_t P = a->headdim, N = a->dstate, heads_per_group = a->nheads / a->ngroups;
    float *hl = (float *)malloc(sizeof(float) * (size_t)(N * JM_W));
    if (hl == NULL)
        return 1;
    for (int64_t head = head_begin; head < head_end; ++head) {
        const int64_t g = head / heads_per_group;
        float *hg = a->h + (b * a->nheads + head) * P * N;
        const float Ah = a->A[head], Dh = a->D != NULL ? a->D[head] : 0.0f;
        for (int64_t p0 = 0; p0 < P; p0 += JM_W) {
            const int64_t np = (P - p0) < JM_W ? (P - p0) : JM_W;
            for (int64_t n = 0; n < N; ++n)
                for (int64_t i = 0; i < JM_W; ++i)
                    hl[n * JM_W + i] = i < np ? hg[(p0 + i) * N + n] : 0.0f;
            for (int64_t t = 0; t < a->seqlen; ++t) {
                const float dtv = a->dt[b * a->dt_bs + t * a->dt_ts + head];
                const float dA = jm_expf(dtv * Ah);
                const float *xp = a->x + b * a->x_bs + t * a->x_ts + head * P + p0;
                const float *Bp = a->B + b * a->B_bs + t * a->B_ts + g * N;
                const float *Cp = a->C + b * a->C_bs + t * a->C_ts + g * N;
                float xd[JM_W], acc[JM_W];
                for (int64_t i = 0; i < JM_W; ++i) {
                    xd[i] = i < np ? dtv * xp[i] : 0.0f;
                    acc[i] = 0.0f;
                }
                for (int64_t n = 0; n < N; ++n) {
                    const float bn = Bp[n], cn = Cp[n];
                    float *hn = hl + n * JM_W;
                    for (int64_t i = 0; i < JM_W; ++i) {
                        const float hv = dA * hn[i] + xd[i] * bn;
                        hn[i] = hv;
                        acc[i] += hv * cn;
                    }
                }
                float *yp = a->y + b * a->y_bs + t * a->y_ts + head * P + p0;
                for (int64_t i = 0; i < np; ++i)
                    yp[i] = acc[i] + Dh * xp[i];
            }
            for (int64_t n = 0; n < N; ++n)
                for (int64_t i = 0; i < np; ++i)
                    hg[(p0 + i) * N + n] = hl[n * JM_W + i];
        }
    }
    free(hl);
    return 0;
}

/* ---------------------------------------------------------------- entry points */

/* Run item(args, b, lo, hi) over every batch item and block of `block` channels of `width`, on
 * up to `threads` OpenMP threads. Returns the number of items that failed (out of memory). */
#define JM_RUN_ITEMS(item, args, batch, width, block, threads)                                \
    do {                                                                                     \
        const int64_t nblocks_ = ((width) + (block)-1) / (block);                           \
        const int64_t nitems_ = (batch) * nblocks_;                                          \
        int failed_ = 0;                                                                     \
        _Pragma("omp parallel for schedule(static) num_threads(threads) reduction(+ : failed_) if (threads > 1)") \
        for (int64_t it = 0; it < nitems_; ++it) {                                           \
            const int64_t b_ = it / nblocks_, lo_ = (it % nblocks_) * (block);               \
            const int64_t hi_ = lo_ + (block) < (width) ? lo_ + (block) : (width);           \
            failed_ += item(args, b_, lo_, hi_);                                             \
        }                                                                                    \
        return failed_;                                                                      \
    } while (0)

static int64_t jm_block(int64_t width, int64_t batch, int threads, int64_t align)
{
    /* about one item per thread and batch item, in multiples of `align` */
    int64_t per = (batch * width + threads - 1) / threads;
    if (per > width)
        per = width;
    per = (per + align - 1) / align * align;
    return per < align ? align : per;
}

int jm_selective_scan_f32(const jm_scan1_args *a, int threads)
{
    const int64_t block = jm_block(a->dim, a->batch, threads, JM_W);
    JM_RUN_ITEMS(scan1_item, a, a->batch, a->dim, block, threads);
}

int jm_ssd_scan_f32(const jm_ssd_args *a, int threads)
{
    const int64_t block = jm_block(a->nheads, a->batch, threads, 1);
    JM_RUN_ITEMS(ssd_item, a, a->batch, a->nheads, block, threads);
}

int jm_causal_conv1d_f32(const jm_conv_args *a, int threads)
{
    const int64_t block = jm_block(a->channels, a->batch, threads, 16);
    JM_RUN_ITEMS(conv_item, a, a->batch, a->channels, block, threads);
}
