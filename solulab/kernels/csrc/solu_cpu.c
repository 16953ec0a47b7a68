/* Fused SoLU-family activations on the CPU: one pass per row block forward, recomputing backward.
 *
 * Layout: x is [rows, d] float32, contiguous; each row has `blocks` blocks of width w = d / blocks.
 * kind: 0 solu, 1 solu_ln, 2 gelu_ln, 3 exp_ln. stats is [rows, blocks, 4]:
 * (max, sum of exp, LayerNorm mean, LayerNorm rstd); unused entries are left as they are.
 * Gradients are derived in solulab/kernels/fused.py's docstring. Built with -Ofast so that the
 * compiler vectorises expf (glibc's libmvec); inputs are finite, so fast-math changes nothing
 * but the rounding, which the tests bound.
 */
#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { SOLU = 0, SOLU_LN = 1, GELU_LN = 2, EXP_LN = 3 };

static inline float gelu(float v) { return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)); }

static inline float gelu_grad(float v) {
    return 0.5f * (1.0f + erff(v * 0.70710678118654752f))
         + v * expf(-0.5f * v * v) * 0.39894228040143268f;
}

/* y[i] = nonlinearity(x[i]) and the softmax statistics (max, sum) in st. */
static void nonlinearity(int kind, const float *x, float *y, int w, float *st) {
    if (kind == GELU_LN) {
        for (int i = 0; i < w; i++) y[i] = gelu(x[i]);
        return;
    }
    float m = x[0];
    for (int i = 1; i < w; i++) m = x[i] > m ? x[i] : m;
    float s = 0.0f;
    for (int i = 0; i < w; i++) {
        float e = expf(x[i] - m);
        s += e;
        y[i] = x[i] * e;
    }
    st[0] = m;
    st[1] = s;
    if (kind == EXP_LN) return;
    float inv = 1.0f / s;
    for (int i = 0; i < w; i++) y[i] *= inv;
}

/* The same from saved statistics, keeping exp(x - max) (times 1 / sum for SoLU) in e. */
static void recompute(int kind, const float *x, float *y, float *e, int w, const float *st) {
    if (kind == GELU_LN) {
        for (int i = 0; i < w; i++) y[i] = gelu(x[i]);
        return;
    }
    float m = st[0], scale = kind == EXP_LN ? 1.0f : 1.0f / st[1];
    for (int i = 0; i < w; i++) {
        e[i] = expf(x[i] - m) * scale;
        y[i] = x[i] * e[i];
    }
}

void solu_forward(const float *x, const float *weight, const float *bias, float *out,
                  float *stats, int64_t rows, int64_t d, int blocks, int kind, float eps,
                  int threads) {
    int w = (int)(d / blocks);
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int blk = 0; blk < blocks; blk++) {
            const float *xr = x + r * d + (int64_t)blk * w;
            float *yr = out + r * d + (int64_t)blk * w;
            float *st = stats + (r * blocks + blk) * 4;
            nonlinearity(kind, xr, yr, w, st);
            if (kind == SOLU) continue;
            float sum = 0.0f;  /* -Ofast sums in vector lanes: pairwise-like accuracy */
            for (int i = 0; i < w; i++) sum += yr[i];
            float mean = sum / w;
            float var = 0.0f;
            for (int i = 0; i < w; i++) { float c = yr[i] - mean; var += c * c; }
            float rstd = 1.0f / sqrtf(var / w + eps);
            const float *wr = weight + (int64_t)blk * w, *br = bias + (int64_t)blk * w;
            for (int i = 0; i < w; i++) yr[i] = (yr[i] - mean) * rstd * wr[i] + br[i];
            st[2] = mean;
            st[3] = rstd;
        }
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
        float *y = malloc(sizeof(float) * w), *gy = malloc(sizeof(float) * w);
        float *e = malloc(sizeof(float) * w);
        #pragma omp for schedule(static)
        for (int64_t chunk = 0; chunk < chunks; chunk++) {
          float *gw = grad_weight_parts + chunk * d, *gb = grad_bias_parts + chunk * d;
          if (kind != SOLU) {
              memset(gw, 0, sizeof(float) * d);
              memset(gb, 0, sizeof(float) * d);
          }
          int64_t end = (chunk + 1) * per_chunk < rows ? (chunk + 1) * per_chunk : rows;
          for (int64_t r = chunk * per_chunk; r < end; r++) {
            for (int blk = 0; blk < blocks; blk++) {
                int64_t off = r * d + (int64_t)blk * w;
                const float *xr = x + off, *g = grad + off;
                const float *st = stats + (r * blocks + blk) * 4;
                float *gx = grad_x + off;
                if (kind != GELU_LN) recompute(kind, xr, y, e, w, st);
                if (kind == SOLU) {
                    memcpy(gy, g, sizeof(float) * w);
                } else {
                    float mean = st[2], rstd = st[3];
                    if (kind == GELU_LN) recompute(kind, xr, y, e, w, st);
                    const float *wr = weight + (int64_t)blk * w;
                    float a = 0.0f, c = 0.0f;
                    for (int i = 0; i < w; i++) {
                        float yhat = (y[i] - mean) * rstd;
                        gw[blk * w + i] += g[i] * yhat;
                        gb[blk * w + i] += g[i];
                        float gh = g[i] * wr[i];
                        a += gh;
                        c += gh * yhat;
                        y[i] = yhat;
                        gy[i] = gh;
                    }
                    float am = a / w, cm = c / w;
                    for (int i = 0; i < w; i++) gy[i] = rstd * (gy[i] - am - y[i] * cm);
                }
                if (kind == GELU_LN) {
                    for (int i = 0; i < w; i++) gx[i] = gy[i] * gelu_grad(xr[i]);
                } else if (kind == EXP_LN) {
                    float m = st[0], through_max = 0.0f;
                    int ties = 0;
                    for (int i = 0; i < w; i++) {
                        gx[i] = gy[i] * e[i] * (1.0f + xr[i]);
                        through_max -= gy[i] * xr[i] * e[i];
                        ties += xr[i] == m;
                    }
                    for (int i = 0; i < w; i++)
                        if (xr[i] == m) gx[i] += through_max / ties;
                } else {
                    float dot = 0.0f;  /* e holds softmax(x) here */
                    for (int i = 0; i < w; i++) {
                        float gys = gy[i] * e[i];
                        gx[i] = gys * (1.0f + xr[i]);
                        dot += gys * xr[i];
                    }
                    for (int i = 0; i < w; i++) gx[i] -= e[i] * dot;
                }
            }
          }
        }
        free(y);
        free(gy);
        free(e);
    }
}
