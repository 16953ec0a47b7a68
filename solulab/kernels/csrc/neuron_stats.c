/* One pass of the neuron collector's bookkeeping over a batch of activations.
 *
 * v is [T, D] float32, row-major (T tokens, D neurons). Threads split the neurons, so every
 * neuron's sums are accumulated in token order whatever the thread count. For each element:
 * moments (sum of v, v^2, v^3, v^4 in double), counts above 0 and above the threshold, the
 * histogram bin (width[d] per neuron, 2 * half bins centred on 0) and whether it is a candidate
 * for the top-k (v >= kth[d]) or for its bin's sample (key[t] ^ mask[d] < bound[d][bin]).
 * Candidates are written as flat indices t * D + d into per-thread segments of `cap` entries;
 * a segment that would overflow sets its count to -1 and the caller takes another path.
 */
#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void batch_extremes(const float *v, int64_t T, int64_t D, float *vmax, float *vmin,
                    int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t d0 = D * tid / nt, d1 = D * (tid + 1) / nt;
        for (int64_t t = 0; t < T; t++) {
            const float *row = v + t * D;
            for (int64_t d = d0; d < d1; d++) {
                float x = row[d];
                vmax[d] = x > vmax[d] ? x : vmax[d];
                vmin[d] = x < vmin[d] ? x : vmin[d];
            }
        }
    }
}

void neuron_bookkeeping(const float *v, int64_t T, int64_t D, const float *width, int half,
                        double *moments, int64_t *n_positive, int64_t *n_above, float threshold,
                        int64_t *counts, const float *kth, const int64_t *keys,
                        const int64_t *mask, const int64_t *bound,
                        int64_t *top, int64_t *n_top, int64_t *samples, int64_t *n_samples,
                        int64_t cap, int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int tid = 0, nt = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        int64_t d0 = D * tid / nt, d1 = D * (tid + 1) / nt;
        int64_t *my_top = top + tid * cap, *my_samples = samples + tid * cap;
        int64_t found_top = 0, found_samples = 0;
        int bins = 2 * half;
        for (int64_t t = 0; t < T; t++) {
            const float *row = v + t * D;
            int64_t key = keys[t];
            for (int64_t d = d0; d < d1; d++) {
                float x = row[d];
                double xd = x, x2 = xd * xd;
                double *m = moments + d * 4;
                m[0] += xd;
                m[1] += x2;
                m[2] += x2 * xd;
                m[3] += x2 * x2;
                n_positive[d] += x > 0.0f;
                n_above[d] += x > threshold;
                int b = (int)floorf(x / width[d]);
                b = b < -half ? -half : (b > half - 1 ? half - 1 : b);
                b += half;
                counts[d * bins + b] += 1;
                if (x >= kth[d]) {
                    if (found_top < cap) my_top[found_top] = t * D + d;
                    found_top++;
                }
                if ((key ^ mask[d]) < bound[d * bins + b]) {
                    if (found_samples < cap) my_samples[found_samples] = t * D + d;
                    found_samples++;
                }
            }
        }
        n_top[tid] = found_top > cap ? -1 : found_top;
        n_samples[tid] = found_samples > cap ? -1 : found_samples;
    }
}
