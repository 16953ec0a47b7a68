/* The neuron collector's pass over a batch of activations (solulab/neurons/stream.py).
 *
 * v is [T, D] float32, row-major (T tokens, D neurons). Threads split the neurons (see
 * stream_batch), so every neuron's sums accumulate in token order whatever the thread count.
 * For each element: moments (sum of v, v^2, v^3, v^4 in double), counts above 0 and above the
 * threshold, the histogram bin (width[d] per neuron, 2 * half bins centred on 0); then the
 * element is offered to the neuron's top-k and to its bin's sample, fixed slots ranked by
 * (-value, position) and (key, position) (solulab/neurons/slots.py): it replaces the worst slot
 * it beats, its window cut from the batch.
 * A neuron's slots are only ever touched by the thread that owns it. The result is the same set
 * of examples in whatever order elements come: the ranking is a total order.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The columns [d0, d1) of D that the calling OpenMP thread owns (all of them outside a team). */
static void my_columns(int64_t D, int64_t *d0, int64_t *d1) {
    int tid = 0, nt = 1;
#ifdef _OPENMP
    tid = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    *d0 = D * tid / nt;
    *d1 = D * (tid + 1) / nt;
}

void batch_extremes(const float *v, int64_t T, int64_t D, float *vmax, float *vmin,
                    int threads) {
    #pragma omp parallel num_threads(threads)
    {
        int64_t d0, d1;
        my_columns(D, &d0, &d1);
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

enum { ROWS = 64, TILE = 16 };

/* Fixed slots: value, position, key (NULL where ranked by value) [groups, cap]; windows
 * ids, acts, other (NULL where none) [groups, cap, window]. */
typedef struct {
    float *value;
    int64_t *position, *key;
    int32_t *ids;
    float *acts, *other;
    int64_t cap;
} Slots;

/* A batch: v and other (the other point, or NULL) [T, D]; tokens, positions, keys [T], where
 * T is sequences of n_pos tokens. */
typedef struct {
    const float *v, *other;
    const int64_t *tokens, *positions, *keys;
    int64_t T, D, n_pos, before, after;
} Batch;

/* Whether an example (value x, key, position) ranks above slot j: a higher value (a smaller key
 * where there are keys), ties broken by the smaller position. Free slots hold -inf, the largest
 * key and position. */
static inline int ranks_above(const Slots *s, float x, int64_t key, int64_t position, int64_t j) {
    if (s->key != NULL && key != s->key[j]) return key < s->key[j];
    if (s->key == NULL && x != s->value[j]) return x > s->value[j];
    return position < s->position[j];
}

static int64_t worst_slot(const Slots *s, int64_t group) {
    int64_t first = group * s->cap, worst = first;
    for (int64_t j = first + 1; j < first + s->cap; j++)
        if (ranks_above(s, s->value[worst], s->key != NULL ? s->key[worst] : 0,
                        s->position[worst], j))
            worst = j;
    return worst;
}

/* Offers element (t, d), value x and key, to a group: it replaces the group's worst slot if it
 * ranks above it, its window cut from the batch. Returns the group's worst slot after. */
static int64_t offer(Slots *s, int64_t group, const Batch *b, int64_t t, int64_t d, float x,
                     int64_t key) {
    int64_t w = worst_slot(s, group), position = b->positions[t];
    if (!ranks_above(s, x, key, position, w)) return w;
    s->value[w] = x;
    s->position[w] = position;
    if (s->key != NULL) s->key[w] = key;
    int64_t window = b->before + 1 + b->after, o = t % b->n_pos, start = t - o;
    for (int64_t i = 0; i < window; i++) {
        int64_t at = o - b->before + i, row = start + at, out = w * window + i;
        int inside = at >= 0 && at < b->n_pos;
        s->ids[out] = inside ? (int32_t)b->tokens[row] : -1;
        s->acts[out] = inside ? b->v[row * b->D + d] : NAN;
        if (s->other != NULL) s->other[out] = inside ? b->other[row * b->D + d] : NAN;
    }
    return worst_slot(s, group);
}

/* Threads split the neurons; each walks blocks of ROWS tokens, and within a block its neurons
 * in tiles of TILE, so that the rows of a block stay in cache and a tile's state in L1 (a walk
 * down whole columns would take a new page at every row). What an element must reach to enter
 * the top-k (kth, the worst kept value) or its bin's sample (bound, the worst kept key) is
 * cached per neuron and per bin; it only changes when an element enters. */
void stream_batch(const Batch *b, const float *width, int half, const int64_t *mask,
                  float threshold, double *moments, int64_t *n_positive, int64_t *n_above,
                  int64_t *counts, Slots *top, Slots *samples, int threads) {
    int64_t D = b->D, bins = 2 * half;
    #pragma omp parallel num_threads(threads)
    {
        int64_t d0, d1;
        my_columns(D, &d0, &d1);
        float *kth = malloc(sizeof(float) * (d1 - d0 + 1));
        float *inverse_width = malloc(sizeof(float) * (d1 - d0 + 1));
        int64_t *bound = malloc(sizeof(int64_t) * ((d1 - d0) * bins + 1));
        for (int64_t d = d0; d < d1; d++) {
            kth[d - d0] = top->value[worst_slot(top, d)];
            inverse_width[d - d0] = 1.0f / width[d];  /* a power of two: exact */
            for (int64_t k = 0; k < bins; k++)
                bound[(d - d0) * bins + k] = samples->key[worst_slot(samples, d * bins + k)];
        }
        for (int64_t block = 0; block < b->T; block += ROWS) {
            int64_t block_end = block + ROWS < b->T ? block + ROWS : b->T;
            for (int64_t tile = d0; tile < d1; tile += TILE) {
                int n = (int)((tile + TILE < d1 ? tile + TILE : d1) - tile);
                double m[4][TILE];
                int64_t positive[TILE], above[TILE];
                for (int i = 0; i < n; i++) {
                    for (int j = 0; j < 4; j++) m[j][i] = moments[(tile + i) * 4 + j];
                    positive[i] = n_positive[tile + i];
                    above[i] = n_above[tile + i];
                }
                const float *inv = inverse_width + (tile - d0);
                for (int64_t t = block; t < block_end; t++) {
                    const float *x = b->v + t * D + tile;
                    int bin[TILE];
                    #pragma omp simd
                    for (int i = 0; i < n; i++) {  /* one neuron per lane */
                        double xd = x[i], x2 = xd * xd;
                        m[0][i] += xd;
                        m[1][i] += x2;
                        m[2][i] += x2 * xd;
                        m[3][i] += x2 * x2;
                        positive[i] += x[i] > 0.0f;
                        above[i] += x[i] > threshold;
                        int k = (int)floorf(x[i] * inv[i]);
                        bin[i] = (k < -half ? -half : (k > half - 1 ? half - 1 : k)) + half;
                    }
                    for (int i = 0; i < n; i++) {
                        int64_t d = tile + i, local = d - d0;
                        counts[d * bins + bin[i]] += 1;
                        if (x[i] >= kth[local])
                            kth[local] = top->value[offer(top, d, b, t, d, x[i], 0)];
                        int64_t key = b->keys[t] ^ mask[d], *kb = bound + local * bins + bin[i];
                        if (key <= *kb)
                            *kb = samples->key[offer(samples, d * bins + bin[i], b, t, d, x[i],
                                                     key)];
                    }
                }
                for (int i = 0; i < n; i++) {
                    for (int j = 0; j < 4; j++) moments[(tile + i) * 4 + j] = m[j][i];
                    n_positive[tile + i] = positive[i];
                    n_above[tile + i] = above[i];
                }
            }
        }
        free(kth);
        free(inverse_width);
        free(bound);
    }
}
