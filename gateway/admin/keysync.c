/*
 * keysync.c - the poll that keeps the loops' key tables current (keysync.h).
 */
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "keysync.h"
#include "limiter.h"
#include "log.h"

struct gw_keysync_wait {
    struct gw_keysync_wait *next;
    void (*done)(void *arg); /* NULL: cancelled */
    void *arg;
};

#define RETIRE_MS 1000 /* a replaced table is released this long after (keysync.h) */
#define RETIRE_MAX 16  /* tables waiting for their release; past it, the oldest goes now */

struct retired {
    struct gw_keytab *t;
    int64_t at_ms;          /* monotonic */
};

struct gw_keysync {
    struct gw_worker *w;
    struct gw_limiter *lim;
    gw_keysync_publish_fn publish;
    void *arg;
    struct event *timer;
    uint64_t version;             /* of the table published last */
    int busy;                     /* a version poll or a load is under way */
    int force;                    /* atomic: rebuild at the next poll */
    int failing;                  /* the last poll failed: logged once */
    struct gw_keysync_wait *now;  /* answered when the load under way is published */
    struct gw_keysync_wait *next; /* came during it: answered after the next load */
    struct retired retired[RETIRE_MAX]; /* replaced tables, oldest first */
    unsigned nretired;
};

static void retire(struct gw_keysync *ks, struct gw_keytab *old)
{
    if (old == NULL)
        return;
    if (ks->nretired == RETIRE_MAX) { /* sixteen publishes within a second: rare */
        gw_keytab_release(ks->retired[0].t);
        memmove(ks->retired, ks->retired + 1, (RETIRE_MAX - 1) * sizeof(ks->retired[0]));
        ks->nretired--;
    }
    ks->retired[ks->nretired++] = (struct retired){ old, gw_worker_now_ms() };
}

static void release_retired(struct gw_keysync *ks)
{
    int64_t now = gw_worker_now_ms();
    unsigned i = 0;

    while (i < ks->nretired && now - ks->retired[i].at_ms >= RETIRE_MS)
        gw_keytab_release(ks->retired[i++].t);
    memmove(ks->retired, ks->retired + i, (ks->nretired - i) * sizeof(ks->retired[0]));
    ks->nretired -= i;
}

static void answer(struct gw_keysync_wait *list)
{
    struct gw_keysync_wait *next;

    for (; list != NULL; list = next) {
        next = list->next;
        if (list->done != NULL)
            list->done(list->arg);
        free(list);
    }
}

/* The poll or load is over: answer who waited for it, start the next load if
 * someone asked for one meanwhile. */
static void finish(struct gw_keysync *ks)
{
    struct gw_keysync_wait *done = ks->now;

    ks->busy = 0;
    ks->now = ks->next;
    ks->next = NULL;
    if (ks->now != NULL) /* at the next turn of the loop: tick() */
        event_active(ks->timer, EV_TIMEOUT, 1);
    answer(done);
}

static void failed(struct gw_keysync *ks, const char *what, const char *msg)
{
    if (!ks->failing)
        gw_log(GW_LOG_WARN, "keys: cannot %s (the keys in use stay): %s", what, msg);
    ks->failing = 1;
}

static void loaded(void *arg, const struct gw_store_res *res)
{
    struct gw_keysync *ks = arg;
    struct gw_keytab *t;

    if (res->rc != GW_OK) {
        failed(ks, "load the keys", res->err->message);
        finish(ks);
        return;
    }
    const struct gw_config *cfg = gw_worker_cfg(ks->w); /* a reload may swap it meanwhile */
    gw_config_hold(cfg);
    t = gw_keytab_build(cfg, res->keys, res->nkeys, res->keys_version);
    gw_config_release(cfg);
    if (t == NULL || gw_limiter_bind_keys(ks->lim, t->keys, t->nkeys) != GW_OK) {
        gw_keytab_release(t);
        failed(ks, "load the keys", "out of memory");
        finish(ks);
        return;
    }
    if (t->skipped > 0)
        gw_log(GW_LOG_WARN, "keys: %u store key(s) named like a config key are not used "
               "(the config's [key] wins)", t->skipped);
    if (res->keys_skipped != NULL)
        gw_log(GW_LOG_WARN, "keys: store key(s) %s are malformed in the store (a field "
               "missing, of another type, or a limit that is not a number) and refused "
               "until written again (gateway keys set NAME, or the admin API)",
               res->keys_skipped);
    ks->failing = 0;
    ks->version = res->keys_version;
    gw_log(GW_LOG_INFO, "keys: %u store key(s) in use (version %llu)", t->nkeys,
           (unsigned long long)ks->version);
    retire(ks, ks->publish(ks->arg, t));
    finish(ks);
}

static void load(struct gw_keysync *ks)
{
    struct gw_error err;

    ks->busy = 1;
    __atomic_store_n(&ks->force, 0, __ATOMIC_RELAXED);
    if (gw_store_keys_list(ks->w->store, NULL, 0, loaded, ks, NULL, &err) != GW_AGAIN) {
        failed(ks, "load the keys", err.message);
        finish(ks);
    }
}

static void polled(void *arg, const struct gw_store_res *res)
{
    struct gw_keysync *ks = arg;

    if (res->rc != GW_OK) {
        failed(ks, "poll the keys' version", res->err->message);
        finish(ks);
        return;
    }
    if (res->keys_version != ks->version || __atomic_load_n(&ks->force, __ATOMIC_RELAXED)) {
        load(ks);
        return;
    }
    finish(ks);
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct gw_keysync *ks = arg;
    struct gw_error err;

    release_retired(ks);
    if (ks->busy)
        return;
    if (ks->now != NULL) { /* a write was made here: no need to ask whether */
        load(ks);
        return;
    }
    if (ks->w->draining)
        return;
    ks->busy = 1;
    if (gw_store_keys_version(ks->w->store, polled, ks, NULL, &err) != GW_AGAIN) {
        failed(ks, "poll the keys' version", err.message);
        finish(ks);
    }
}

struct gw_keysync *gw_keysync_start(struct gw_worker *w, struct gw_limiter *lim,
                                    uint64_t version, gw_keysync_publish_fn publish,
                                    void *arg)
{
    struct gw_keysync *ks = calloc(1, sizeof(*ks));
    struct timeval tv = { GW_KEYSYNC_POLL_MS / 1000, (GW_KEYSYNC_POLL_MS % 1000) * 1000 };

    if (ks == NULL)
        return NULL;
    ks->w = w;
    ks->lim = lim;
    ks->version = version;
    ks->publish = publish;
    ks->arg = arg;
    ks->timer = event_new(w->base, -1, EV_PERSIST, tick, ks);
    if (ks->timer == NULL || event_add(ks->timer, &tv) != 0) {
        if (ks->timer != NULL)
            event_free(ks->timer);
        free(ks);
        return NULL;
    }
    return ks;
}

struct gw_keysync_wait *gw_keysync_kick(struct gw_keysync *ks, void (*done)(void *arg),
                                        void *arg)
{
    struct gw_keysync_wait *wt = calloc(1, sizeof(*wt));

    if (wt == NULL)
        return NULL;
    wt->done = done;
    wt->arg = arg;
    if (ks->busy) { /* what is under way may have started before the write */
        wt->next = ks->next;
        ks->next = wt;
        return wt;
    }
    /* loaded from tick(), at the next turn of the loop: done is never called
     * from inside this call */
    wt->next = ks->now;
    ks->now = wt;
    event_active(ks->timer, EV_TIMEOUT, 1);
    return wt;
}

void gw_keysync_cancel(struct gw_keysync_wait *wt)
{
    if (wt != NULL)
        wt->done = NULL;
}

void gw_keysync_force(struct gw_keysync *ks)
{
    __atomic_store_n(&ks->force, 1, __ATOMIC_RELAXED);
}
