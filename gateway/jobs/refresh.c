/*
 * refresh.c - the ledger settles by itself (issue 6): every [jobs] refresh the
 * first event loop claims the unfinished jobs that are due (the store hands each
 * to one claimer only) and asks the upstream for them, one at a time, each with
 * the upstream key that created it. What it sees is stored like a retrieve's
 * answer, so a job that failed gives its seconds back even when nobody polls it,
 * and the list shows current states. Once an hour it also prunes the ledger rows
 * older than [jobs] retention (the daily totals stay).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "exchange.h"
#include "log.h"
#include "refresh.h"
#include "store/store.h"

#define REFRESH_BATCH 16           /* jobs claimed per tick */
#define REFRESH_BODY_MAX (64 * 1024) /* a job object */

#define PRUNE_EVERY_S 3600 /* [jobs] retention is applied this often */

struct gw_refresher {
    struct gw_worker *w;
    struct event *tick;
    int64_t pruned_at;             /* unix s of the last prune */
    struct gw_store_op *claim;     /* pending claim */
    char ids[REFRESH_BATCH][GW_ID_MAX + 1];
    int keys[REFRESH_BATCH];       /* upstream key index of each, -1: not configured */
    unsigned n, next;              /* claimed jobs, the next to fetch */
    struct gw_upconn *up;          /* the fetch in progress */
    struct evbuffer *body;
};

static void fetch_next(struct gw_refresher *r);

static void fetch_done(struct gw_refresher *r)
{
    if (r->up != NULL)
        gw_upconn_release(r->up);
    r->up = NULL;
    evbuffer_drain(r->body, evbuffer_get_length(r->body));
    fetch_next(r);
}

static void fetch_event(struct gw_upconn *c, enum gw_up_event ev, void *arg)
{
    struct gw_refresher *r = arg;
    const char *id = r->ids[r->next - 1];
    int status;

    switch (ev) {
    case GW_UP_CONNECTED: {
        char tail[GW_ID_MAX + 2];
        int n = snprintf(tail, sizeof(tail), "/%s", id);
        gw_upconn_start_request(c, gw_worker_cfg(r->w), "GET", (struct gw_str){ tail, (size_t)n },
                                (struct gw_str){ "", 0 }, (unsigned)r->keys[r->next - 1]);
        evbuffer_add(gw_upconn_output(c), "X-Request-Id: refresh\r\n\r\n", 25);
        gw_upconn_request_sent(c);
        break;
    }
    case GW_UP_WRITABLE:
    case GW_UP_HEADERS:
        break;
    case GW_UP_BODY:
        if (evbuffer_get_length(r->body) + evbuffer_get_length(gw_upconn_body(c)) >
            REFRESH_BODY_MAX) {
            fetch_done(r);
            return;
        }
        evbuffer_add_buffer(r->body, gw_upconn_body(c));
        break;
    case GW_UP_DONE:
        evbuffer_add_buffer(r->body, gw_upconn_body(c));
        status = gw_upconn_status(c);
        gw_keypool_report(&r->w->keys, (unsigned)r->keys[r->next - 1], status,
                          gw_upconn_header(c, "Retry-After"), gw_proxy_now_ms());
        if (status == 200)
            gw_jobs_store_seen(r->w, id, (const char *)evbuffer_pullup(r->body, -1),
                               evbuffer_get_length(r->body));
        else
            gw_log(GW_LOG_INFO, "refresh: job %s: upstream status %d", id, status);
        fetch_done(r);
        break;
    case GW_UP_ERROR:
        gw_log(GW_LOG_INFO, "refresh: job %s: %s", id, gw_upconn_error(c)->message);
        fetch_done(r);
        break;
    }
}

static void fetch_next(struct gw_refresher *r)
{
    while (r->next < r->n) {
        unsigned i = r->next++;
        if (r->keys[i] < 0 ||
            gw_keypool_is_out(&r->w->keys, (unsigned)r->keys[i], gw_proxy_now_ms()))
            continue; /* its key is gone or refused: nothing to ask with */
        r->up = gw_upstream_lease(r->w->up, fetch_event, r);
        if (r->up != NULL)
            return;
    }
    r->n = r->next = 0; /* the batch is done: the next tick claims more */
}

static void claimed(void *arg, const struct gw_store_res *res)
{
    struct gw_refresher *r = arg;

    r->claim = NULL;
    if (res->rc != GW_OK)
        return;
    r->n = r->next = 0;
    for (size_t i = 0; i < res->njobs && r->n < REFRESH_BATCH; i++) {
        snprintf(r->ids[r->n], sizeof(r->ids[r->n]), "%s", res->jobs[i].id);
        r->keys[r->n] = gw_config_upstream_key(gw_worker_cfg(r->w), res->jobs[i].upstream_key);
        r->n++;
    }
    fetch_next(r);
}

static void tick(evutil_socket_t fd, short ev, void *arg)
{
    struct gw_refresher *r = arg;
    struct gw_error err;
    int64_t now = gw_proxy_unix_ms() / 1000;
    int64_t every = gw_worker_cfg(r->w)->jobs_refresh_ms / 1000;

    if (r->w->draining)
        return;
    if (now - r->pruned_at >= PRUNE_EVERY_S) {
        /* ledger rows past [jobs] retention go; the daily totals stay */
        r->pruned_at = now;
        gw_store_prune(r->w->store, now - gw_worker_cfg(r->w)->jobs_retention_ms / 1000, now, NULL, NULL,
                       NULL, &err);
    }
    if (r->claim != NULL || r->n > 0)
        return; /* the last batch is still being fetched */
    /* a job is due once a whole period has passed since it was last seen */
    gw_store_job_claim_unfinished(r->w->store, now - (every > 0 ? every : 1), now,
                                  REFRESH_BATCH, claimed, r, &r->claim, &err);
}

struct gw_refresher *gw_refresh_start(struct gw_worker *w)
{
    struct gw_refresher *r;
    const struct gw_config *cfg = gw_worker_cfg(w);
    struct timeval tv = { cfg->jobs_refresh_ms / 1000, (cfg->jobs_refresh_ms % 1000) * 1000 };

    if (w->store == NULL)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (r == NULL || (r->body = evbuffer_new()) == NULL ||
        (r->tick = event_new(w->base, -1, EV_PERSIST, tick, r)) == NULL) {
        if (r != NULL && r->body != NULL)
            evbuffer_free(r->body);
        free(r);
        return NULL;
    }
    r->w = w;
    event_add(r->tick, &tv);
    return r;
}
