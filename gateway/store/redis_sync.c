/*
 * redis_sync.c - the Redis engine's blocking calls, for the command line
 * (`gateway usage`, `gateway keys`): a connection of their own (blocking
 * hiredis, never on an event loop), the same scripts and reply parsing as the
 * loops' calls (redis_ops.c), sent with EVAL (one call from a process that
 * ends: nothing to load).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_int.h"

/* ------------------------------------------------ usage, synchronous */

/* allocations of the synchronous read: a list freed on failure */
struct blocks {
    void **v;
    size_t n, cap;
};

static void *blocks_alloc(void *ctx, size_t size)
{
    struct blocks *b = ctx;

    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        void **v = realloc(b->v, cap * sizeof(*v));
        if (v == NULL)
            return NULL;
        b->v = v;
        b->cap = cap;
    }
    void *p = malloc(size > 0 ? size : 1);
    if (p != NULL)
        b->v[b->n++] = p;
    return p;
}

/* A reply that is an error, or none at all: GW_ERR with err set. */
static int sync_failed(const struct gw_store_options *o, redisContext *c, redisReply *r,
                       const char *what, struct gw_error *err)
{
    char where[160];

    if (o->redis_unix != NULL)
        snprintf(where, sizeof(where), "unix:%s", o->redis_unix);
    else
        snprintf(where, sizeof(where), "%s:%d", o->redis_host, o->redis_port);
    if (r == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "Redis at %s: %s: %s", where, what,
                            c->errstr[0] ? c->errstr : "no answer");
    if (r->type == REDIS_REPLY_ERROR)
        return gw_error_set(err, 0, NULL, NULL, NULL, "Redis at %s: %s: %.200s", where, what,
                            r->str);
    return GW_OK;
}

/*
 * A blocking connection (the CLI's), authenticated and on [store] db; NULL
 * with err. A reply may hold every row: a read gets more than one command's
 * time.
 */
static redisContext *sync_connect(const struct gw_store_options *o, struct gw_error *err)
{
    int ms = o->redis_timeout_ms > 0 ? o->redis_timeout_ms : RS_DEFAULT_TIMEOUT_MS;
    struct timeval tv = { (ms < 2000 ? 2000 : ms) / 1000, ((ms < 2000 ? 2000 : ms) % 1000) * 1000 };
    redisContext *c;
    redisReply *r;

    c = o->redis_unix != NULL ? redisConnectUnixWithTimeout(o->redis_unix, tv)
                              : redisConnectWithTimeout(o->redis_host, o->redis_port, tv);
    if (c == NULL || c->err) {
        if (c != NULL)
            sync_failed(o, c, NULL, "cannot connect", err);
        else
            gw_error_set(err, 0, NULL, NULL, NULL, "Redis: out of memory");
        goto fail;
    }
    redisSetTimeout(c, tv);
    if (o->redis_password != NULL) {
        r = redisCommand(c, "AUTH %s", o->redis_password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            sync_failed(o, c, r, "AUTH failed (is [store] password right?)", err);
            if (r != NULL)
                freeReplyObject(r);
            goto fail;
        }
        freeReplyObject(r);
    }
    r = redisCommand(c, "SELECT %d", o->redis_db);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        sync_failed(o, c, r, "SELECT failed", err);
        if (r != NULL)
            freeReplyObject(r);
        goto fail;
    }
    freeReplyObject(r);
    return c;
fail:
    if (c != NULL)
        redisFree(c);
    return NULL;
}

int gw_store_redis_run_sync(const struct gw_store_options *o, struct gw_store_op *op,
                            struct gw_error *err)
{
    const char *prefix = o->redis_prefix != NULL ? o->redis_prefix : RS_DEFAULT_PREFIX;
    char sha[RS_NSCRIPTS][41];
    struct rs_cmd *cmd = gw_store_op_alloc(op, sizeof(*cmd));
    redisContext *c;
    redisReply *r;
    int log_it, rc;

    if (cmd == NULL)
        return gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
    rs_script_shas(sha);
    if (rs_build(op, prefix, (const char(*)[41])sha, cmd) != GW_OK) {
        *err = op->err;
        return GW_ERR;
    }
    /* one call from a process that ends: the source itself, nothing to load */
    cmd->argv[0] = "EVAL";
    cmd->argvlen[0] = 4;
    cmd->argv[1] = cmd->src;
    cmd->argvlen[1] = strlen(cmd->src);
    if ((c = sync_connect(o, err)) == NULL)
        return GW_ERR;
    r = redisCommandArgv(c, cmd->argc, cmd->argv, cmd->argvlen);
    if (r == NULL) {
        sync_failed(o, c, NULL, "the call failed", err);
        redisFree(c);
        return GW_ERR;
    }
    op->res.rc = GW_OK;
    rc = rs_reply(op, r, prefix, (const char(*)[41])sha, cmd, &log_it);
    freeReplyObject(r);
    redisFree(c);
    if (rc != GW_OK) {
        *err = op->err;
        return GW_ERR;
    }
    return GW_OK;
}

int gw_store_redis_usage_read(const struct gw_store_options *o, const struct gw_usage_query *q,
                              struct gw_usage **out, struct gw_error *err)
{
    const char *prefix = o->redis_prefix != NULL ? o->redis_prefix : RS_DEFAULT_PREFIX;
    redisContext *c;
    redisReply *r = NULL;
    struct blocks b = { 0 };
    struct gw_usage_row *rows = NULL;
    size_t n = 0;
    int oom, rc = GW_ERR;

    *out = NULL;
    if ((c = sync_connect(o, err)) == NULL)
        goto out;
    r = redisCommand(c, "EVAL %s 0 %s %s %s %s",
                     rs_script_src[q->by_kind ? RS_USAGE_KIND : RS_USAGE], prefix,
                     q->since != NULL ? q->since : "", q->until != NULL ? q->until : "",
                     q->key_name != NULL ? q->key_name : "");
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        sync_failed(o, c, r, "reading usage failed", err);
        goto out;
    }
    if (rs_parse_usage(r, blocks_alloc, &b, &rows, &n, &oom) != GW_OK) {
        gw_error_set(err, 0, NULL, NULL, NULL, "Redis: %s", oom ? "out of memory" :
                     "unexpected usage rows: is another program writing under the prefix?");
        goto out;
    }
    /* into the shape gw_store_usage_free takes: rows, and each row's two strings */
    struct gw_usage *u = calloc(1, sizeof(*u));
    struct gw_usage_row *copy = malloc(sizeof(*copy) * (n > 0 ? n : 1));
    if (u == NULL || copy == NULL) {
        free(u);
        free(copy);
        gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
        goto out;
    }
    u->rows = copy;
    for (size_t i = 0; i < n; i++) {
        copy[i] = rows[i];
        copy[i].key_name = strdup(rows[i].key_name);
        copy[i].model = strdup(rows[i].model);
        copy[i].kind = rows[i].kind != NULL ? strdup(rows[i].kind) : NULL;
        u->n = i + 1;
        if (copy[i].key_name == NULL || copy[i].model == NULL ||
            (rows[i].kind != NULL && copy[i].kind == NULL)) {
            gw_store_usage_free(u);
            gw_error_set(err, 0, NULL, NULL, NULL, "out of memory");
            goto out;
        }
    }
    *out = u;
    rc = GW_OK;
out:
    if (r != NULL)
        freeReplyObject(r);
    for (size_t i = 0; i < b.n; i++)
        free(b.v[i]);
    free(b.v);
    if (c != NULL)
        redisFree(c);
    return rc;
}
