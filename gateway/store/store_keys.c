/*
 * store_keys.c - the engine-neutral half of the keys calls (store.h, section
 * "keys"): arguments checked and copied into an operation, which goes to the
 * engine on a loop (gw_store_op_submit) or runs at once on a connection of its
 * own for `gateway keys` (gw_store_op_run_sync). The SQL is sqlite_keys.c's.
 */
#include <string.h>

#include "store_int.h"

#define KEY_LIMIT_MAX 100000000 /* the largest limit of any kind (config's daily_seconds) */

static int bad_arg(struct gw_error *err, const char *param, const char *what)
{
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", param, "%s", what);
}

int gw_store_key_name_ok(const char *name)
{
    static const char chars[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
    size_t len = name != NULL ? strlen(name) : 0;

    return len >= 1 && len <= GW_STORE_KEY_NAME_MAX && strspn(name, chars) == len ? GW_OK
                                                                                   : GW_ERR;
}

static int check_key_name(const char *name, struct gw_error *err)
{
    if (gw_store_key_name_ok(name) != GW_OK)
        return bad_arg(err, "name", "a key name is 1 to 64 characters of A-Z a-z 0-9 _ . -");
    return GW_OK;
}

/* The limits and models of a key or a patch, as the store takes them. */
static int check_fields(const int64_t lim[4], const char *models, int64_t expires,
                        struct gw_error *err)
{
    static const char *const names[4] = { "rpm", "burst", "concurrency", "daily_seconds" };

    for (int i = 0; i < 4; i++) {
        if (lim[i] < -1 || lim[i] > KEY_LIMIT_MAX)
            return bad_arg(err, names[i], "a limit is -1 (the default) or 0..100000000");
    }
    if (models != NULL && strlen(models) > GW_STORE_KEY_MODELS_MAX)
        return bad_arg(err, "models", "models: at most 4096 bytes");
    if (expires < 0)
        return bad_arg(err, "expires", "expires must not be negative");
    return GW_OK;
}

static size_t slen(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static const char *pack(char **p, const char *s)
{
    char *d = *p;
    size_t len;

    if (s == NULL)
        return NULL;
    len = strlen(s);
    memcpy(d, s, len + 1);
    *p += len + 1;
    return d;
}

static struct gw_store_op *key_put_op(const struct gw_store_key *k, struct gw_error *err)
{
    const int64_t lim[4] = { k->rpm, k->burst, k->concurrency, k->daily_seconds };
    struct gw_store_op *op;
    char *p;

    if (check_key_name(k->name, err) != GW_OK || check_fields(lim, k->models, k->expires_at,
                                                              err) != GW_OK)
        return NULL;
    op = gw_store_op_new(GW_OP_KEY_PUT, slen(k->name) + slen(k->models) + 1, &p, err);
    if (op == NULL)
        return NULL;
    op->key = *k;
    op->key.name = pack(&p, k->name);
    op->key.models = pack(&p, k->models != NULL ? k->models : "");
    op->key.updated_at = k->created_at;
    op->key.revoked_at = 0;
    return op;
}

static struct gw_store_op *key_patch_op(const struct gw_store_key_patch *pt,
                                        struct gw_error *err)
{
    const int64_t lim[4] = { pt->set & GW_KEY_SET_RPM ? pt->rpm : 0,
                             pt->set & GW_KEY_SET_BURST ? pt->burst : 0,
                             pt->set & GW_KEY_SET_CONCURRENCY ? pt->concurrency : 0,
                             pt->set & GW_KEY_SET_DAILY_SECONDS ? pt->daily_seconds : 0 };
    struct gw_store_op *op;
    char *p;

    if (check_key_name(pt->name, err) != GW_OK ||
        check_fields(lim, pt->set & GW_KEY_SET_MODELS ? pt->models : NULL,
                     pt->set & GW_KEY_SET_EXPIRES ? pt->expires_at : 0, err) != GW_OK)
        return NULL;
    op = gw_store_op_new(GW_OP_KEY_PATCH, slen(pt->name) + slen(pt->models) + 1, &p, err);
    if (op == NULL)
        return NULL;
    op->patch = *pt;
    op->patch.name = pack(&p, pt->name);
    op->patch.models = pack(&p, pt->models != NULL ? pt->models : "");
    return op;
}

static struct gw_store_op *key_revoke_op(const char *name, int64_t now, struct gw_error *err)
{
    struct gw_store_op *op;
    char *p;

    if (check_key_name(name, err) != GW_OK)
        return NULL;
    op = gw_store_op_new(GW_OP_KEY_REVOKE, slen(name), &p, err);
    if (op == NULL)
        return NULL;
    op->key.name = pack(&p, name);
    op->t1 = now;
    return op;
}

static struct gw_store_op *keys_list_op(const char *const *names, size_t n,
                                        struct gw_error *err)
{
    size_t strings = n * sizeof(char *);
    struct gw_store_op *op;
    char *p;

    if (n > 65536)
        return bad_arg(err, NULL, "store: at most 65536 names"), NULL;
    for (size_t i = 0; i < n; i++)
        strings += slen(names[i]) + (names[i] == NULL);
    /* the pointer array first: the op's string area is aligned as the op is */
    op = gw_store_op_new(GW_OP_KEYS_LIST, strings, &p, err);
    if (op == NULL)
        return NULL;
    op->names = (const char **)(void *)p;
    op->nnames = n;
    p += n * sizeof(char *);
    for (size_t i = 0; i < n; i++)
        op->names[i] = pack(&p, names[i] != NULL ? names[i] : "");
    return op;
}

/* ------------------------------------------------------------- on a loop */

int gw_store_key_put(struct gw_store_loop *l, const struct gw_store_key *key, gw_store_cb cb,
                     void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct gw_store_op *op = key_put_op(key, err);

    if (opp != NULL)
        *opp = NULL;
    return op != NULL ? gw_store_op_submit(l, op, cb, arg, opp, err) : GW_ERR;
}

int gw_store_key_patch(struct gw_store_loop *l, const struct gw_store_key_patch *p,
                       gw_store_cb cb, void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct gw_store_op *op = key_patch_op(p, err);

    if (opp != NULL)
        *opp = NULL;
    return op != NULL ? gw_store_op_submit(l, op, cb, arg, opp, err) : GW_ERR;
}

int gw_store_key_revoke(struct gw_store_loop *l, const char *name, int64_t now, gw_store_cb cb,
                        void *arg, struct gw_store_op **opp, struct gw_error *err)
{
    struct gw_store_op *op = key_revoke_op(name, now, err);

    if (opp != NULL)
        *opp = NULL;
    return op != NULL ? gw_store_op_submit(l, op, cb, arg, opp, err) : GW_ERR;
}

int gw_store_keys_list(struct gw_store_loop *l, const char *const *names, size_t n,
                       gw_store_cb cb, void *arg, struct gw_store_op **opp,
                       struct gw_error *err)
{
    struct gw_store_op *op = keys_list_op(names, n, err);

    if (opp != NULL)
        *opp = NULL;
    return op != NULL ? gw_store_op_submit(l, op, cb, arg, opp, err) : GW_ERR;
}

int gw_store_keys_version(struct gw_store_loop *l, gw_store_cb cb, void *arg,
                          struct gw_store_op **opp, struct gw_error *err)
{
    char *p;
    struct gw_store_op *op = gw_store_op_new(GW_OP_KEYS_VERSION, 0, &p, err);

    if (opp != NULL)
        *opp = NULL;
    return op != NULL ? gw_store_op_submit(l, op, cb, arg, opp, err) : GW_ERR;
}

int gw_store_jobs_recent(struct gw_store_loop *l, const struct gw_jobs_recent_query *q,
                         gw_store_cb cb, void *arg, struct gw_store_op **opp,
                         struct gw_error *err)
{
    struct gw_store_op *op;
    char *p;

    if (opp != NULL)
        *opp = NULL;
    if (q->limit < 1 || q->limit > GW_STORE_JOBS_RECENT_MAX)
        return bad_arg(err, "limit", "limit must be an integer from 1 to 100");
    if (q->status < -1 || q->status > GW_JOB_FAILED)
        return bad_arg(err, "status", "status must be queued, in_progress, completed or "
                                      "failed");
    if (q->key_name != NULL && strlen(q->key_name) > 4096)
        return bad_arg(err, "key", "key: a key name is at most 64 characters");
    op = gw_store_op_new(GW_OP_JOBS_RECENT, slen(q->key_name), &p, err);
    if (op == NULL)
        return GW_ERR;
    op->recent = *q;
    op->recent.key_name = pack(&p, q->key_name);
    return gw_store_op_submit(l, op, cb, arg, opp, err);
}

/* ---------------------------------------------------------- synchronous */

int gw_store_key_put_sync(const struct gw_store_options *o, const struct gw_store_key *key,
                          gw_store_cb cb, void *arg, struct gw_error *err)
{
    struct gw_store_op *op = key_put_op(key, err);

    return op != NULL ? gw_store_op_run_sync(o, op, cb, arg, err) : GW_ERR;
}

int gw_store_key_patch_sync(const struct gw_store_options *o,
                            const struct gw_store_key_patch *p, gw_store_cb cb, void *arg,
                            struct gw_error *err)
{
    struct gw_store_op *op = key_patch_op(p, err);

    return op != NULL ? gw_store_op_run_sync(o, op, cb, arg, err) : GW_ERR;
}

int gw_store_key_revoke_sync(const struct gw_store_options *o, const char *name, int64_t now,
                             gw_store_cb cb, void *arg, struct gw_error *err)
{
    struct gw_store_op *op = key_revoke_op(name, now, err);

    return op != NULL ? gw_store_op_run_sync(o, op, cb, arg, err) : GW_ERR;
}

int gw_store_keys_list_sync(const struct gw_store_options *o, const char *const *names,
                            size_t n, gw_store_cb cb, void *arg, struct gw_error *err)
{
    struct gw_store_op *op = keys_list_op(names, n, err);

    return op != NULL ? gw_store_op_run_sync(o, op, cb, arg, err) : GW_ERR;
}
