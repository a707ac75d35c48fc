/*
 * store.h - the store: every accepted job (its owner, the upstream key that
 * created it, the ledger of what it cost), daily usage totals and idempotency
 * records, behind one asynchronous interface. Engines: SQLite (store_sqlite.c,
 * one instance); Redis (store_redis.c, several instances), behind the same calls.
 *
 * Threads. No event loop ever waits for the database. Every loop that uses the
 * store has its own struct gw_store_loop; a call made with it on that loop's
 * thread returns at once, and its callback runs later on that same thread. The
 * SQLite engine runs every operation on one store thread, many operations to a
 * transaction (group commit), and hands results back through the loop's
 * eventfd (docs/store.md).
 *
 * The contract of every asynchronous call below (gw_store_job_put ... gw_store_usage):
 *   - it returns GW_AGAIN: the operation is queued; cb(arg, res) will be called
 *     exactly once, on the loop's thread, never from inside the call, unless
 *     gw_store_cancel(*op) is called first. *op (if op is not NULL) is the
 *     handle for that, valid until the callback has run or cancel was called.
 *   - or GW_ERR: nothing was queued, err says why (a bad argument: status 400,
 *     code invalid_value, param set; the store closing, overloaded (its queue
 *     full: the disk stalls) or out of memory: 503), *op is NULL, and cb is
 *     never called.
 *   Operations made on one loop complete in the order they were made (a put
 *   then a get of the same id finds it), a prune excepted (it works in steps).
 *   cb may be NULL (fire and forget: a refresh writing what it saw); the
 *   operation is done all the same, and a failure is logged by the store.
 *   Every argument is copied before the call returns: strings and buffers may
 *   be freed right after.
 *
 * Results (struct gw_store_res) are borrowed: valid only while the callback
 * runs; copy what you keep. res->rc is about the store working: GW_OK, or
 * GW_ERR with res->err (a 503 `store_error`, the message safe to show: no path,
 * no secret). "No such job" is data (res->job == NULL), not an error.
 *
 * Writes are durable when their callback runs: a put's row is committed (in
 * the WAL; with synchronous = full, on disk) before its callback is called, so
 * a process killed right after answering the client loses nothing it answered.
 *
 * Times are arguments, never read from a clock here (tests pass their own):
 * unix seconds (UTC), like a job object's created_at.
 */
#ifndef GW_STORE_H
#define GW_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "gw.h"

struct event_base;
struct gw_store;      /* an open store (an engine) */
struct gw_store_loop; /* the store as seen by one event loop */
struct gw_store_op;   /* a pending asynchronous operation */

#define GW_STORE_SCHEMA_VERSION 4  /* PRAGMA user_version this binary writes */
#define GW_STORE_LIST_MAX 100      /* list: limit is 1..100 (OpenAI's bounds) */
#define GW_STORE_LIST_DEFAULT 20   /* ... and 20 when the client gives none */
#define GW_STORE_CLAIM_MAX 1000    /* claim_unfinished: limit is 1..1000 */
#define GW_STORE_IDEM_TTL_S 86400  /* an idempotency record answers for 24 h */
#define GW_STORE_IDEM_KEY_MAX 255  /* bytes of an Idempotency-Key */
#define GW_STORE_ID_MAX 128        /* bytes of a job id (router.c's bound) */
#define GW_STORE_OBJECT_MAX (1 << 20) /* bytes of a job object or a stored answer */

/* ------------------------------------------------------------------ jobs */

enum gw_job_kind {
    GW_JOB_CREATE = 0,
    GW_JOB_REMIX,
    GW_JOB_EDIT,
    GW_JOB_EXTEND,
};

/* The OpenAI job states. A status only moves forward (queued < in_progress <
 * completed | failed; those two are final), so a stale refresh answered late
 * cannot undo a newer one. */
enum gw_job_status {
    GW_JOB_QUEUED = 0,
    GW_JOB_IN_PROGRESS,
    GW_JOB_COMPLETED,
    GW_JOB_FAILED,
};

struct gw_job {
    const char *id;           /* the upstream's job id, 1..128 bytes */
    const char *key_name;     /* the team key that created it: its owner */
    const char *upstream_key; /* a stable label of the upstream key it was created with
                               * (follow-ups use the same one); never the secret */
    enum gw_job_kind kind;
    const char *model_asked;  /* as the client sent it (an alias, say) */
    const char *model_sent;   /* as the upstream got it: usage is counted by this one */
    int seconds;              /* video seconds asked: what the provider bills */
    const char *size;         /* "16x9", "720x1280"... */
    enum gw_job_status status;
    int64_t created_at;       /* unix s: the job object's; lists are ordered by it */
    int64_t updated_at;       /* unix s: when the row was last written from a job object
                               * (put, or an update that was applied) */
    const char *object;       /* the last job object seen (JSON), object_len bytes; */
    size_t object_len;        /* in results also NUL-terminated */
    /* put only, Redis only (SQLite ignores them): a concurrency slot of the creating
     * key given back in the put's own script (limits/redis_limits.h: member lease_id
     * of P conc:{lease_key}); NULL: none */
    const char *lease_key;
    const char *lease_id;
    /* results only (ignored by put): */
    int64_t refreshed_at;     /* unix s: last refreshed or claimed for a refresh */
    int64_t deleted_at;       /* unix s: when DELETE succeeded, 0 if it has not */
    int refunded;             /* 1: its seconds were given back (a failed job) */
};

enum gw_order {
    GW_ORDER_DESC = 0, /* newest first: OpenAI's default */
    GW_ORDER_ASC,
};

struct gw_job_list_query {
    const char *key_name; /* whose jobs (required): a key sees only its own */
    const char *after;    /* cursor: a job id of that key; NULL or "": from the start */
    unsigned limit;       /* 1..GW_STORE_LIST_MAX */
    enum gw_order order;  /* by created_at, then the order they were put */
};

struct gw_job_update {
    const char *id;
    enum gw_job_status status; /* backwards (a stale answer): nothing is written */
    const char *object;        /* the job object as just seen; NULL: keep the stored one */
    size_t object_len;
    int64_t now;               /* unix s: becomes updated_at and refreshed_at */
};

/* ------------------------------------------------------ idempotency, usage */

enum gw_idem_state {
    GW_IDEM_NEW = 0,   /* recorded now, in flight: go ahead, then finish or abort it */
    GW_IDEM_IN_FLIGHT, /* the first request is still running: 409 idempotency_key_in_use */
    GW_IDEM_DONE,      /* answered before: replay res->answer_* */
};

/* Rows of usage_daily: one per UTC day, team key and model sent. */
struct gw_usage_query {
    const char *since;    /* "YYYY-MM-DD" (UTC, inclusive); NULL: from the first day */
    const char *until;    /* "YYYY-MM-DD" (inclusive); NULL: to the last day */
    const char *key_name; /* NULL: every key */
    int by_kind;          /* 1: one row per kind of job too (create, remix, edit, extend) */
};

struct gw_usage_row {
    char day[11];         /* "YYYY-MM-DD": the UTC day the jobs were created */
    const char *key_name;
    const char *model;    /* model sent */
    int64_t jobs;
    int64_t seconds;      /* video seconds of those jobs */
    int64_t failed;       /* jobs seen failed */
    int64_t refunded_seconds; /* seconds given back for them (counted on the creation day) */
    const char *kind;     /* by_kind: "create", "remix", "edit", "extend"; else NULL */
};

/* ------------------------------------------------------ characters (issue 9) */

#define GW_STORE_CHARACTER_NAME_MAX 1024 /* bytes of a character's name */

/* A character made through POST /v1/videos/characters: like a job, it belongs to
 * the team key that made it and is pinned to its upstream key. */
struct gw_character {
    const char *id;           /* the upstream's character id, 1..128 bytes */
    const char *key_name;     /* the team key that created it: its owner */
    const char *upstream_key; /* label of the upstream key it was created with */
    const char *name;         /* its display name ("" if the upstream gave none) */
    int64_t created_at;       /* unix s: the character object's */
    const char *object;       /* the character object as created (JSON), object_len */
    size_t object_len;        /* bytes; in results also NUL-terminated */
};

/* ------------------------------------------------------------------ keys */

/*
 * Team keys kept in the store (the admin API, `gateway keys`), next to the
 * config's [key NAME] ones. Only the SHA-256 of a key is kept; the secret is
 * shown once by whoever made it. A key is never deleted: revoking it stamps
 * revoked_at, so its name stays taken and its jobs keep their owner.
 */
#define GW_STORE_KEY_NAME_MAX 64     /* bytes of a key name: [A-Za-z0-9_.-] (config's) */
#define GW_STORE_KEY_MODELS_MAX 4096 /* bytes of a key's comma-separated model list */
#define GW_STORE_JOBS_RECENT_MAX 100 /* jobs_recent: limit is 1..100 */

struct gw_store_key {
    const char *name;
    unsigned char sha256[32];
    /* limits; -1: the config's [limits] default (as a [key] stanza that omits it) */
    int64_t rpm, burst, concurrency, daily_seconds;
    const char *models;       /* comma-separated allowlist ("": every model) */
    int64_t expires_at;       /* unix s: refused from then on; 0: never */
    int64_t created_at, updated_at; /* unix s */
    int64_t revoked_at;       /* unix s; 0: active */
    int64_t last_used_at;     /* keys_list only: its newest job's created_at; 0: none */
};

enum gw_key_field { /* struct gw_store_key_patch.set: which fields change */
    GW_KEY_SET_RPM = 1 << 0,
    GW_KEY_SET_BURST = 1 << 1,
    GW_KEY_SET_CONCURRENCY = 1 << 2,
    GW_KEY_SET_DAILY_SECONDS = 1 << 3,
    GW_KEY_SET_MODELS = 1 << 4,
    GW_KEY_SET_EXPIRES = 1 << 5,
};

struct gw_store_key_patch {
    const char *name;
    unsigned set;             /* GW_KEY_SET_* bits */
    int64_t rpm, burst, concurrency, daily_seconds; /* -1: back to the default */
    const char *models;
    int64_t expires_at;
    int64_t now;              /* becomes updated_at */
};

/* Recent jobs across keys (the admin API), newest first. */
struct gw_jobs_recent_query {
    const char *key_name;     /* NULL: every key */
    int status;               /* an enum gw_job_status, or -1: any */
    unsigned limit;           /* 1..GW_STORE_JOBS_RECENT_MAX */
};

/* ---------------------------------------------------------------- results */

struct gw_store_res {
    int rc;                     /* GW_OK, or GW_ERR: err says why */
    const struct gw_error *err; /* rc == GW_ERR: status 503, code store_error */

    /* get, update, delete, refund: the row after the call; NULL: no such job */
    const struct gw_job *job;
    enum gw_job_status prev_status; /* update: the status before (if job != NULL) */
    int refunded;               /* refund: 1 if this call gave the seconds back */

    /* list, claim_unfinished: the rows */
    const struct gw_job *jobs;
    size_t njobs;
    int has_more;               /* list: more rows after the last one */
    int after_unknown;          /* list: `after` is no job of this key (see
                                 * gw_store_job_list); njobs is 0 */

    /* idem_begin */
    enum gw_idem_state idem;
    int answer_status;          /* GW_IDEM_DONE: the stored answer's status, */
    const char *answer_body;    /* ... and body (answer_len bytes, NUL-terminated) */
    size_t answer_len;

    /* usage */
    const struct gw_usage_row *usage;
    size_t nusage;

    /* prune */
    uint64_t pruned_jobs, pruned_idem;

    /* keys (section "keys" below) */
    const struct gw_store_key *key;  /* key_put/patch/revoke: the row after; NULL: none */
    int key_exists;             /* key_put: the name (or the secret's hash) is taken */
    int key_revoked;            /* key_revoke: 1 if this call revoked it */
    const struct gw_store_key *keys; /* keys_list: every key, by name */
    size_t nkeys;
    const char *keys_skipped;   /* keys_list on Redis: names of rows that are not the
                                 * gateway's (a field missing or not a number), left out
                                 * and so refused; ", "-separated, NULL: none */
    const int64_t *last_used;   /* keys_list: per name asked, its last job's created_at
                                 * (unix s, 0: none) */
    uint64_t keys_version;      /* keys_version, keys_list: bumped by every key write */

    /* character_get: the row, or NULL: no such character */
    const struct gw_character *character;

    /* script: the reply's integers (an integer, or an array of integers) */
    int64_t ints[8];
    unsigned nints;
};

typedef void (*gw_store_cb)(void *arg, const struct gw_store_res *res);

/* ------------------------------------------------------------- lifecycle */

struct gw_store_options {
    const char *path; /* the SQLite file; created (and its directory's WAL files) if absent */
    int sync_full;    /* [store] synchronous: 0 normal (a commit survives the process),
                       * 1 full (a commit survives the machine: fsync per transaction) */
    /* where the store reports what no caller hears (a failed fire-and-forget
     * write, a failed transaction): gw_log_write, say. NULL: silent. */
    void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    /* Redis instead of SQLite when redis_host or redis_unix is set (path unused) */
    const char *redis_host;     /* an address, or a name: resolved once, by open */
    int redis_port;
    const char *redis_unix;     /* a unix socket's path */
    const char *redis_password; /* AUTH; NULL: none */
    int redis_db;               /* SELECT */
    const char *redis_prefix;   /* of every key; NULL: "videogw:" */
    int redis_timeout_ms;       /* per command; 0: 250 */
};

/*
 * Open (create, migrate) the store and start its thread. Takes a while (file
 * I/O): call it at start-up, before the loops run. NULL on failure, err's
 * message naming the file and the cause: not an SQLite file, another
 * program's database, read-only file or directory, a schema newer than this
 * binary knows. Idempotency records left in flight by a previous process are
 * dropped (that process is gone; the client's retry may proceed): so one
 * gateway per file.
 */
struct gw_store *gw_store_open(const struct gw_store_options *o, struct gw_error *err);

/*
 * Finish every queued operation (writes are committed, results delivered to
 * loops that still exist), stop the thread, close the file. Call it once no
 * loop submits any more; gw_store_loop_free may come before or after.
 */
void gw_store_close(struct gw_store *s);

/*
 * The store for one event loop, which must be run by one thread; every call
 * with it is made on that thread. (The loops are EVENT_BASE_FLAG_NOLOCK: the
 * store never touches the base from another thread; it wakes it with an eventfd.)
 * NULL with err on failure.
 */
struct gw_store_loop *gw_store_loop_new(struct gw_store *s, struct event_base *base,
                                        struct gw_error *err);

/*
 * On the loop's thread, or when it no longer runs (also from inside a store
 * callback), before its event_base is freed. Operations still pending are
 * cancelled: their callbacks never run; their writes are still made.
 */
void gw_store_loop_free(struct gw_store_loop *l);

/*
 * Withdraw a pending operation's callback (its owner went away): cb will not be
 * called. A write may still happen (it may be under way): cancelling a put of a
 * job that exists upstream still records the job. On the loop's thread, only
 * before the callback has run; op is invalid afterwards.
 */
void gw_store_cancel(struct gw_store_op *op);

struct gw_store_stats {
    uint64_t ops;          /* operations done */
    uint64_t transactions; /* transactions committed (or failed): ops / transactions is
                            * the group commit's batch */
    uint64_t failed;       /* operations answered with GW_ERR */
    unsigned max_batch;    /* the most operations one transaction held */
    uint64_t lingered;     /* transactions begun after a commit delay (SQLite, under
                            * load: docs/store.md, "Commit delay") */
    unsigned queued;       /* waiting now */
};

/* Counters since open; from any thread. */
void gw_store_stats(struct gw_store *s, struct gw_store_stats *st);

/* 1 while the store can work; 0 while Redis is unreachable (some loop's
 * connection is down: /readyz). SQLite: always 1. From any thread. */
int gw_store_reachable(struct gw_store *s);

/* The same, from a loop (admission: [store] on_failure). */
int gw_store_loop_reachable(struct gw_store_loop *l);

/* ----------------------------------------------------- asynchronous calls */

/*
 * Record a new job (usage: +1 job and its seconds for its day, key and model
 * sent). When the callback runs, the row is committed: answer the client then.
 * idem_key (or NULL): the Idempotency-Key this create began with; its record
 * is finished in the same transaction with (200, the job object), so a crash
 * cannot leave the job recorded and the key still in flight. A job id already
 * recorded is an error (rc GW_ERR).
 */
int gw_store_job_put(struct gw_store_loop *l, const struct gw_job *job, const char *idem_key,
                     gw_store_cb cb, void *arg, struct gw_store_op **op, struct gw_error *err);

/* res->job: the job, or NULL. Ownership is the caller's check (key_name; an
 * admin reads any job); a deleted job is returned with deleted_at set. */
int gw_store_job_get(struct gw_store_loop *l, const char *id, gw_store_cb cb, void *arg,
                     struct gw_store_op **op, struct gw_error *err);

/*
 * A job object seen (a retrieve, a refresh): store its status and object.
 * A status moving backwards changes nothing. Moving to failed counts one failed
 * job in usage; the refund is a separate call (gw_store_job_refund) so that the
 * caller, who holds the in-memory quota, gives the seconds back there too.
 * res->job: the row after (NULL: no such job), res->prev_status.
 */
int gw_store_job_update(struct gw_store_loop *l, const struct gw_job_update *u, gw_store_cb cb,
                        void *arg, struct gw_store_op **op, struct gw_error *err);

/* The upstream deleted it: it leaves lists and refreshes; the ledger keeps it.
 * res->job: the row (NULL: no such job). */
int gw_store_job_delete(struct gw_store_loop *l, const char *id, int64_t now, gw_store_cb cb,
                        void *arg, struct gw_store_op **op, struct gw_error *err);

/*
 * One page of a key's jobs (not deleted ones), OpenAI's cursor semantics:
 * res->jobs in q->order by created_at, then by the order they were put (jobs
 * created in the same second list in the order the gateway recorded them, not
 * by their random upstream ids), starting after the job q->after, at most
 * q->limit of them, res->has_more if more follow.
 * An `after` that is not a job of this key (another key's, or none at all: the
 * two are not told apart, so the answer reveals nothing) gives no rows and
 * res->after_unknown = 1: answer 400 invalid_value, param "after". A deleted
 * job of the key is still a valid cursor.
 * GW_ERR at once (400, param "limit" / "after") for a limit outside 1..100 or
 * an id over 128 bytes.
 */
int gw_store_job_list(struct gw_store_loop *l, const struct gw_job_list_query *q, gw_store_cb cb,
                      void *arg, struct gw_store_op **op, struct gw_error *err);

/*
 * The periodic refresh's work: up to limit (1..GW_STORE_CLAIM_MAX) unfinished
 * jobs (queued, in_progress; not deleted) last refreshed at or before
 * due_before, least recently refreshed first. They are claimed: their
 * refreshed_at becomes now, so the next call (from any loop) does not return
 * them again before they are due again, and a job whose refresh keeps failing
 * goes to the back of the line instead of being retried in a tight loop.
 */
int gw_store_job_claim_unfinished(struct gw_store_loop *l, int64_t due_before, int64_t now,
                                  unsigned limit, gw_store_cb cb, void *arg,
                                  struct gw_store_op **op, struct gw_error *err);

/*
 * A failed job gives its seconds back, exactly once: res->refunded is 1 for
 * the one call that marked it (usage: refunded seconds on the job's creation
 * day), 0 for every other and for a job not (yet) failed. res->job: the row.
 */
int gw_store_job_refund(struct gw_store_loop *l, const char *id, gw_store_cb cb, void *arg,
                        struct gw_store_op **op, struct gw_error *err);

/*
 * Drop jobs created before jobs_before (retention) and idempotency records
 * expired at now; usage_daily keeps every total. Works in bounded steps
 * between other operations, so a large prune never holds up creates.
 * res->pruned_jobs, res->pruned_idem.
 */
int gw_store_prune(struct gw_store_loop *l, int64_t jobs_before, int64_t now, gw_store_cb cb,
                   void *arg, struct gw_store_op **op, struct gw_error *err);

/*
 * A create with an Idempotency-Key (1..255 bytes) from key_name at now:
 * res->idem is GW_IDEM_NEW (recorded in flight: go on, then gw_store_job_put
 * with the key, gw_store_idem_finish or gw_store_idem_abort), GW_IDEM_IN_FLIGHT,
 * or GW_IDEM_DONE with the stored answer. A record older than 24 h is expired:
 * the key is new again.
 */
int gw_store_idem_begin(struct gw_store_loop *l, const char *key_name, const char *idem_key,
                        int64_t now, gw_store_cb cb, void *arg, struct gw_store_op **op,
                        struct gw_error *err);

/* The create was answered without a job (an upstream 4xx, say): store that
 * answer, replayed to repeats. */
int gw_store_idem_finish(struct gw_store_loop *l, const char *key_name, const char *idem_key,
                         int status, const char *body, size_t body_len, gw_store_cb cb,
                         void *arg, struct gw_store_op **op, struct gw_error *err);

/* The create ended with nothing worth replaying (client gone, 5xx, refused by
 * a limit): forget the in-flight record so that a retry may proceed. */
int gw_store_idem_abort(struct gw_store_loop *l, const char *key_name, const char *idem_key,
                        gw_store_cb cb, void *arg, struct gw_store_op **op,
                        struct gw_error *err);

/* Usage rows (the admin API): res->usage, ordered by key, model, day (by_kind: key,
 * model, kind, day). GW_ERR at once for a date that is not YYYY-MM-DD. */
int gw_store_usage(struct gw_store_loop *l, const struct gw_usage_query *q, gw_store_cb cb,
                   void *arg, struct gw_store_op **op, struct gw_error *err);

/* ------------------------------------------------------ characters (issue 9) */

/* Record a new character (an id already recorded is rc GW_ERR). When the
 * callback runs, the row is committed. */
int gw_store_character_put(struct gw_store_loop *l, const struct gw_character *c,
                           gw_store_cb cb, void *arg, struct gw_store_op **op,
                           struct gw_error *err);

/* res->character: the character, or NULL. Ownership is the caller's check. */
int gw_store_character_get(struct gw_store_loop *l, const char *id, gw_store_cb cb, void *arg,
                           struct gw_store_op **op, struct gw_error *err);

/*
 * Redis only: a script of the caller's (the limits: limits/redis_limits.c) on
 * this loop's connection, called by SHA1 (re-sent with its source after a
 * NOSCRIPT). ARGV[1] is the store's prefix, then args[0..nargs) (at most
 * GW_STORE_SCRIPT_ARGS; copied). The reply must be an integer or an array of at
 * most 8 integers: res->ints, res->nints. sc must outlive the call (static).
 * GW_ERR at once (503) on an engine that is not Redis.
 */
#define GW_STORE_SCRIPT_ARGS 20

struct gw_store_script {
    const char *src;  /* Lua */
    char sha[41];     /* its SHA1, hex: gw_store_script_init */
};

void gw_store_script_init(struct gw_store_script *sc, const char *src);

int gw_store_script(struct gw_store_loop *l, const struct gw_store_script *sc, unsigned nargs,
                    const char *const *args, gw_store_cb cb, void *arg,
                    struct gw_store_op **op, struct gw_error *err);

/* ------------------------------------------------------ outside any loop */

struct gw_usage {
    struct gw_usage_row *rows;
    size_t n;
};

/*
 * The same rows, synchronously, for `gateway usage`: opens the file itself,
 * read-only (a WAL reader: fine while a gateway runs on it), and closes it.
 * GW_OK with *out (free it with gw_store_usage_free), or GW_ERR with err
 * naming the file. Blocks: never call it on an event loop.
 */
int gw_store_usage_read(const struct gw_store_options *o, const struct gw_usage_query *q,
                        struct gw_usage **out, struct gw_error *err);

void gw_store_usage_free(struct gw_usage *u);

/* ------------------------------------------------------------ keys: calls */

/*
 * Record a new key (created_at = updated_at = key->created_at, revoked_at 0).
 * A name already recorded (revoked or not) or a hash already recorded is data:
 * res->key_exists = 1, nothing written. Otherwise res->key is the row.
 * GW_ERR at once (400, param named) for a name that is not 1..64 bytes of
 * [A-Za-z0-9_.-], a limit below -1, models over 4 KiB.
 */
int gw_store_key_put(struct gw_store_loop *l, const struct gw_store_key *key, gw_store_cb cb,
                     void *arg, struct gw_store_op **op, struct gw_error *err);

/* Change the fields in p->set of an active key. res->key: the row after; NULL:
 * no such key, or it is revoked (nothing written). */
int gw_store_key_patch(struct gw_store_loop *l, const struct gw_store_key_patch *p,
                       gw_store_cb cb, void *arg, struct gw_store_op **op, struct gw_error *err);

/* Revoke a key at now. res->key: the row (NULL: no such key); res->key_revoked
 * is 1 for the call that revoked it, 0 if it already was. */
int gw_store_key_revoke(struct gw_store_loop *l, const char *name, int64_t now, gw_store_cb cb,
                        void *arg, struct gw_store_op **op, struct gw_error *err);

/*
 * Every key (revoked ones too), ordered by name, and res->keys_version.
 * names (n of them, may be 0): res->last_used[i] is the created_at of the
 * newest job of names[i] (config keys have no row but have jobs).
 */
int gw_store_keys_list(struct gw_store_loop *l, const char *const *names, size_t n,
                       gw_store_cb cb, void *arg, struct gw_store_op **op,
                       struct gw_error *err);

/* res->keys_version only: cheap, for the poll that notices a change made by
 * another process (`gateway keys`, another instance) within a second. */
int gw_store_keys_version(struct gw_store_loop *l, gw_store_cb cb, void *arg,
                          struct gw_store_op **op, struct gw_error *err);

/* res->jobs: the newest jobs (deleted ones too, without their object), of
 * q->key_name or every key, of q->status or any. GW_ERR at once (400, param
 * "limit" / "status") for a limit outside 1..100 or an unknown status. */
int gw_store_jobs_recent(struct gw_store_loop *l, const struct gw_jobs_recent_query *q,
                         gw_store_cb cb, void *arg, struct gw_store_op **op,
                         struct gw_error *err);

/*
 * The same key calls, synchronously, for `gateway keys`: each opens the file
 * itself (creating and migrating it if needed, as the gateway would; a second
 * writer beside a running gateway: WAL, busy timeout), runs the operation in
 * one transaction, calls cb(arg, res) before returning, and closes the file.
 * GW_OK (cb was called, res->rc GW_OK), or GW_ERR with err (cb not called).
 * Blocks: never on an event loop.
 */
int gw_store_key_put_sync(const struct gw_store_options *o, const struct gw_store_key *key,
                          gw_store_cb cb, void *arg, struct gw_error *err);
int gw_store_key_patch_sync(const struct gw_store_options *o,
                            const struct gw_store_key_patch *p, gw_store_cb cb, void *arg,
                            struct gw_error *err);
int gw_store_key_revoke_sync(const struct gw_store_options *o, const char *name, int64_t now,
                             gw_store_cb cb, void *arg, struct gw_error *err);
int gw_store_keys_list_sync(const struct gw_store_options *o, const char *const *names,
                            size_t n, gw_store_cb cb, void *arg, struct gw_error *err);

/* GW_OK if name is 1..64 bytes of [A-Za-z0-9_.-]: a key name's shape. */
int gw_store_key_name_ok(const char *name);

/* ------------------------------------------------------------------ names */

/* "create", "queued"...; the parsers return GW_OK or GW_ERR (unknown name). */
const char *gw_job_kind_name(enum gw_job_kind k);
const char *gw_job_status_name(enum gw_job_status s);
int gw_job_status_parse(const char *s, size_t len, enum gw_job_status *out);
int gw_job_kind_parse(const char *s, size_t len, enum gw_job_kind *out);

#endif
