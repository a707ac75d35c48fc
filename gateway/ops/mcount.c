/*
 * mcount.c - the counting side of the metrics (metrics.h): the hooks the request
 * path calls, each on its own loop's block. No lock, no allocation but a key
 * block the first time a key is seen on a loop. The scrape is in metrics.c.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

__thread struct gw_m_loop *gw_m_self;

const double gw_m_req_bounds[GW_M_BUCKETS] = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1, 2.5, 5, 10, 30, 60, 120, 300, 600,
};
const double gw_m_store_bounds[GW_M_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10,
};

/* bounds in µs, for the comparison on the request path */
static const uint64_t req_us[GW_M_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000, 120000000, 300000000, 600000000,
};
static const uint64_t store_us[GW_M_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000,
    100000, 250000, 500000, 1000000, 2000000, 3000000, 5000000, 7500000, 10000000,
};

static const char *route_names[GW_M_ROUTES];

static void observe(struct gw_m_hist *h, const uint64_t *bounds, uint64_t us)
{
    unsigned i = 0;

    while (i < GW_M_BUCKETS && us > bounds[i])
        i++;
    GW_M_ADD(h->n[i], 1);
    GW_M_ADD(h->sum_us, us);
}

static int route_index(int id, const char *name)
{
    int i = id;

    if (id < 0 || id >= GW_M_ROUTE_OTHER) {
        i = id == GW_M_ROUTE_ADMIN ? GW_M_ROUTE_ADMIN : GW_M_ROUTE_OTHER;
        name = i == GW_M_ROUTE_ADMIN ? "admin" : "other";
    } else if (id == 0) {
        name = "unmatched"; /* no route (404, 405, 501) */
    }
    /* name NULL: a caller that does not know it (the route is named by the
     * request's own count, which always comes, at its end) */
    if (name != NULL && __atomic_load_n(&route_names[i], __ATOMIC_RELAXED) == NULL)
        __atomic_store_n(&route_names[i], name, __ATOMIC_RELAXED);
    return i;
}

const char *gw_m_route_name(int i)
{
    return i >= 0 && i < GW_M_ROUTES ? __atomic_load_n(&route_names[i], __ATOMIC_RELAXED)
                                     : NULL;
}

/* The key block of slot on this thread's loop, made on first use. */
static struct gw_m_key *key_of(struct gw_m_loop *l, int64_t slot)
{
    struct gw_m_key *chunk;

    if (slot < 0 || slot >= (int64_t)GW_M_NCHUNKS * GW_M_KCHUNK)
        return &l->nokey;
    chunk = l->keys[slot / GW_M_KCHUNK];
    if (chunk == NULL) {
        chunk = calloc(GW_M_KCHUNK, sizeof(*chunk));
        if (chunk == NULL)
            return &l->nokey; /* out of memory: counted, without its key */
        /* released: the scrape (acquire) sees the zeroed block, never garbage */
        __atomic_store_n(&l->keys[slot / GW_M_KCHUNK], chunk, __ATOMIC_RELEASE);
    }
    return &chunk[slot % GW_M_KCHUNK];
}

const struct gw_m_key *gw_m_key_get(struct gw_m_loop *l, int64_t slot)
{
    struct gw_m_key *chunk;

    if (slot < 0)
        return &l->nokey;
    if (slot >= (int64_t)GW_M_NCHUNKS * GW_M_KCHUNK)
        return NULL;
    chunk = __atomic_load_n(&l->keys[slot / GW_M_KCHUNK], __ATOMIC_ACQUIRE);
    return chunk ? &chunk[slot % GW_M_KCHUNK] : NULL;
}

void gw_m_request(int route_id, const char *route_name, int status, int64_t slot,
                  uint64_t bytes_in, uint64_t bytes_out, uint64_t dur_us)
{
    struct gw_m_loop *l = gw_m_self;
    int r, c;

    if (l == NULL)
        return;
    r = route_index(route_id, route_name);
    c = status >= 100 && status < 600 ? status / 100 : 0;
    GW_M_ADD(key_of(l, slot)->req[r][c], 1);
    GW_M_ADD(l->bytes_in[r], bytes_in);
    GW_M_ADD(l->bytes_out[r], bytes_out);
    observe(&l->dur[r], req_us, dur_us);
}

void gw_m_up_head(int route_id, uint64_t wait_us)
{
    if (gw_m_self != NULL)
        observe(&gw_m_self->head[route_index(route_id, NULL)], req_us, wait_us);
}

void gw_m_state(int from, int to)
{
    struct gw_m_loop *l = gw_m_self;

    if (l == NULL)
        return;
    if (from >= 0 && from < GW_M_STATES)
        GW_M_ADD(l->inflight[from], (uint64_t)-1);
    if (to >= 0 && to < GW_M_STATES)
        GW_M_ADD(l->inflight[to], 1);
}

void gw_m_up(enum gw_m_up what)
{
    if (gw_m_self != NULL && what < GW_M_UP_N)
        GW_M_ADD(gw_m_self->up[what], 1);
}

void gw_m_up_busy(int delta)
{
    if (gw_m_self != NULL)
        GW_M_ADD(gw_m_self->up_busy, (uint64_t)(int64_t)delta);
}

void gw_m_up_idle(unsigned idle)
{
    if (gw_m_self != NULL)
        GW_M_SET(gw_m_self->up_idle, idle);
}

void gw_m_limit(int64_t slot, enum gw_m_limit outcome)
{
    if (gw_m_self != NULL && outcome < GW_M_LIMIT_N)
        GW_M_ADD(key_of(gw_m_self, slot)->limit[outcome], 1);
}

void gw_m_vs(int64_t slot, struct gw_str model, enum gw_m_vs outcome, uint64_t seconds)
{
    if (gw_m_self != NULL && outcome < GW_M_VS_N)
        GW_M_ADD(key_of(gw_m_self, slot)->vs[gw_m_model_find(model)][outcome], seconds);
}

void gw_m_store(unsigned kind, int ok, uint64_t us)
{
    struct gw_m_loop *l = gw_m_self;

    if (l == NULL)
        return;
    GW_M_ADD(l->store_ops[kind < GW_M_OPS ? kind : GW_M_OPS - 1][ok ? 0 : 1], 1);
    observe(&l->store_lat, store_us, us);
}

/* ---------------------------------------------------------------- models */

/*
 * Interned model names: appended by one thread at a time (the mutex), never
 * removed or moved, so a reader finds an entry with no lock: it reads the count
 * (acquire) and the entries before it, written before the count grew (release).
 * A linear scan over at most GW_M_MODELS names of the catalog, comparing the
 * length first; only creates call it.
 */
static const char *models[GW_M_MODELS];
static size_t model_len[GW_M_MODELS];
static unsigned nmodels;
static pthread_mutex_t models_mu = PTHREAD_MUTEX_INITIALIZER;

void gw_m_model_intern(const char *name)
{
    unsigned n;

    pthread_mutex_lock(&models_mu);
    n = nmodels;
    if (gw_m_model_find((struct gw_str){ name, strlen(name) }) == GW_M_MODELS &&
        n < GW_M_MODELS) {
        char *copy = strdup(name);
        if (copy != NULL) {
            models[n] = copy;
            model_len[n] = strlen(copy);
            __atomic_store_n(&nmodels, n + 1, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&models_mu);
}

int gw_m_model_find(struct gw_str name)
{
    unsigned n = __atomic_load_n(&nmodels, __ATOMIC_ACQUIRE);

    for (unsigned i = 0; name.p != NULL && i < n; i++) {
        if (model_len[i] == name.len && memcmp(models[i], name.p, name.len) == 0)
            return (int)i;
    }
    return GW_M_MODELS;
}

const char *gw_m_model_name(int i)
{
    unsigned n = __atomic_load_n(&nmodels, __ATOMIC_ACQUIRE);
    return i >= 0 && (unsigned)i < n ? models[i] : NULL;
}
