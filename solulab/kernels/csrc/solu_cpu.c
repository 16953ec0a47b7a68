/* Fused SoLU-family activations on the CPU: a few vectorised passes over each row block forward,
 * recomputing backward.
 *
 * Layout: x is [rows, d] float32, contiguous; each row has `blocks` blocks of width w = d / blocks.
 * kind: 0 solu, 1 solu_ln, 2 gelu_ln, 3 exp_ln. stats is [rows, blocks, 4]:
 * (max, sum of exp, LayerNorm mean, LayerNorm rstd); unused entries are left as they are.
 * Gradients are derived in solulab/kernels/fused.py's docstring.
 *
 * The passes use GCC/Clang vector extensions, 8 lanes (AVX2 where the machine has it, two SSE
 * registers or NEON otherwise), with a masked last vector for widths that are not a multiple of
 * 8, and an exp and erf of their own (below). Built without -ffast-math: loading this library
 * must not switch the process to flushing denormals, as -ffast-math's start-up code does.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SOLU = 0, SOLU_LN = 1, GELU_LN = 2, EXP_LN = 3 };
enum { LANES = 8 };
typedef float vf __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(LANES * sizeof(int32_t))));

static const vi IOTA = {0, 1, 2, 3, 4, 5, 6, 7};

static inline vf splat(float a) { return (vf){0} + a; }

/* The LANES floats at p, or the n < LANES there with `fill` after them. */
static inline vf load_n(const float *p, int n, float fill) {
    vf v;
    if (n >= LANES) {
        memcpy(&v, p, sizeof v);
        return v;
    }
    v = splat(fill);
    for (int i = 0; i < n; i++) v[i] = p[i];
    return v;
}

static inline void store_n(float *p, vf v, int n) {
    if (n >= LANES)
        memcpy(p, &v, sizeof v);
    else
        for (int i = 0; i < n; i++) p[i] = v[i];
}

/* v with lanes n and above set to zero. */
static inline vf keep_n(vf v, int n) {
    return n >= LANES ? v : (vf)((vi)v & (IOTA < n));
}

static inline vf vmax(vf a, vf b) {
    vi a_greater = a > b;
    return (vf)((a_greater & (vi)a) | (~a_greater & (vi)b));
}

static inline float hsum(vf v) {
    float s = 0.0f;
    for (int i = 0; i < LANES; i++) s += v[i];
    return s;
}

static inline float hmax(vf v) {
    float m = v[0];
    for (int i = 1; i < LANES; i++) m = v[i] > m ? v[i] : m;
    return m;
}

/* exp(v) for v <= 0. v = n ln2 + r with n the nearest integer (adding 1.5 * 2^23 rounds v / ln2
 * in the float's last bit, and leaves n in the low mantissa bits), ln2 in two parts so that r,
 * |r| <= ln2 / 2, is exact to a few ulp; exp(r) by its Taylor polynomial to degree 6; 2^n built
 * in the exponent bits (their low 9 bits hold n + 127). Below -87.3 the result is that of -87.3,
 * about 1e-38: no denormals. Relative error at most 2.3e-7 on [-87, 0] (against double exp). */
static inline vf vexp(vf v) {
    const float round_bias = 12582912.0f;
    v = vmax(v, splat(-87.3f));
    vf t = v * 1.44269504f + round_bias;
    vf n = t - round_bias;
    vf r = v - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    vf p = r * (1.0f / 720) + (1.0f / 120);
    p = p * r + (1.0f / 24);
    p = p * r + (1.0f / 6);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * (vf)(((vi)t + 127) << 23);
}

/* erf(v) by Abramowitz & Stegun 7.1.26 on |v| (absolute error below 1.5e-7), sign restored. */
static inline vf verf(vf v) {
    const vi sign = (vi){0} + INT32_MIN;
    vf a = (vf)((vi)v & ~sign);
    vf t = 1.0f / (1.0f + 0.3275911f * a);
    vf poly = (((1.061405429f * t - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t;
    vf r = 1.0f - (poly + 0.254829592f) * t * vexp(-a * a);
    return (vf)((vi)r | ((vi)v & sign));
}

/* GELU, exact form: v * Phi(v), Phi the standard normal CDF; and its derivative. */
static inline vf vgelu(vf v) { return 0.5f * v * (1.0f + verf(v * 0.70710678118654752f)); }

static inline vf vgelu_grad(vf v) {
    return 0.5f * (1.0f + verf(v * 0.70710678118654752f))
         + v * vexp(-0.5f * v * v) * 0.39894228040143268f;
}

/* t = x * exp(x - max) for the softmax kinds (max and sum of exp into st[0], st[1]), gelu(x)
 * for GELU_LN. Returns the sum of t. */
static float nonlinearity(int kind, const float *x, float *t, int w, float *st) {
    if (kind == GELU_LN) {
        vf total = {0};
        for (int i = 0; i < w; i += LANES) {
            int n = w - i;
            vf tv = vgelu(load_n(x + i, n, 0));  /* gelu(0) = 0: no mask needed */
            total += tv;
            store_n(t + i, tv, n);
        }
        return hsum(total);
    }
    vf vm = splat(-INFINITY);
    for (int i = 0; i < w; i += LANES) vm = vmax(vm, load_n(x + i, w - i, -INFINITY));
    float m = hmax(vm);
    vf sum_e = {0}, sum_t = {0};
    for (int i = 0; i < w; i += LANES) {
        int n = w - i;
        vf xv = load_n(x + i, n, m);
        vf e = keep_n(vexp(xv - m), n);
        vf tv = xv * e;
        sum_e += e;
        sum_t += tv;
        store_n(t + i, tv, n);
    }
    st[0] = m;
    st[1] = hsum(sum_e);
    return hsum(sum_t);
}

/* In place, t -> LayerNorm(t / scale) with gain g and bias b, given the sum of t; mean and
 * rstd of t / scale into st[2], st[3], and t / scale itself into mid unless it is NULL. Two
 * passes in t: the variance about the mean, then the output. */
static void layer_norm(float *t, float total, float scale, const float *g, const float *b,
                       int w, float eps, float *st, float *mid) {
    float mean_t = total / w;
    vf ss = {0};
    for (int i = 0; i < w; i += LANES) {
        vf c = load_n(t + i, w - i, mean_t) - mean_t;
        ss += c * c;
    }
    float rstd = 1.0f / sqrtf(hsum(ss) / ((float)w * scale * scale) + eps);
    float k = rstd / scale;
    float inv_scale = 1.0f / scale;
    for (int i = 0; i < w; i += LANES) {
        int n = w - i;
        vf tv = load_n(t + i, n, 0);
        if (mid != NULL) store_n(mid + i, tv * inv_scale, n);
        store_n(t + i, (tv - mean_t) * k * load_n(g + i, n, 0) + load_n(b + i, n, 0), n);
    }
    st[2] = mean_t / scale;
    st[3] = rstd;
}

/* mid, unless NULL, receives the nonlinearity's output (the kinds with a LayerNorm). */
void solu_forward(const float *x, const float *weight, const float *bias, float *out,
                  float *mid, float *stats, int64_t rows, int64_t d, int blocks, int kind,
                  float eps, int threads) {
    int w = (int)(d / blocks);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int blk = 0; blk < blocks; blk++) {
            int64_t off = r * d + (int64_t)blk * w;
            float *yr = out + off, *st = stats + (r * blocks + blk) * 4;
            float total = nonlinearity(kind, x + off, yr, w, st);
            if (kind == SOLU) {
                float inv = 1.0f / st[1];
                for (int i = 0; i < w; i += LANES)
                    store_n(yr + i, load_n(yr + i, w - i, 0) * inv, w - i);
                continue;
            }
            float scale = kind == SOLU_LN ? st[1] : 1.0f;  /* y = t / scale */
            layer_norm(yr, total, scale, weight + (int64_t)blk * w, bias + (int64_t)blk * w, w,
                       eps, st, mid != NULL ? mid + off : NULL);
        }
    }
}

/* Backward of one block in three passes over the row:
 * 1. recompute p, the exp factor of y = x * p (softmax(x) for SoLU, exp(x - max) for EXP_LN),
 *    and with a LayerNorm yhat = (y - mean) * rstd, adding g * yhat and g to the gain and bias
 *    gradients gw, gb, and summing gh = g * w and gh * yhat;
 * 2. gy = d loss / d y (g itself without a LayerNorm, else rstd (gh - mean(gh) - yhat
 *    mean(gh yhat))), gx = gy p (1 + x), and the sum of gy p x;
 * 3. SoLU: gx -= p * that sum; EXP_LN: that sum, negated, goes through the max to its ties.
 * p and yhat are [w] scratch rows. */
static void block_backward(int kind, const float *x, const float *g, const float *wt,
                           const float *st, float *p, float *yhat, float *gx, float *gw,
                           float *gb, int w) {
    int has_ln = kind != SOLU;
    float m = st[0], inv = kind == SOLU || kind == SOLU_LN ? 1.0f / st[1] : 1.0f;
    float mean = st[2], rstd = st[3], a = 0.0f, c = 0.0f;
    if (kind == GELU_LN)  /* y, made yhat below */
        for (int i = 0; i < w; i += LANES) store_n(yhat + i, vgelu(load_n(x + i, w - i, 0)), w - i);
    if (has_ln) {
        vf sum_gh = {0}, sum_gh_yhat = {0};
        for (int i = 0; i < w; i += LANES) {
            int n = w - i;
            vf yv;
            if (kind == GELU_LN) {
                yv = load_n(yhat + i, n, mean);
            } else {
                vf xv = load_n(x + i, n, m), pv = vexp(xv - m) * inv;
                store_n(p + i, pv, n);
                yv = xv * pv;  /* lanes past the end meet g = 0 below */
            }
            vf gv = load_n(g + i, n, 0), yh = (yv - mean) * rstd;
            store_n(gw + i, load_n(gw + i, n, 0) + gv * yh, n);
            store_n(gb + i, load_n(gb + i, n, 0) + gv, n);
            vf gh = gv * load_n(wt + i, n, 0);
            sum_gh += gh;
            sum_gh_yhat += gh * yh;
            store_n(yhat + i, yh, n);
        }
        a = hsum(sum_gh) / w;
        c = hsum(sum_gh_yhat) / w;
    } else {
        for (int i = 0; i < w; i += LANES) {
            int n = w - i;
            store_n(p + i, vexp(load_n(x + i, n, m) - m) * inv, n);
        }
    }
    if (kind == GELU_LN) {
        for (int i = 0; i < w; i += LANES) {
            int n = w - i;
            vf gy = (load_n(g + i, n, 0) * load_n(wt + i, n, 0) - a - load_n(yhat + i, n, 0) * c)
                  * rstd;
            store_n(gx + i, gy * vgelu_grad(load_n(x + i, n, 0)), n);
        }
        return;
    }
    vf sum_gpx = {0};
    for (int i = 0; i < w; i += LANES) {
        int n = w - i;
        vf gy = load_n(g + i, n, 0);
        if (has_ln) gy = (gy * load_n(wt + i, n, 0) - a - load_n(yhat + i, n, 0) * c) * rstd;
        vf xv = load_n(x + i, n, 0), gp = gy * load_n(p + i, n, 0);
        store_n(gx + i, gp * (1.0f + xv), n);
        sum_gpx += gp * xv;
    }
    float dot = hsum(sum_gpx);
    if (kind == EXP_LN) {
        int ties = 0;
        for (int i = 0; i < w; i++) ties += x[i] == m;
        for (int i = 0; i < w; i++)
            if (x[i] == m) gx[i] -= dot / ties;
        return;
    }
    for (int i = 0; i < w; i += LANES) {
        int n = w - i;
        store_n(gx + i, load_n(gx + i, n, 0) - load_n(p + i, n, 0) * dot, n);
    }
}

/* grad_weight_parts and grad_bias_parts are [chunks, d]: chunk c sums rows
 * [c * per_chunk, (c + 1) * per_chunk), so the result does not depend on the thread count. */
void solu_backward(const float *grad, const float *x, const float *weight, const float *stats,
                   float *grad_x, float *grad_weight_parts, float *grad_bias_parts,
                   int64_t rows, int64_t d, int blocks, int kind, int64_t chunks, int threads) {
    int w = (int)(d / blocks);
    int64_t per_chunk = (rows + chunks - 1) / chunks;
    #pragma omp parallel num_threads(threads)
    {
        float *p = malloc(sizeof(float) * w), *yhat = malloc(sizeof(float) * w);
        #pragma omp for schedule(static)
        for (int64_t chunk = 0; chunk < chunks; chunk++) {
            float *gw = NULL, *gb = NULL;  /* no LayerNorm, no gain and bias: SOLU */
            if (kind != SOLU) {
                gw = grad_weight_parts + chunk * d;
                gb = grad_bias_parts + chunk * d;
                memset(gw, 0, sizeof(float) * d);
                memset(gb, 0, sizeof(float) * d);
            }
            int64_t end = (chunk + 1) * per_chunk < rows ? (chunk + 1) * per_chunk : rows;
            for (int64_t r = chunk * per_chunk; r < end; r++) {
                for (int blk = 0; blk < blocks; blk++) {
                    int64_t off = r * d + (int64_t)blk * w, col = (int64_t)blk * w;
                    block_backward(kind, x + off, grad + off, gw ? weight + col : NULL,
                                   stats + (r * blocks + blk) * 4, p, yhat, grad_x + off,
                                   gw ? gw + col : NULL, gb ? gb + col : NULL, w);
                }
            }
        }
        free(p);
        free(yhat);
    }
}
