/*
 * metrics.c - GET /metrics: every loop's counters (mcount.c) summed, and what
 * other modules know (the upstream key pools, the store, the process), in the
 * Prometheus text format (expo.c). Runs on the admin listener's loop; reads the
 * other loops' counters with relaxed atomic loads (metrics.h).
 *
 * Series of a team key exist for the keys of the configuration the scrape runs
 * under and the store's keys (keytab.h): a key removed by a reload or revoked
 * disappears from the exposition (Prometheus marks its series stale), a key
 * that stays keeps its counters (its limiter slot).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "keytab.h"
#include "ops.h"
#include "server.h"
#include "store/store.h"

static struct gw_m_loop *loops;
static unsigned nloops;
static struct gw_worker *workers;
static struct gw_store *store;
static double start_unix;           /* s */
static uint64_t reloads[2];         /* [0] failed, [1] applied; main thread writes */
static double last_reload_unix;     /* main thread writes, scrape reads (relaxed) */
static int last_reload_ok = 1;

int gw_metrics_init(struct gw_worker *w, unsigned n, struct gw_store *st)
{
    struct timespec t;

    loops = calloc(n, sizeof(*loops));
    if (loops == NULL)
        return GW_ERR;
    nloops = n;
    workers = w;
    store = st;
    clock_gettime(CLOCK_REALTIME, &t);
    start_unix = (double)t.tv_sec + (double)t.tv_nsec / 1e9;
    last_reload_unix = start_unix;
    return GW_OK;
}

void gw_metrics_bind_thread(unsigned i)
{
    gw_m_self = i < nloops ? &loops[i] : NULL;
}

void gw_metrics_config(const struct gw_config *cfg)
{
    for (unsigned i = 0; i < cfg->catalog.nmodels; i++)
        gw_m_model_intern(cfg->catalog.models[i].name);
}

void gw_metrics_reload(int ok)
{
    struct timespec t;

    clock_gettime(CLOCK_REALTIME, &t);
    __atomic_add_fetch(&reloads[ok ? 1 : 0], 1, __ATOMIC_RELAXED);
    __atomic_store_n(&last_reload_ok, ok, __ATOMIC_RELAXED);
    if (ok) {
        double now = (double)t.tv_sec + (double)t.tv_nsec / 1e9;
        __atomic_store(&last_reload_unix, &now, __ATOMIC_RELAXED);
    }
}

unsigned gw_ops_nkeys(void)
{
    return nloops > 0 && workers != NULL ? workers[0].keys.n : 0;
}

/* The key pools are written by their loops with plain stores; these relaxed
 * loads read a whole aligned int64 (never torn on the targets we build for),
 * perhaps a moment old: what a monitoring read needs. */
enum gw_key_state gw_ops_key_state(unsigned i, int64_t now_ms)
{
    enum gw_key_state st = GW_KEY_IN_USE;

    for (unsigned l = 0; l < nloops && workers != NULL && i < GW_KEYPOOL_MAX; l++) {
        const struct gw_keypool *kp = &workers[l].keys;
        if (__atomic_load_n(&kp->out_until[i], __ATOMIC_RELAXED) > now_ms)
            return GW_KEY_OUT;
        if (__atomic_load_n(&kp->rest_until[i], __ATOMIC_RELAXED) > now_ms)
            st = GW_KEY_RESTING;
    }
    return st;
}

/* ---------------------------------------------------------------- sums */

static uint64_t sum_hist(const struct gw_m_hist *h, uint64_t *out)
{
    uint64_t n = 0;

    for (unsigned b = 0; b <= GW_M_BUCKETS; b++) {
        out[b] += GW_M_GET(h->n[b]);
        n += out[b];
    }
    return n;
}

/* The sum over the loops of one field of each loop's block. */
#define SUM(expr)                                              \
    ({                                                         \
        uint64_t s_ = 0;                                       \
        for (unsigned l_ = 0; l_ < nloops; l_++) {             \
            struct gw_m_loop *L = &loops[l_];                  \
            s_ += GW_M_GET(expr);                              \
        }                                                      \
        s_;                                                    \
    })

/* The same for a member of a key's block (blocks not made yet count 0). */
#define KSUM(slot, member)                                               \
    ({                                                                   \
        uint64_t s_ = 0;                                                 \
        for (unsigned l_ = 0; l_ < nloops; l_++) {                       \
            const struct gw_m_key *K = gw_m_key_get(&loops[l_], (slot)); \
            if (K != NULL)                                               \
                s_ += GW_M_GET(K->member);                               \
        }                                                                \
        s_;                                                              \
    })

static const char *const class_names[GW_M_CLASSES] = { "none", "1xx", "2xx", "3xx", "4xx",
                                                        "5xx" };
static const char *const limit_names[GW_M_LIMIT_N] = {
    "admitted", "queued", "rate_limited", "upstream_busy", "quota_exceeded",
};
static const char *const vs_names[GW_M_VS_N] = { "reserved", "kept", "released", "refunded" };
static const char *const state_names[] = {
    "headers", "admit", "connect", "stream_req", "await_resp", "stream_resp", "done",
};
/* store/store_int.h's enum gw_store_op_kind, in order */
static const char *const op_names[] = {
    "job_put", "job_get", "job_update", "job_delete", "job_list", "job_claim",
    "job_refund", "prune", "idem_begin", "idem_finish", "idem_abort", "usage",
    "key_put", "key_patch", "key_revoke", "keys_list", "keys_version", "jobs_recent",
};
static const char *const key_state_names[] = { "in_use", "resting", "out" };

/* ------------------------------------------------------------- families */

/* The team keys a scrape reports: the config's, then the store's (keytab.h; a
 * store key named like a config key is not in the table). */
struct keys {
    const struct gw_team_key *const *v;
    unsigned n;
};

static void requests(struct gw_expo *e, const struct keys *ks)
{
    static const char *name = "videogw_http_requests_total";

    gw_expo_family(e, name, "counter",
                   "Requests answered, by route, status class and team key name (key=\"\": "
                   "no valid key).");
    for (int64_t k = -1; k < (int64_t)ks->n; k++) {
        int64_t slot = k < 0 ? -1 : (int64_t)ks->v[k]->slot;
        const char *kname = k < 0 ? "" : ks->v[k]->name;
        for (int r = 0; r < GW_M_ROUTES; r++) {
            const char *route = gw_m_route_name(r);
            if (route == NULL)
                continue;
            for (int c = 0; c < GW_M_CLASSES; c++) {
                uint64_t v = KSUM(slot, req[r][c]);
                if (v == 0)
                    continue;
                struct gw_label lb[] = { { "route", route }, { "status", class_names[c] },
                                         { "key", kname } };
                gw_expo_sample_u64(e, name, lb, 3, v);
            }
        }
    }
}

static void histograms(struct gw_expo *e, const char *name, const char *help, int head)
{
    gw_expo_family(e, name, "histogram", help);
    for (int r = 0; r < GW_M_ROUTES; r++) {
        const char *route = gw_m_route_name(r);
        uint64_t counts[GW_M_BUCKETS + 1] = { 0 }, sum_us = 0, n = 0;
        if (route == NULL)
            continue;
        for (unsigned l = 0; l < nloops; l++) {
            const struct gw_m_hist *h = head ? &loops[l].head[r] : &loops[l].dur[r];
            n += sum_hist(h, counts) ? 1 : 0;
            sum_us += GW_M_GET(h->sum_us);
        }
        if (head && n == 0)
            continue; /* routes the gateway answers itself never wait for the upstream */
        struct gw_label lb[] = { { "route", route } };
        gw_expo_histogram(e, name, lb, 1, gw_m_req_bounds, GW_M_BUCKETS, counts,
                          (double)sum_us / 1e6);
    }
}

static void bytes(struct gw_expo *e)
{
    static const char *in = "videogw_http_request_body_bytes_total";
    static const char *out = "videogw_http_response_body_bytes_total";

    gw_expo_family(e, in, "counter", "Request body bytes received from clients, by route.");
    for (int r = 0; r < GW_M_ROUTES; r++) {
        struct gw_label lb[] = { { "route", gw_m_route_name(r) } };
        if (lb[0].value != NULL)
            gw_expo_sample_u64(e, in, lb, 1, SUM(L->bytes_in[r]));
    }
    gw_expo_family(e, out, "counter", "Response body bytes sent to clients, by route.");
    for (int r = 0; r < GW_M_ROUTES; r++) {
        struct gw_label lb[] = { { "route", gw_m_route_name(r) } };
        if (lb[0].value != NULL)
            gw_expo_sample_u64(e, out, lb, 1, SUM(L->bytes_out[r]));
    }
}

static void inflight(struct gw_expo *e)
{
    static const char *name = "videogw_exchanges_in_flight";

    gw_expo_family(e, name, "gauge",
                   "Client exchanges alive now, by state (headers, admit, connect, stream_req, "
                   "await_resp, stream_resp, done).");
    for (unsigned s = 0; s < GW_ARRAY_LEN(state_names); s++) {
        struct gw_label lb[] = { { "state", state_names[s] } };
        gw_expo_sample(e, name, lb, 1, (double)(int64_t)SUM(L->inflight[s]));
    }
}

static void upstream(struct gw_expo *e, const struct gw_config *cfg)
{
    static const char *conns = "videogw_upstream_connections";
    static const char *const counters[GW_M_UP_N][2] = {
        { "videogw_upstream_connections_opened_total", "Upstream connections started." },
        { "videogw_upstream_connections_failed_total",
          "Upstream connection attempts that failed (connect, TLS handshake), each address." },
        { "videogw_upstream_connections_reused_total",
          "Upstream requests sent on a pooled keep-alive connection." },
    };
    static const char *keys = "videogw_upstream_key_state";
    int64_t now = gw_worker_now_ms();

    gw_expo_family(e, conns, "gauge", "Upstream connections now: idle (pooled) or busy (leased).");
    gw_expo_sample(e, conns, (struct gw_label[]){ { "state", "idle" } }, 1,
                   (double)(int64_t)SUM(L->up_idle));
    gw_expo_sample(e, conns, (struct gw_label[]){ { "state", "busy" } }, 1,
                   (double)(int64_t)SUM(L->up_busy));
    for (unsigned i = 0; i < GW_M_UP_N; i++) {
        gw_expo_family(e, counters[i][0], "counter", counters[i][1]);
        gw_expo_sample_u64(e, counters[i][0], NULL, 0, SUM(L->up[i]));
    }
    gw_expo_family(e, keys, "gauge",
                   "Upstream keys by their label: 1 for the state each is in (in_use, resting "
                   "after a 429, out after a 401/403), 0 for the others.");
    for (unsigned i = 0; i < cfg->nupstream_keys && i < gw_ops_nkeys(); i++) {
        enum gw_key_state st = gw_ops_key_state(i, now);
        for (unsigned s = 0; s < GW_ARRAY_LEN(key_state_names); s++) {
            struct gw_label lb[] = { { "key", cfg->upstream_key_labels[i] },
                                     { "state", key_state_names[s] } };
            gw_expo_sample(e, keys, lb, 2, st == s ? 1 : 0);
        }
    }
}

static void per_key(struct gw_expo *e, const struct keys *ks)
{
    static const char *lim = "videogw_limiter_decisions_total";
    static const char *vs = "videogw_video_seconds_total";

    gw_expo_family(e, lim, "counter",
                   "Admission decisions on creates and remixes, by team key and outcome.");
    for (unsigned k = 0; k < ks->n; k++) {
        for (unsigned o = 0; o < GW_M_LIMIT_N; o++) {
            uint64_t v = KSUM(ks->v[k]->slot, limit[o]);
            struct gw_label lb[] = { { "key", ks->v[k]->name }, { "outcome", limit_names[o] } };
            if (v > 0 || o == GW_M_ADMITTED)
                gw_expo_sample_u64(e, lim, lb, 2, v);
        }
    }
    gw_expo_family(e, vs, "counter",
                   "Video-seconds by team key, model sent and outcome: reserved before the "
                   "upstream sees a create, then kept (a job exists) or released (none); "
                   "refunded when a job fails later.");
    for (unsigned k = 0; k < ks->n; k++) {
        for (int m = 0; m <= GW_M_MODELS; m++) {
            const char *model = m == GW_M_MODELS ? "other" : gw_m_model_name(m);
            if (model == NULL)
                continue;
            for (unsigned o = 0; o < GW_M_VS_N; o++) {
                uint64_t v = KSUM(ks->v[k]->slot, vs[m][o]);
                struct gw_label lb[] = { { "key", ks->v[k]->name }, { "model", model },
                                         { "outcome", vs_names[o] } };
                if (v > 0)
                    gw_expo_sample_u64(e, vs, lb, 3, v);
            }
        }
    }
}

static void store_metrics(struct gw_expo *e)
{
    static const char *ops = "videogw_store_operations_total";
    static const char *lat = "videogw_store_operation_duration_seconds";
    uint64_t counts[GW_M_BUCKETS + 1] = { 0 }, sum_us = 0;
    struct gw_store_stats st;

    if (store == NULL)
        return;
    gw_expo_family(e, ops, "counter", "Store operations answered to the loops, by kind and result.");
    for (unsigned k = 0; k < GW_M_OPS; k++) {
        for (int r = 0; r < 2; r++) {
            uint64_t v = SUM(L->store_ops[k][r]);
            struct gw_label lb[] = { { "op", k < GW_ARRAY_LEN(op_names) ? op_names[k] : "other" },
                                     { "result", r ? "error" : "ok" } };
            if (v > 0)
                gw_expo_sample_u64(e, ops, lb, 2, v);
        }
    }
    gw_expo_family(e, lat, "histogram",
                   "Store operations: from the loop's call to its answer back on the loop.");
    for (unsigned l = 0; l < nloops; l++) {
        sum_hist(&loops[l].store_lat, counts);
        sum_us += GW_M_GET(loops[l].store_lat.sum_us);
    }
    gw_expo_histogram(e, lat, NULL, 0, gw_m_store_bounds, GW_M_BUCKETS, counts,
                      (double)sum_us / 1e6);
    gw_store_stats(store, &st);
    gw_expo_family(e, "videogw_store_queue_depth", "gauge", "Store operations waiting now.");
    gw_expo_sample_u64(e, "videogw_store_queue_depth", NULL, 0, st.queued);
    gw_expo_family(e, "videogw_store_transactions_total", "counter",
                   "Store transactions (one per group commit).");
    gw_expo_sample_u64(e, "videogw_store_transactions_total", NULL, 0, st.transactions);
    gw_expo_family(e, "videogw_store_commit_delays_total", "counter",
                   "Store transactions begun after waiting for more operations (under load).");
    gw_expo_sample_u64(e, "videogw_store_commit_delays_total", NULL, 0, st.lingered);
}

static void reload_metrics(struct gw_expo *e)
{
    static const char *name = "videogw_config_reloads_total";
    double last;

    gw_expo_family(e, name, "counter", "SIGHUP reloads, by result (applied or refused).");
    gw_expo_sample_u64(e, name, (struct gw_label[]){ { "result", "success" } }, 1,
                       __atomic_load_n(&reloads[1], __ATOMIC_RELAXED));
    gw_expo_sample_u64(e, name, (struct gw_label[]){ { "result", "failure" } }, 1,
                       __atomic_load_n(&reloads[0], __ATOMIC_RELAXED));
    gw_expo_family(e, "videogw_config_last_reload_successful", "gauge",
                   "1 if the last reload was applied (or none was tried), 0 if it was refused.");
    gw_expo_sample(e, "videogw_config_last_reload_successful", NULL, 0,
                   __atomic_load_n(&last_reload_ok, __ATOMIC_RELAXED));
    __atomic_load(&last_reload_unix, &last, __ATOMIC_RELAXED);
    gw_expo_family(e, "videogw_config_last_reload_success_timestamp_seconds", "gauge",
                   "When the running configuration was loaded (unix time).");
    gw_expo_sample(e, "videogw_config_last_reload_success_timestamp_seconds", NULL, 0, last);
}

/* process_* as the Prometheus client libraries name them. /proc reads are a
 * few syscalls on pseudo-files: they do not block. */
static void process_metrics(struct gw_expo *e)
{
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    unsigned long utime = 0, stime = 0, vsize = 0;
    long rss = 0;
    char buf[1024], *p;
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    struct rlimit rl;
    double fds = 0;
    DIR *d;

    if (f != NULL)
        fclose(f);
    buf[n] = '\0';
    /* fields after the command name, which may hold spaces: from the last ')' */
    if ((p = strrchr(buf, ')')) != NULL)
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
                      "%*d %*d %*u %lu %ld", &utime, &stime, &vsize, &rss);
    if ((d = opendir("/proc/self/fd")) != NULL) {
        while (readdir(d) != NULL)
            fds++;
        closedir(d);
        fds -= 3; /* ".", ".." and the directory's own descriptor */
    }
    gw_expo_family(e, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    gw_expo_sample(e, "process_cpu_seconds_total", NULL, 0,
                   tck > 0 ? (double)(utime + stime) / (double)tck : 0);
    gw_expo_family(e, "process_resident_memory_bytes", "gauge", "Resident memory size.");
    gw_expo_sample(e, "process_resident_memory_bytes", NULL, 0, (double)rss * (double)page);
    gw_expo_family(e, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
    gw_expo_sample(e, "process_virtual_memory_bytes", NULL, 0, (double)vsize);
    gw_expo_family(e, "process_open_fds", "gauge", "Open file descriptors.");
    gw_expo_sample(e, "process_open_fds", NULL, 0, fds);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        gw_expo_family(e, "process_max_fds", "gauge", "Limit of open file descriptors.");
        gw_expo_sample(e, "process_max_fds", NULL, 0, (double)rl.rlim_cur);
    }
    gw_expo_family(e, "process_start_time_seconds", "gauge", "Start time (unix time).");
    gw_expo_sample(e, "process_start_time_seconds", NULL, 0, start_unix);
}

void gw_metrics_scrape(struct gw_expo *e, const struct gw_config *cfg,
                       const struct gw_keytab *kt)
{
    unsigned n = cfg->nkeys + (kt != NULL ? kt->nkeys : 0), i = 0;
    const struct gw_team_key **v = calloc(n ? n : 1, sizeof(*v));
    struct keys ks = { v, n };
    char why[256];

    if (v == NULL) {
        e->full = 1; /* out of memory: the caller answers 500 */
        return;
    }
    for (unsigned k = 0; k < cfg->nkeys; k++)
        v[i++] = &cfg->keys[k];
    for (unsigned k = 0; kt != NULL && k < kt->nkeys; k++)
        v[i++] = &kt->keys[k];

    gw_expo_family(e, "videogw_build_info", "gauge", "The gateway's version (always 1).");
    gw_expo_sample(e, "videogw_build_info", (struct gw_label[]){ { "version", GW_VERSION } }, 1,
                   1);
    gw_expo_family(e, "videogw_ready", "gauge", "1 when /readyz answers 200, else 0.");
    gw_expo_sample(e, "videogw_ready", NULL, 0, gw_readyz_check(why, sizeof(why)) == GW_OK);
    requests(e, &ks);
    histograms(e, "videogw_http_request_duration_seconds",
               "Request durations, from the request head to the end of the answer, by route.",
               0);
    histograms(e, "videogw_upstream_response_head_seconds",
               "Upstream wait: from the request sent upstream to the response head, by route.",
               1);
    bytes(e);
    inflight(e);
    upstream(e, cfg);
    per_key(e, &ks);
    store_metrics(e);
    reload_metrics(e);
    process_metrics(e);
    free(v);
}
