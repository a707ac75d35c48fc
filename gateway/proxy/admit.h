/*
 * admit.h - admission: may this authenticated request proceed now?
 *
 * The seam where per-key limits (requests per minute, concurrency, daily
 * video-seconds) plug in, with a local and a Redis engine. The answer may be
 * immediate or come later (a Redis round trip): the proxy holds the request
 * (its body buffered, bounded, the client paused) in the ADMIT state until then.
 */
#ifndef GW_ADMIT_H
#define GW_ADMIT_H

#include "config.h"
#include "gcra.h"
#include "router.h"

struct gw_worker;
struct gw_admission; /* a pending asynchronous decision */
struct gw_lease;     /* a concurrency slot held in Redis (limits/redis_limits.h) */

/* A multipart create of at most this many bytes (Content-Length) is held whole
 * until its limits are decided at its end (gw_admit_req.defer): fields only, or a
 * small image; a larger upload is decided on its head, so that a refusal spares
 * the client the upload and the gateway holds no more than it streams. */
#define GW_ADMIT_HOLD_MAX (64 * 1024)

struct gw_admit_req {
    const struct gw_team_key *key;
    const struct gw_route *route;
    const char *rid;
    /* out: the key's rate state for x-ratelimit-* headers (limit 0: none), and on a
     * refusal how long to wait (Retry-After) */
    struct gw_gcra_result *rate;
    int64_t *retry_after_ms;
    /* the exchange's: what a create admitted by the limits in Redis holds (its
     * concurrency slot's lease), given back by gw_admit_release; NULL there: none */
    struct gw_lease **lease;
    /* the caller holds the whole body before anything of it goes upstream (a JSON
     * create, a multipart one up to GW_ADMIT_HOLD_MAX, without Expect:
     * 100-continue; held while gw_admit_deferred): with the limits and a daily budget in
     * Redis, the decision waits for the body's end and is made there with the
     * reservation, in one script (one round trip instead of two; gw_admit_quota) */
    int defer;
};

/* Called exactly once for a GW_AGAIN decision, from the worker's loop, never
 * from inside gw_admit(): err == NULL admits, otherwise it says why not (429...). */
typedef void (*gw_admit_cb)(void *arg, const struct gw_error *err);

/*
 * Decide. GW_OK: admitted now. GW_ERR: refused now, err filled (and cb never
 * called). GW_AGAIN: *pending is set, and cb will be called later unless
 * gw_admit_cancel(*pending) is called first (the client went away).
 */
int gw_admit(struct gw_worker *w, const struct gw_admit_req *r, gw_admit_cb cb, void *arg,
             struct gw_admission **pending, struct gw_error *err);

void gw_admit_cancel(struct gw_admission *a);

/* A create's put gives back its concurrency slot in the same script (Redis): 1
 * and the slot's key and id when the exchange holds one, else 0. Once the put is
 * acknowledged, gw_admit_put_released: the release at the exchange's end then
 * sends nothing (one command fewer per create). */
int gw_admit_put_lease(const struct gw_lease *lease, const char **key, const char **id);
void gw_admit_put_released(struct gw_lease *lease);

/* 1 while the exchange's lease is the mark of a decision put off to the body's
 * end (r->defer): nothing is decided (nor counted) yet. */
int gw_admit_deferred(const struct gw_lease *lease);

/* 1 if the route makes a job upstream (create, remix): what per-key limits count. */
int gw_admit_counts(const struct gw_route *route);

/* The exchange is over (admitted ones only): release what admission took
 * (a concurrency slot, say). */
void gw_admit_release(struct gw_worker *w, const struct gw_admit_req *r);

/* ------------------------------------------------------- daily video-seconds */

struct gw_quota_wait; /* a reservation Redis has not answered yet */

struct gw_quota_req {
    const struct gw_team_key *key;
    uint32_t seconds;
    /* out (the exchange's; written before cb or the return): the UTC day to settle
     * against, Retry-After of a refusal, 1 if the reservation is Redis's */
    int64_t *day;
    int64_t *retry_after_ms;
    int *remote;
    /* the exchange's (as in gw_admit_req): a decision gw_admit put off is made
     * with the reservation (rate and lease written as gw_admit would); NULL: none */
    struct gw_gcra_result *rate;
    struct gw_lease **lease;
};

/*
 * Reserve the create's seconds of the key's daily budget: this instance's
 * (limiter.c), or, with the store on Redis, every instance's (one script).
 * GW_OK: reserved. GW_ERR: refused (429 insufficient_quota, 503 when Redis is
 * unreachable and on_failure = refuse), err filled. GW_AGAIN: *pending set, and
 * cb(arg, NULL: reserved | the refusal) comes later unless
 * gw_admit_quota_cancel(*pending) first (which gives back what Redis reserves).
 * A decision put off by gw_admit (r->lease) is made here too: its refusals are
 * gw_admit's (429 rate_limit_exceeded ...), and it may wait for upstream_rpm.
 */
int gw_admit_quota(struct gw_worker *w, const struct gw_quota_req *r, gw_admit_cb cb,
                   void *arg, struct gw_quota_wait **pending, struct gw_error *err);

void gw_admit_quota_cancel(struct gw_quota_wait *q);

/* The upstream answered: kept (a job exists) or given back (none). */
void gw_admit_quota_settle(struct gw_worker *w, const struct gw_team_key *k, uint32_t seconds,
                           int64_t day, int remote, int kept);

/* A job that reserved nothing (an edit, a remix) counts `seconds` of key k's day
 * at unix_ms, whatever the limit (limiter.h gw_limiter_charge; in Redis too). */
void gw_admit_quota_charge(struct gw_worker *w, const struct gw_team_key *k, uint32_t seconds,
                           int64_t unix_ms);

/* A job of key k made at created_unix_ms failed: its seconds come back (once: the
 * store says which call). */
void gw_admit_quota_refund(struct gw_worker *w, const struct gw_team_key *k, uint32_t seconds,
                           int64_t created_unix_ms);

#endif
