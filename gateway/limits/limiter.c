/*
 * limiter.c - per-key limit state behind one mutex per key (see limiter.h).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "limiter.h"
#include "quota.h"

struct key_state {
    pthread_mutex_t mu;
    struct gw_gcra rate;
    unsigned inflight;    /* admitted creates not yet released */
    struct gw_quota quota;
};

#define SLOTS_MAX 65536 /* key names over the process's life; the array is virtual
                           memory mostly never touched */

/* States are per key *name*, kept across reloads: a key that stays keeps its
 * counters, a new one starts fresh, a removed one's state simply goes unused. */
struct gw_limiter {
    const struct gw_config *cfg;  /* the current one (atomic): upstream_rpm */
    pthread_mutex_t bind_mu;      /* gw_limiter_bind against itself */
    struct key_state **slots;     /* written before nslots grows (release) */
    char **names;
    unsigned nslots;              /* atomic */
    pthread_mutex_t up_mu;
    int64_t up_next_us;           /* upstream_rpm: the next free instant, monotonic µs */
};

/* Each key gets the state of its name (a new one if none): bind_mu held. */
static int bind_keys(struct gw_limiter *l, struct gw_team_key *keys, unsigned nkeys)
{
    for (unsigned i = 0; i < nkeys; i++) {
        unsigned n = __atomic_load_n(&l->nslots, __ATOMIC_ACQUIRE), j;
        for (j = 0; j < n && strcmp(l->names[j], keys[i].name) != 0; j++)
            ;
        if (j == n) {
            struct key_state *st = calloc(1, sizeof(*st));
            char *name = strdup(keys[i].name);
            if (st == NULL || name == NULL || n == SLOTS_MAX) {
                free(st);
                free(name);
                return GW_ERR;
            }
            pthread_mutex_init(&st->mu, NULL);
            l->slots[n] = st;
            l->names[n] = name;
            __atomic_store_n(&l->nslots, n + 1, __ATOMIC_RELEASE);
        }
        keys[i].slot = j;
    }
    return GW_OK;
}

int gw_limiter_bind(struct gw_limiter *l, struct gw_config *cfg)
{
    int rc;

    pthread_mutex_lock(&l->bind_mu);
    rc = bind_keys(l, cfg->keys, cfg->nkeys);
    if (rc == GW_OK)
        __atomic_store_n(&l->cfg, cfg, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&l->bind_mu);
    return rc;
}

int gw_limiter_bind_keys(struct gw_limiter *l, struct gw_team_key *keys, unsigned nkeys)
{
    int rc;

    pthread_mutex_lock(&l->bind_mu);
    rc = bind_keys(l, keys, nkeys);
    pthread_mutex_unlock(&l->bind_mu);
    return rc;
}

struct gw_limiter *gw_limiter_new(struct gw_config *cfg)
{
    struct gw_limiter *l = calloc(1, sizeof(*l));

    if (l == NULL)
        return NULL;
    l->slots = calloc(SLOTS_MAX, sizeof(*l->slots));
    l->names = calloc(SLOTS_MAX, sizeof(*l->names));
    pthread_mutex_init(&l->bind_mu, NULL);
    pthread_mutex_init(&l->up_mu, NULL);
    if (l->slots == NULL || l->names == NULL || gw_limiter_bind(l, cfg) != GW_OK) {
        gw_limiter_free(l);
        return NULL;
    }
    return l;
}

void gw_limiter_free(struct gw_limiter *l)
{
    if (l == NULL)
        return;
    for (unsigned i = 0; i < l->nslots; i++) {
        pthread_mutex_destroy(&l->slots[i]->mu);
        free(l->slots[i]);
        free(l->names[i]);
    }
    pthread_mutex_destroy(&l->bind_mu);
    pthread_mutex_destroy(&l->up_mu);
    free(l->slots);
    free(l->names);
    free(l);
}

static struct key_state *state_of(struct gw_limiter *l, const struct gw_team_key *k)
{
    return k != NULL && k->slot < __atomic_load_n(&l->nslots, __ATOMIC_ACQUIRE)
               ? l->slots[k->slot]
               : NULL;
}

int gw_limiter_admit(struct gw_limiter *l, const struct gw_team_key *k, int64_t mono_ms,
                     struct gw_gcra_result *rate, int64_t *retry_after_ms,
                     struct gw_error *err)
{
    struct key_state *s = state_of(l, k);
    const struct gw_limits *lim = &k->limits;
    int rc = GW_OK;

    memset(rate, 0, sizeof(*rate));
    *retry_after_ms = 0;
    if (s == NULL)
        return GW_OK;
    pthread_mutex_lock(&s->mu);
    if (lim->concurrency > 0 && s->inflight >= (unsigned)lim->concurrency) {
        /* checked first: a refused create must not use up a request of the minute */
        gw_gcra_peek(&s->rate, (uint32_t)lim->rpm, (uint32_t)lim->burst, mono_ms, rate);
        *retry_after_ms = 1000;
        pthread_mutex_unlock(&s->mu);
        return gw_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                            "Too many creates in flight for this API key: at most %d at "
                            "once. Retry when one of them has been answered.",
                            lim->concurrency);
    }
    if (gw_gcra_take(&s->rate, (uint32_t)lim->rpm, (uint32_t)lim->burst, mono_ms, rate) !=
        GW_OK) {
        *retry_after_ms = rate->retry_after_ms;
        rc = gw_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                          "Rate limit reached for this API key: %d creates per minute. "
                          "Please try again in %" PRId64 " ms.",
                          lim->rpm, rate->retry_after_ms);
    } else {
        s->inflight++;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void gw_limiter_release(struct gw_limiter *l, const struct gw_team_key *k)
{
    struct key_state *s = state_of(l, k);

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->inflight > 0)
        s->inflight--;
    pthread_mutex_unlock(&s->mu);
}

int gw_limiter_reserve(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t unix_ms, int64_t *day, int64_t *retry_after_ms,
                       struct gw_error *err)
{
    struct key_state *s = state_of(l, k);
    uint32_t limit = (uint32_t)k->limits.daily_seconds;
    int rc;

    *day = gw_quota_day(unix_ms);
    *retry_after_ms = 0;
    if (s == NULL)
        return GW_OK;
    pthread_mutex_lock(&s->mu);
    rc = gw_quota_reserve(&s->quota, limit, seconds, unix_ms, retry_after_ms);
    if (rc == GW_OK)
        *day = s->quota.day;
    pthread_mutex_unlock(&s->mu);
    if (rc == GW_OK)
        return GW_OK;
    return gw_limiter_over_budget(seconds, limit, err);
}

int gw_limiter_over_budget(uint32_t seconds, uint32_t limit, struct gw_error *err)
{
    return gw_error_set(err, 429, "rate_limit_error", "insufficient_quota", "seconds",
                        seconds > limit
                            ? "This job's %u video-seconds exceed the API key's daily budget "
                              "of %u seconds."
                            : "The API key's daily budget of video-seconds is used up (%u "
                              "more would exceed %u). It renews at 00:00 UTC.",
                        seconds, limit);
}

void gw_limiter_charge(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t unix_ms)
{
    struct key_state *s = state_of(l, k);

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    /* no limit for this reservation: the job exists; it counts from now on */
    if (gw_quota_reserve(&s->quota, 0, seconds, unix_ms, NULL) == GW_OK)
        gw_quota_settle(&s->quota, seconds, s->quota.day, 1);
    pthread_mutex_unlock(&s->mu);
}

void gw_limiter_settle(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t day, int kept)
{
    struct key_state *s = state_of(l, k);

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    gw_quota_settle(&s->quota, seconds, day, kept);
    pthread_mutex_unlock(&s->mu);
}

void gw_limiter_refund(struct gw_limiter *l, const struct gw_team_key *k, uint32_t seconds,
                       int64_t created_unix_ms)
{
    struct key_state *s = state_of(l, k);

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    gw_quota_refund(&s->quota, seconds, gw_quota_day(created_unix_ms));
    pthread_mutex_unlock(&s->mu);
}

int gw_limiter_upstream_slot(struct gw_limiter *l, int64_t mono_ms, int64_t *wait_ms,
                             struct gw_error *err)
{
    const struct gw_config *cfg = __atomic_load_n(&l->cfg, __ATOMIC_ACQUIRE);
    int rpm = cfg->upstream_rpm;
    int64_t now = mono_ms * 1000, interval, slot;

    *wait_ms = 0;
    if (rpm <= 0)
        return GW_OK;
    interval = (int64_t)60000000 / rpm; /* µs; rounding down errs by < 1 µs a slot */
    pthread_mutex_lock(&l->up_mu);
    slot = l->up_next_us > now ? l->up_next_us : now;
    if (slot - now > (int64_t)cfg->upstream_queue_ms * 1000) {
        int64_t retry = (slot - now - (int64_t)cfg->upstream_queue_ms * 1000 + 999) / 1000;
        pthread_mutex_unlock(&l->up_mu);
        *wait_ms = retry > 0 ? retry : 1;
        return gw_error_set(err, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                            "The gateway's request rate towards the video service is "
                            "saturated (%d creates per minute for all keys). Please try again "
                            "shortly.", rpm);
    }
    l->up_next_us = slot + interval;
    pthread_mutex_unlock(&l->up_mu);
    *wait_ms = (slot - now + 999) / 1000;
    return GW_OK;
}

void gw_limiter_seed(struct gw_limiter *l, const struct gw_team_key *k, int64_t day,
                     uint64_t seconds)
{
    struct key_state *s = state_of(l, k);

    if (s == NULL)
        return;
    pthread_mutex_lock(&s->mu);
    s->quota.day = day;
    s->quota.used = seconds;
    pthread_mutex_unlock(&s->mu);
}
