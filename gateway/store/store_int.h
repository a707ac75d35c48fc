/*
 * store_int.h - between store.c (the engine-neutral half: arguments checked
 * and copied, operations, delivery to the loops, cancel) and an engine
 * (store_sqlite.c; store_redis.c). Not for the rest of the gateway.
 */
#ifndef GW_STORE_INT_H
#define GW_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "store.h"

enum gw_store_op_kind {
    GW_OP_JOB_PUT = 0,
    GW_OP_JOB_GET,
    GW_OP_JOB_UPDATE,
    GW_OP_JOB_DELETE,
    GW_OP_JOB_LIST,
    GW_OP_JOB_CLAIM,
    GW_OP_JOB_REFUND,
    GW_OP_PRUNE,
    GW_OP_IDEM_BEGIN,
    GW_OP_IDEM_FINISH,
    GW_OP_IDEM_ABORT,
    GW_OP_USAGE,
    GW_OP_SCRIPT, /* Redis only: a caller's script (the limits) */
    /* keys (store_keys.c, sqlite_keys.c) */
    GW_OP_KEY_PUT,
    GW_OP_KEY_PATCH,
    GW_OP_KEY_REVOKE,
    GW_OP_KEYS_LIST,
    GW_OP_KEYS_VERSION,
    GW_OP_JOBS_RECENT,
    /* characters (issue 9) */
    GW_OP_CHARACTER_PUT,
    GW_OP_CHARACTER_GET,
};

/* A block of result memory, owned by its operation (a list, freed with it). */
struct gw_store_mem {
    struct gw_store_mem *next;
    max_align_t data[];
};

/*
 * One operation, from the call to its delivery. Made and freed by store.c;
 * between the two the engine owns it (its queue, its thread) and then hands
 * it to gw_store_op_done(). Arguments are copies owned by the operation.
 */
struct gw_store_op {
    struct gw_store_op *next;   /* in the engine's queue, then the loop's done list */
    struct gw_store_loop *loop;
    enum gw_store_op_kind kind;
    gw_store_cb cb;
    void *arg;
    atomic_int cancelled;       /* set on the loop's thread; the engine may skip a read */
    int64_t submitted_us;       /* monotonic: when the loop handed it over (metrics) */

    /* arguments (strings point into the op's own allocation) */
    struct gw_job job;          /* put: all of it; get, delete, refund: id */
    const struct gw_store_script *script; /* script: which (the caller's, lives on) */
    unsigned nargs;             /* ... its arguments (after the prefix) */
    const char **args;
    size_t *arglens;
    const char *idem_key;       /* put (or NULL), idem_*: the Idempotency-Key */
    const char *key_name;       /* idem_*: the team key */
    int status;                 /* idem_finish: the answer's status */
    const char *body;           /* idem_finish: the answer's body */
    size_t body_len;
    struct gw_job_update upd;   /* update */
    struct gw_job_list_query list; /* list */
    struct gw_usage_query usage_q; /* usage */
    int64_t t1, t2;             /* claim: due_before, now; prune: jobs_before, now;
                                 * idem_begin, delete: now in t1 */
    unsigned limit;             /* claim */
    struct gw_character character; /* character_put: all of it; character_get: id */

    /* the result, filled by the engine */
    struct gw_store_res res;
    struct gw_error err;
    struct gw_store_mem *mem;   /* what res points into */
    uint64_t progress[2];       /* the engine's own: a prune's counts between its steps, */
    const char *prune_key;      /* ... the team key it has reached (in the op's memory;
                                 * NULL: none yet) */
    int prune_state;            /* ... and what is left (the engine's enum) */

    /* keys: arguments */
    struct gw_store_key key;        /* key_put; key_revoke: name, and now in t1 */
    struct gw_store_key_patch patch; /* key_patch */
    const char **names;             /* keys_list: names whose last use is asked */
    size_t nnames;
    struct gw_jobs_recent_query recent; /* jobs_recent */
};

struct gw_store_engine {
    const char *name;
    /* Take op (queued, never completed from inside this call). GW_OK, or GW_ERR
     * with err (closing): then the op stays the caller's. */
    int (*submit)(struct gw_store *s, struct gw_store_op *op, struct gw_error *err);
    void (*close)(struct gw_store *s);
    void (*stats)(struct gw_store *s, struct gw_store_stats *st);
    /* Optional (Redis: a connection per loop). From gw_store_loop_new: set up the
     * engine's part of l (gw_store_loop_set_engine). GW_OK, or GW_ERR with err. */
    int (*loop_attach)(struct gw_store *s, struct gw_store_loop *l, struct event_base *base,
                       struct gw_error *err);
    /* Optional: 1 while the engine can work (Redis: every loop connected). */
    int (*reachable)(struct gw_store *s);
};

/* The head of every engine's own struct. */
struct gw_store {
    const struct gw_store_engine *engine;
    void (*log)(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
};

/* store.c, for engines */

/* The engine is done with op (res and err filled): to its loop, from any thread. */
void gw_store_op_done(struct gw_store_op *op);

/* The same for a chain of operations linked by next (a batch): fewer locks
 * and wake-ups than one gw_store_op_done each. */
void gw_store_ops_done(struct gw_store_op *list);

/* The same, on op's loop's own thread only (its event_base is not locked): no
 * eventfd write, the loop's event is made active. */
void gw_store_op_done_local(struct gw_store_op *op);

/* size bytes owned by op (freed with it), aligned for any type; NULL if out of
 * memory, and then op is failed already (503 "out of memory"): return GW_ERR. */
void *gw_store_op_alloc(struct gw_store_op *op, size_t size);

/* A NUL-terminated copy of s[0..len) owned by op; NULL if out of memory (op
 * failed, as with gw_store_op_alloc). */
char *gw_store_op_strdup(struct gw_store_op *op, const char *s, size_t len);

/* Fill op->err as the store's own failure (503 store_error) and set res to it. */
void gw_store_op_fail(struct gw_store_op *op, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * The engine's part of a loop: data, and detach(data), called once, by
 * gw_store_loop_free (on the loop's thread) unless the engine took it back
 * first (gw_store_loop_take_engine: its close). detach must finish or fail
 * every operation of the loop that the engine holds (gw_store_op_done), and
 * must not touch l: the last of them may free it.
 */
void gw_store_loop_set_engine(struct gw_store_loop *l, void *data, void (*detach)(void *data));

/* The engine's data of l (on the loop's thread), or NULL once taken. */
void *gw_store_loop_engine(struct gw_store_loop *l);

/* Take the engine's data back (NULL if gone): detach will not be called. */
void *gw_store_loop_take_engine(struct gw_store_loop *l);

/* "YYYY-MM-DD" of a unix time, UTC, into day[11]. */
void gw_store_day(int64_t t, char day[11]);

/* GW_OK if s is NULL or a "YYYY-MM-DD" date. */
int gw_store_check_day(const char *s);

/* For the keys calls (store_keys.c): an operation with `strings` bytes for
 * its argument strings at *strp; NULL with err (503) when out of memory. */
struct gw_store_op *gw_store_op_new(enum gw_store_op_kind kind, size_t strings, char **strp,
                                    struct gw_error *err);
/* Queue op as the calls do: GW_AGAIN, or GW_ERR (op freed, err set). */
int gw_store_op_submit(struct gw_store_loop *l, struct gw_store_op *op, gw_store_cb cb,
                       void *arg, struct gw_store_op **opp, struct gw_error *err);
/* Run op now on a connection of its own (the _sync calls), call cb, free op.
 * GW_OK, or GW_ERR with err (cb not called). */
int gw_store_op_run_sync(const struct gw_store_options *o, struct gw_store_op *op,
                         gw_store_cb cb, void *arg, struct gw_error *err);

/* The engines */
struct gw_store *gw_store_sqlite_open(const struct gw_store_options *o, struct gw_error *err);
int gw_store_sqlite_run_sync(const struct gw_store_options *o, struct gw_store_op *op,
                             struct gw_error *err);
int gw_store_sqlite_usage_read(const struct gw_store_options *o, const struct gw_usage_query *q,
                               struct gw_usage **out, struct gw_error *err);
struct gw_store *gw_store_redis_open(const struct gw_store_options *o, struct gw_error *err);
int gw_store_redis_run_sync(const struct gw_store_options *o, struct gw_store_op *op,
                            struct gw_error *err);
int gw_store_redis_usage_read(const struct gw_store_options *o, const struct gw_usage_query *q,
                              struct gw_usage **out, struct gw_error *err);

#endif
