/* The neuron collector's passes over a batch of activations (solulab/neurons/stream.py).
 *
 * v is [T, D] float32, row-major (T tokens, D neurons). batch_extremes reads the batch first:
 * its extremes, and whether it has a nan or an infinity, before the stream takes any of it.
 * Then stream_batch, whose threads split the neurons (so every neuron's sums accumulate in token
 * order whatever the thread count), grows the grids to fit those extremes and, for each
 * element: moments (sum of v, v^2, v^3, v^4 in double), counts above 0 and above the
 * threshold, the histogram bin (2 * half bins centred on 0, of width 2^(h0 + exp[d])); then the
 * element is offered to the neuron's top-k and to its bin's sample, fixed slots ranked by
 * (-value, position) and (key, position) (solulab/neurons/slots.py): it replaces the worst slot
 * it beats, and the windows of the slots that took an element are cut from the batch at its end.
 * A neuron's slots are only ever touched by the thread that owns it. The result is the same set
 * of examples in whatever order elements come: the ranking is a total order.
 */
#include <float.h>
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

/* The batch's extremes, read before the stream takes any of it: per run of T / runs rows and
 * neuron the largest and the smallest value (run_max, run_min [runs, D]; threads split the
 * runs). Returns how many values are nan or infinite (the extremes leave them out). */
int64_t batch_extremes(const float *v, int64_t T, int64_t D, int64_t runs, float *run_max,
                       float *run_min, int threads) {
    int64_t non_finite = 0, per_run = T / runs;
    #pragma omp parallel for num_threads(threads) reduction(+:non_finite) schedule(static)
    for (int64_t r = 0; r < runs; r++) {
        float *largest = run_max + r * D, *smallest = run_min + r * D;
        for (int64_t d = 0; d < D; d++) {
            largest[d] = -INFINITY;
            smallest[d] = INFINITY;
        }
        for (int64_t t = r * per_run; t < (r + 1) * per_run; t++) {
            const float *x = v + t * D;
            int32_t bad = 0;
            #pragma omp simd reduction(+:bad)
            for (int64_t d = 0; d < D; d++) {
                largest[d] = x[d] > largest[d] ? x[d] : largest[d];
                smallest[d] = x[d] < smallest[d] ? x[d] : smallest[d];
                bad += !(fabsf(x[d]) <= FLT_MAX);
            }
            non_finite += bad;
        }
    }
    return non_finite;
}

enum { ROWS = 64, TILE = 16, AHEAD = 8 };
#define EMPTY_SLOT INT64_MAX /* the position and key of a free slot (slots.EMPTY) */

/* A candidate of a block: its row, its lane in the tile, its histogram bin. */
typedef struct {
    int32_t row;
    int16_t lane, bin;
} Hit;

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

/* The keyed group's worst slot: the largest key, ties to the larger position. Two passes, the
 * first a plain reduction the compiler vectorises. */
static int64_t worst_slot(const Slots *s, int64_t group) {
    int64_t first = group * s->cap, last = first + s->cap, worst = -1, largest = INT64_MIN;
    for (int64_t j = first; j < last; j++) largest = s->key[j] > largest ? s->key[j] : largest;
    for (int64_t j = first; j < last; j++)
        if (s->key[j] == largest && (worst < 0 || s->position[j] > s->position[worst])) worst = j;
    return worst;
}

/* Offers element t, value x and key, to slot w, the worst of its group: it takes the slot if it
 * ranks above it, and the slot remembers the batch row its window is to come from (src, one per
 * slot of the thread's groups, first slot first_slot). Returns whether it took the slot. */
static int admit(Slots *s, int64_t w, const Batch *b, int64_t t, float x, int64_t key,
                 int64_t *src, int64_t first_slot) {
    int64_t position = b->positions[t];
    if (!ranks_above(s, x, key, position, w)) return 0;
    s->value[w] = x;
    s->position[w] = position;
    if (s->key != NULL) s->key[w] = key;
    src[w - first_slot] = t;
    return 1;
}

/* Whether value-ranked slot a ranks below slot b: a lower value, ties to the larger position. */
static inline int below(const Slots *s, int64_t a, int64_t b) {
    if (s->value[a] != s->value[b]) return s->value[a] < s->value[b];
    return s->position[a] > s->position[b];
}

/* Restores the heap of slots heap[0..n), in which every slot ranks below its children (so the
 * root is the group's worst), after the slot at index i changed. */
static void sift_down(const Slots *s, int64_t *heap, int64_t n, int64_t i) {
    for (;;) {
        int64_t lowest = i, left = 2 * i + 1, right = left + 1;
        if (left < n && below(s, heap[left], heap[lowest])) lowest = left;
        if (right < n && below(s, heap[right], heap[lowest])) lowest = right;
        if (lowest == i) return;
        int64_t slot = heap[i];
        heap[i] = heap[lowest];
        heap[lowest] = slot;
        i = lowest;
    }
}

/* The slots of value-ranked group g as a heap with the worst at its root: a top-k admission then
 * costs a sift, not a scan of the k slots. */
static void heapify(const Slots *s, int64_t g, int64_t *heap) {
    for (int64_t j = 0; j < s->cap; j++) heap[j] = g * s->cap + j;
    for (int64_t i = s->cap / 2 - 1; i >= 0; i--) sift_down(s, heap, s->cap, i);
}

/* Cuts the windows of the slots [first_slot, first_slot + n) that took an element of this batch
 * (src >= 0; slot w belongs to neuron w / slots_per_neuron), once per batch: an element pushed
 * out again within the batch never had its window copied. Slots go in the order of their rows
 * (a counting sort), so that windows close in the batch read the same pages of it. */
static void write_windows(Slots *s, const Batch *b, const int64_t *src, int64_t first_slot,
                          int64_t n, int64_t slots_per_neuron) {
    int64_t window = b->before + 1 + b->after, *start = calloc(b->T + 1, sizeof(int64_t));
    for (int64_t j = 0; j < n; j++)
        if (src[j] >= 0) start[src[j] + 1]++;
    for (int64_t t = 0; t < b->T; t++) start[t + 1] += start[t];
    int64_t pending = start[b->T], *order = malloc(sizeof(int64_t) * (pending + 1));
    for (int64_t j = 0; j < n; j++)
        if (src[j] >= 0) order[start[src[j]]++] = j;
    for (int64_t r = 0; r < pending; r++) {
        int64_t w = first_slot + order[r], t = src[order[r]], d = w / slots_per_neuron;
        int64_t o = t % b->n_pos, row0 = t - o;
        for (int64_t i = 0; i < window; i++) {
            int64_t at = o - b->before + i, row = row0 + at, out = w * window + i;
            int inside = at >= 0 && at < b->n_pos;
            s->ids[out] = inside ? (int32_t)b->tokens[row] : -1;
            s->acts[out] = inside ? b->v[row * b->D + d] : NAN;
            if (s->other != NULL) s->other[out] = inside ? b->other[row * b->D + d] : NAN;
        }
    }
    free(start);
    free(order);
}

/* The bin of value x on a grid of half * 2 bins with the given inverse width, 0 to 2 * half - 1
 * (values beyond go to the end bins). */
static inline int bin_of(float x, float inverse_width, int half) {
    int k = (int)floorf(x * inverse_width);
    return (k < -half ? -half : (k > half - 1 ? half - 1 : k)) + half;
}

/* Whether value x with key high bits key_high may enter the top-k (whose worst is kth) or its
 * bin's sample (whose worst key has high bits bound_high): a screen, the exact tests follow. */
static inline int candidate(float x, float kth, int32_t key_high, int32_t bound_high) {
    return (x >= kth) | (key_high <= bound_high);
}

/* A thread's cache of its neurons' grids: per neuron the inverse bin width, per (neuron, bin)
 * the worst kept sample (its slot and key, and the key's high 32 bits), kept up to date as
 * samples enter. */
typedef struct {
    float *inverse_width;
    int64_t *bound, *bound_slot;
    int32_t *bound_high;
} Grid;

/* Fills neuron d's entries (local index `local`) of the cache from its exponent and slots. */
static void cache_grid(Grid *g, int64_t d, int64_t local, const int64_t *exp, int h0,
                       int64_t bins, const Slots *samples) {
    g->inverse_width[local] = ldexpf(1.0f, -(int)(h0 + exp[d]));  /* a power of two: exact */
    for (int64_t k = 0; k < bins; k++) {
        int64_t at = local * bins + k;
        g->bound_slot[at] = worst_slot(samples, d * bins + k);
        g->bound[at] = samples->key[g->bound_slot[at]];
        g->bound_high[at] = (int32_t)(g->bound[at] >> 32);
    }
}

/* Scratch space for regridding one neuron's samples: cap * bins examples. */
typedef struct {
    int64_t *slot, *position, *key;
    float *value, *acts;
    int32_t *ids;
} Scratch;

/* Coarsens neuron d's grid to fit the magnitude ax, as PointStream._grow does: the exponent
 * becomes the smallest that makes ax < half bins, bin i (of width h) goes to bin
 * floor((i + 0.5) / 2^steps) of the new width h * 2^steps, with its histogram count, and each
 * new bin keeps the cap smallest keys of the samples it receives, with their windows (sample
 * slots keep none of the other point). */
static void grow(int64_t d, float ax, int h0, int half, int64_t *exp, int64_t *counts,
                 Slots *s, int64_t window, Scratch *tmp) {
    int e;
    frexpf(ldexpf(ax / (float)half, -h0), &e);
    int64_t need = e > 0 ? e : 0, bins = 2 * half, cap = s->cap;
    if (need <= exp[d]) return;
    int steps = (int)(need - exp[d]);
    exp[d] = need;
    int64_t old_counts[bins], to[bins], filled[bins];
    for (int64_t i = 0; i < bins; i++) {
        to[i] = (int64_t)floorf(ldexpf((float)(i - half) + 0.5f, -steps)) + half;
        old_counts[i] = counts[d * bins + i];
        counts[d * bins + i] = 0;
        filled[i] = 0;
    }
    for (int64_t i = 0; i < bins; i++) counts[d * bins + to[i]] += old_counts[i];
    int64_t first = d * bins * cap, n = 0;
    for (int64_t j = first; j < first + bins * cap; j++) {
        if (s->position[j] == EMPTY_SLOT) continue;
        int64_t at = n++;
        tmp->slot[at] = j;
        tmp->position[at] = s->position[j];
        tmp->key[at] = s->key[j];
        tmp->value[at] = s->value[j];
        for (int64_t i = 0; i < window; i++) {
            tmp->ids[at * window + i] = s->ids[j * window + i];
            tmp->acts[at * window + i] = s->acts[j * window + i];
        }
        s->value[j] = -INFINITY;
        s->position[j] = EMPTY_SLOT;
        s->key[j] = EMPTY_SLOT;
    }
    int64_t order[bins * cap];  /* by key, an insertion sort: at most cap * bins examples */
    for (int64_t at = 0; at < n; at++) {
        int64_t r = at;
        for (; r > 0 && tmp->key[order[r - 1]] > tmp->key[at]; r--) order[r] = order[r - 1];
        order[r] = at;
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t at = order[r], bin = to[(tmp->slot[at] - first) / cap];
        if (filled[bin] == cap) continue;
        int64_t j = first + bin * cap + filled[bin]++;
        s->value[j] = tmp->value[at];
        s->position[j] = tmp->position[at];
        s->key[j] = tmp->key[at];
        for (int64_t i = 0; i < window; i++) {
            s->ids[j * window + i] = tmp->ids[at * window + i];
            s->acts[j * window + i] = tmp->acts[at * window + i];
        }
    }
}

/* Grows the grids of neurons [d0, d1) to fit their extremes so far (vmax, vmin), before the
 * batch's values are offered, as PointStream._grow does on the PyTorch path. */
static void fit_grids(int64_t d0, int64_t d1, const float *vmax, const float *vmin, int h0,
                      int half, int64_t *exp, int64_t *counts, Slots *s, int64_t window) {
    int64_t slots = 2 * half * s->cap;
    Scratch tmp = {malloc(sizeof(int64_t) * slots), malloc(sizeof(int64_t) * slots),
                   malloc(sizeof(int64_t) * slots), malloc(sizeof(float) * slots),
                   malloc(sizeof(float) * slots * window),
                   malloc(sizeof(int32_t) * slots * window)};
    for (int64_t d = d0; d < d1; d++)
        grow(d, fmaxf(fabsf(vmax[d]), fabsf(vmin[d])), h0, half, exp, counts, s, window, &tmp);
    free(tmp.slot);
    free(tmp.position);
    free(tmp.key);
    free(tmp.value);
    free(tmp.acts);
    free(tmp.ids);
}

/* Threads split the neurons; each walks blocks of ROWS tokens, and within a block its neurons
 * in tiles of TILE, so that the rows of a block stay in cache and a tile's state in L1 (a walk
 * down whole columns would take a new page at every row). What an element must reach to enter
 * the top-k (kth: the worst kept value, or the caller's floor if higher, below which nothing of
 * the batch can enter) or its bin's sample (bound, the worst kept key) is cached per neuron and
 * per bin with the slot that holds it; it only changes when an element enters. The grids are
 * grown first to fit the extremes (vmax, vmin: the caller's, the batch's included), so that
 * every value of the batch falls on its neuron's grid. The vector loop screens the keys by
 * their high 32 bits (no 64-bit gather), and a block's candidates then meet the exact tests in
 * row order, the slots of the next few fetched meanwhile. Windows are cut once, at the end, for
 * the slots that took an element of the batch. */
void stream_batch(const Batch *b, int64_t *exp, int h0, int half, const int64_t *mask,
                  float threshold, const float *vmax, const float *vmin, const float *floor,
                  double *moments, int64_t *n_positive, int64_t *n_above, int64_t *counts,
                  Slots *top, Slots *samples, int threads) {
    int64_t D = b->D, bins = 2 * half, window = b->before + 1 + b->after;
    #pragma omp parallel num_threads(threads)
    {
        int64_t d0, d1;
        my_columns(D, &d0, &d1);
        int64_t n = d1 - d0, top_slots = n * top->cap, sample_slots = n * bins * samples->cap;
        float *kth = malloc(sizeof(float) * (n + 1));
        float *inverse_width = malloc(sizeof(float) * (n + 1));
        int64_t *heap = malloc(sizeof(int64_t) * (top_slots + 1));  /* per neuron, worst first */
        int64_t *bound = malloc(sizeof(int64_t) * (n * bins + 1));
        int64_t *bound_slot = malloc(sizeof(int64_t) * (n * bins + 1));
        int32_t *bound_high = malloc(sizeof(int32_t) * (n * bins + 1));  /* bound >> 32 */
        int32_t *mask_high = malloc(sizeof(int32_t) * (n + 1));
        int64_t *top_src = malloc(sizeof(int64_t) * (top_slots + 1));
        int64_t *sample_src = malloc(sizeof(int64_t) * (sample_slots + 1));
        Grid grid = {inverse_width, bound, bound_slot, bound_high};
        Hit *hits = malloc(sizeof(Hit) * ROWS * TILE);
        fit_grids(d0, d1, vmax, vmin, h0, half, exp, counts, samples, window);
        for (int64_t j = 0; j < top_slots; j++) top_src[j] = -1;
        for (int64_t j = 0; j < sample_slots; j++) sample_src[j] = -1;
        for (int64_t d = d0; d < d1; d++) {
            heapify(top, d, heap + (d - d0) * top->cap);
            kth[d - d0] = fmaxf(top->value[heap[(d - d0) * top->cap]], floor[d]);
            mask_high[d - d0] = (int32_t)(mask[d] >> 32);
            cache_grid(&grid, d, d - d0, exp, h0, bins, samples);
        }
        for (int64_t block = 0; block < b->T; block += ROWS) {
            int64_t block_end = block + ROWS < b->T ? block + ROWS : b->T;
            for (int64_t tile = d0; tile < d1; tile += TILE) {
                int width_of_tile = (int)((tile + TILE < d1 ? tile + TILE : d1) - tile);
                double m[4][TILE];
                int64_t positive[TILE], above[TILE];
                for (int i = 0; i < width_of_tile; i++) {
                    for (int j = 0; j < 4; j++) m[j][i] = moments[(tile + i) * 4 + j];
                    positive[i] = n_positive[tile + i];
                    above[i] = n_above[tile + i];
                }
                const float *inv = inverse_width + (tile - d0);
                const float *kth_of = kth + (tile - d0);
                const int32_t *mask_of = mask_high + (tile - d0);
                const int32_t *bound_of = bound_high + (tile - d0) * bins;
                int64_t *counts_of = counts + tile * bins;
                int n_hits = 0;
                for (int64_t t = block; t < block_end; t++) {
                    const float *x = b->v + t * D + tile;
                    /* the line read ROWS rows from now (the next tile's of this row): a walk
                     * that takes a line per page gets no help from the hardware prefetcher */
                    int64_t ahead = tile + TILE < d1 ? t * D + tile + TILE : (t + ROWS) * D + d0;
                    if (ahead < b->T * D) __builtin_prefetch(b->v + ahead);
                    int32_t key_t = (int32_t)(b->keys[t] >> 32);  /* a screen: exact below */
                    int bin[TILE], hit[TILE], any_hit = 0;
                    #pragma omp simd reduction(|:any_hit)
                    for (int i = 0; i < width_of_tile; i++) {  /* one neuron per lane */
                        double xd = x[i], x2 = xd * xd;
                        m[0][i] += xd;
                        m[1][i] += x2;
                        m[2][i] += x2 * xd;
                        m[3][i] += x2 * x2;
                        positive[i] += x[i] > 0.0f;
                        above[i] += x[i] > threshold;
                        bin[i] = bin_of(x[i], inv[i], half);
                        hit[i] = candidate(x[i], kth_of[i], key_t ^ mask_of[i],
                                           bound_of[i * bins + bin[i]]);
                        any_hit |= hit[i];
                    }
                    for (int i = 0; i < width_of_tile; i++)  /* scalar: faster than a scatter */
                        counts_of[i * bins + bin[i]] += 1;
                    if (!any_hit) continue;  /* the usual case once the slots are full */
                    for (int i = 0; i < width_of_tile; i++)
                        if (hit[i]) hits[n_hits++] = (Hit){(int32_t)t, (int16_t)i,
                                                           (int16_t)bin[i]};
                }
                /* The block's candidates, in row order, against the slots as they are now; the
                 * slots of a candidate a few ahead are fetched meanwhile (they miss the cache). */
                for (int h = 0; h < n_hits; h++) {
                    if (h + AHEAD < n_hits) {
                        const Hit *next = &hits[h + AHEAD];
                        int64_t local = tile + next->lane - d0;
                        int64_t w = heap[local * top->cap];
                        __builtin_prefetch(&top->value[w], 1);
                        __builtin_prefetch(&top->position[w], 1);
                        w = bound_slot[local * bins + next->bin];
                        __builtin_prefetch(&samples->key[w], 1);
                        __builtin_prefetch(&samples->position[w], 1);
                        __builtin_prefetch(&samples->value[w], 1);
                    }
                    int64_t t = hits[h].row, d = tile + hits[h].lane, local = d - d0;
                    float x = b->v[t * D + d];
                    int64_t *heap_of = heap + local * top->cap;
                    if (x >= kth[local] &&
                        admit(top, heap_of[0], b, t, x, 0, top_src, d0 * top->cap)) {
                        sift_down(top, heap_of, top->cap, 0);
                        kth[local] = fmaxf(top->value[heap_of[0]], floor[d]);
                    }
                    int64_t key = b->keys[t] ^ mask[d], at = local * bins + hits[h].bin;
                    if (key <= bound[at] && admit(samples, bound_slot[at], b, t, x, key,
                                                  sample_src, d0 * bins * samples->cap)) {
                        bound_slot[at] = worst_slot(samples, d * bins + hits[h].bin);
                        bound[at] = samples->key[bound_slot[at]];
                        bound_high[at] = (int32_t)(bound[at] >> 32);
                    }
                }
                for (int i = 0; i < width_of_tile; i++) {
                    for (int j = 0; j < 4; j++) moments[(tile + i) * 4 + j] = m[j][i];
                    n_positive[tile + i] = positive[i];
                    n_above[tile + i] = above[i];
                }
            }
        }
        write_windows(top, b, top_src, d0 * top->cap, top_slots, top->cap);
        write_windows(samples, b, sample_src, d0 * bins * samples->cap, sample_slots,
                      bins * samples->cap);
        free(kth);
        free(inverse_width);
        free(heap);
        free(bound);
        free(bound_slot);
        free(bound_high);
        free(mask_high);
        free(top_src);
        free(sample_src);
        free(hits);
    }
}
