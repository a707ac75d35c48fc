/*
 * redis_ops.c - the Redis engine's operations: each call of store.h as one
 * command (a script of redis_scripts.c called by its SHA1), and its reply
 * turned into the call's result. The blocking calls of the CLI that reuse
 * both are redis_sync.c's.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "redis_int.h"

/* the fields of a job row, in the order of LUA_HEAD's F (redis_scripts.c):
 * id key upk kind asked sent sec size st cr up rf del rfd obj */
enum { F_ID = 0, F_KEY, F_UPK, F_KIND, F_ASKED, F_SENT, F_SEC, F_SIZE, F_ST, F_CR, F_UP, F_RF,
       F_DEL, F_RFD, F_OBJ, F_N };

#define CREATED_OFFSET 100000000000LL /* created_at + this: 12 digits from 1966 to 30471 */

enum { /* op->prune_state */
    PRUNE_AFTER_KEY = 0, /* go on with the key after op->prune_key (the first if NULL) */
    PRUNE_IN_KEY,        /* go on in op->prune_key */
    PRUNE_JOBS_DONE,     /* only idempotency records are left */
};

void rs_script_shas(char (*sha)[41])
{
    unsigned char md[SHA_DIGEST_LENGTH];

    for (int i = 0; i < RS_NSCRIPTS; i++) {
        SHA1((const unsigned char *)rs_script_src[i], strlen(rs_script_src[i]), md);
        for (int k = 0; k < SHA_DIGEST_LENGTH; k++)
            snprintf(&sha[i][2 * k], 3, "%02x", md[k]);
    }
}

/* ------------------------------------------------------------ building */

static void arg(struct rs_cmd *c, const char *s, size_t len)
{
    c->argv[c->argc] = s;
    c->argvlen[c->argc] = len;
    c->argc++;
}

static void arg_str(struct rs_cmd *c, const char *s)
{
    arg(c, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

static void arg_int(struct rs_cmd *c, long long v)
{
    char *b = c->num[c->nnum++];
    int n = snprintf(b, sizeof(c->num[0]), "%lld", v);

    arg(c, b, (size_t)n);
}

/* created_at as the 12 digits that lead a list member */
static void arg_created(struct rs_cmd *c, int64_t created_at)
{
    long long v = (long long)created_at;
    char *b = c->num[c->nnum++];

    if (v < -CREATED_OFFSET)
        v = -CREATED_OFFSET;
    if (v > 900000000000LL - 1)
        v = 900000000000LL - 1;
    snprintf(b, sizeof(c->num[0]), "%012lld", v + CREATED_OFFSET);
    arg(c, b, 12);
}

static void script(struct rs_cmd *c, int which, const char *prefix, const char (*sha)[41])
{
    c->src = rs_script_src[which];
    c->argc = 0;
    c->nnum = 0;
    arg_str(c, "EVALSHA");
    arg(c, sha[which], 40);
    arg_str(c, "0");
    arg_str(c, prefix);
}

void gw_store_script_init(struct gw_store_script *sc, const char *src)
{
    unsigned char md[SHA_DIGEST_LENGTH];

    sc->src = src;
    SHA1((const unsigned char *)src, strlen(src), md);
    for (int k = 0; k < SHA_DIGEST_LENGTH; k++)
        snprintf(&sc->sha[2 * k], 3, "%02x", md[k]);
}

static int unfinished(enum gw_job_status st)
{
    return st == GW_JOB_QUEUED || st == GW_JOB_IN_PROGRESS;
}

int rs_build(struct gw_store_op *op, const char *prefix, const char (*sha)[41],
             struct rs_cmd *c)
{
    const struct gw_job *j = &op->job;
    char day[11];

    switch (op->kind) {
    case GW_OP_JOB_PUT:
        script(c, RS_PUT, prefix, sha);
        arg_str(c, j->id);
        arg_str(c, j->key_name);
        arg_str(c, j->upstream_key);
        arg_str(c, gw_job_kind_name(j->kind));
        arg_str(c, j->model_asked);
        arg_str(c, j->model_sent);
        arg_int(c, j->seconds);
        arg_str(c, j->size);
        arg_str(c, gw_job_status_name(j->status));
        arg_int(c, j->created_at);
        arg_int(c, j->updated_at);
        arg(c, j->object, j->object_len);
        gw_store_day(j->created_at, day);
        /* day[] dies with this frame: the op keeps a copy */
        {
            char *d = gw_store_op_strdup(op, day, 10);
            if (d == NULL)
                return GW_ERR; /* op failed: out of memory */
            arg(c, d, 10);
        }
        arg_str(c, op->idem_key);
        arg_created(c, j->created_at);
        arg_str(c, unfinished(j->status) ? "1" : "0");
        arg_str(c, j->status == GW_JOB_FAILED ? "1" : "0");
        arg_str(c, j->lease_key);
        arg_str(c, j->lease_id);
        return GW_OK;
    case GW_OP_JOB_GET:
        script(c, RS_GET, prefix, sha);
        arg_str(c, j->id);
        return GW_OK;
    case GW_OP_JOB_UPDATE:
        script(c, RS_UPDATE, prefix, sha);
        arg_str(c, op->upd.id);
        arg_str(c, gw_job_status_name(op->upd.status));
        arg_str(c, op->upd.object != NULL ? "1" : "0");
        arg(c, op->upd.object != NULL ? op->upd.object : "", op->upd.object_len);
        arg_int(c, op->upd.now);
        return GW_OK;
    case GW_OP_JOB_DELETE:
        script(c, RS_DELETE, prefix, sha);
        arg_str(c, j->id);
        arg_int(c, op->t1);
        return GW_OK;
    case GW_OP_JOB_LIST:
        script(c, RS_LIST, prefix, sha);
        arg_str(c, op->list.key_name);
        arg_str(c, op->list.after);
        arg_str(c, op->list.order == GW_ORDER_ASC ? "1" : "0");
        arg_int(c, op->list.limit);
        return GW_OK;
    case GW_OP_JOB_CLAIM:
        script(c, RS_CLAIM, prefix, sha);
        arg_int(c, op->t1);
        arg_int(c, op->t2);
        arg_int(c, op->limit);
        return GW_OK;
    case GW_OP_JOB_REFUND:
        script(c, RS_REFUND, prefix, sha);
        arg_str(c, j->id);
        return GW_OK;
    case GW_OP_PRUNE:
        script(c, RS_PRUNE, prefix, sha);
        arg_created(c, op->t1);
        arg_int(c, op->t2 - GW_STORE_IDEM_TTL_S);
        arg_str(c, op->prune_key);
        arg_str(c, op->prune_state == PRUNE_IN_KEY ? "1" : "0");
        arg_str(c, op->prune_state == PRUNE_JOBS_DONE ? "1" : "0");
        return GW_OK;
    case GW_OP_IDEM_BEGIN:
        script(c, RS_IDEM_BEGIN, prefix, sha);
        arg_str(c, op->key_name);
        arg_str(c, op->idem_key);
        arg_int(c, op->t1);
        return GW_OK;
    case GW_OP_IDEM_FINISH:
        script(c, RS_IDEM_FINISH, prefix, sha);
        arg_str(c, op->key_name);
        arg_str(c, op->idem_key);
        arg_int(c, op->status);
        arg(c, op->body, op->body_len);
        return GW_OK;
    case GW_OP_IDEM_ABORT:
        script(c, RS_IDEM_ABORT, prefix, sha);
        arg_str(c, op->key_name);
        arg_str(c, op->idem_key);
        return GW_OK;
    case GW_OP_USAGE:
        script(c, op->usage_q.by_kind ? RS_USAGE_KIND : RS_USAGE, prefix, sha);
        arg_str(c, op->usage_q.since);
        arg_str(c, op->usage_q.until);
        arg_str(c, op->usage_q.key_name);
        return GW_OK;
    case GW_OP_SCRIPT:
        c->src = op->script->src;
        c->argc = 0;
        c->nnum = 0;
        arg_str(c, "EVALSHA");
        arg(c, op->script->sha, 40);
        arg_str(c, "0");
        arg_str(c, prefix);
        for (unsigned i = 0; i < op->nargs && c->argc < RS_ARGV_MAX; i++)
            arg(c, op->args[i], op->arglens[i]);
        return GW_OK;
    case GW_OP_KEY_PUT:
        script(c, RS_KEY_PUT, prefix, sha);
        arg_str(c, op->key.name);
        arg(c, (const char *)op->key.sha256, sizeof(op->key.sha256));
        arg_int(c, op->key.rpm);
        arg_int(c, op->key.burst);
        arg_int(c, op->key.concurrency);
        arg_int(c, op->key.daily_seconds);
        arg_str(c, op->key.models);
        arg_int(c, op->key.expires_at);
        arg_int(c, op->key.created_at);
        return GW_OK;
    case GW_OP_KEY_PATCH: {
        static const unsigned bits[6] = { GW_KEY_SET_RPM, GW_KEY_SET_BURST,
                                          GW_KEY_SET_CONCURRENCY, GW_KEY_SET_DAILY_SECONDS,
                                          GW_KEY_SET_MODELS, GW_KEY_SET_EXPIRES };
        char *set = gw_store_op_alloc(op, 7);
        if (set == NULL)
            return GW_ERR; /* op failed: out of memory */
        for (int i = 0; i < 6; i++)
            set[i] = op->patch.set & bits[i] ? '1' : '0';
        set[6] = '\0';
        script(c, RS_KEY_PATCH, prefix, sha);
        arg_str(c, op->patch.name);
        arg(c, set, 6);
        arg_int(c, op->patch.rpm);
        arg_int(c, op->patch.burst);
        arg_int(c, op->patch.concurrency);
        arg_int(c, op->patch.daily_seconds);
        arg_str(c, op->patch.models);
        arg_int(c, op->patch.expires_at);
        arg_int(c, op->patch.now);
        return GW_OK;
    }
    case GW_OP_KEY_REVOKE:
        script(c, RS_KEY_REVOKE, prefix, sha);
        arg_str(c, op->key.name);
        arg_int(c, op->t1);
        return GW_OK;
    case GW_OP_KEYS_LIST: {
        /* the names in one argument, NUL between them: any number of them */
        size_t len = 0;
        for (size_t i = 0; i < op->nnames; i++)
            len += strlen(op->names[i]) + 1;
        char *all = gw_store_op_alloc(op, len + 1), *q = all;
        if (all == NULL)
            return GW_ERR; /* op failed: out of memory */
        for (size_t i = 0; i < op->nnames; i++) {
            size_t n = strlen(op->names[i]);
            memcpy(q, op->names[i], n);
            q[n] = '\0';
            q += n + 1;
        }
        script(c, RS_KEYS_LIST, prefix, sha);
        arg_int(c, (long long)op->nnames);
        arg(c, all, len > 0 ? len - 1 : 0);
        return GW_OK;
    }
    case GW_OP_KEYS_VERSION:
        script(c, RS_KEYS_VERSION, prefix, sha);
        return GW_OK;
    case GW_OP_JOBS_RECENT:
        script(c, RS_JOBS_RECENT, prefix, sha);
        arg_str(c, op->recent.key_name);
        arg_str(c, op->recent.status >= 0 ? gw_job_status_name((enum gw_job_status)
                                                               op->recent.status) : "");
        arg_int(c, op->recent.limit);
        return GW_OK;
    case GW_OP_CHARACTER_PUT:
        script(c, RS_CHARACTER_PUT, prefix, sha);
        arg_str(c, op->character.id);
        arg_str(c, op->character.key_name);
        arg_str(c, op->character.upstream_key);
        arg_str(c, op->character.name);
        arg_int(c, op->character.created_at);
        arg(c, op->character.object, op->character.object_len);
        return GW_OK;
    case GW_OP_CHARACTER_GET:
        script(c, RS_CHARACTER_GET, prefix, sha);
        arg_str(c, op->character.id);
        return GW_OK;
    default: /* a kind added to the store later: below */
        break;
    }
    /* an operation added to the store (by another branch, say) that this
     * engine does not implement yet: a clean failure, never a guess */
    gw_store_op_fail(op, "this operation is not supported by the redis store yet");
    return GW_ERR;
}

/* ------------------------------------------------------------- replies */

static int malformed(struct gw_store_op *op, int *log_it)
{
    *log_it = 1;
    gw_store_op_fail(op, "the job store (Redis) answered something unexpected: "
                     "is another program writing under the gateway's prefix?");
    return GW_ERR;
}

static int is_str(const redisReply *r)
{
    return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static int64_t num(const redisReply *r)
{
    if (r == NULL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (is_str(r))
        return strtoll(r->str, NULL, 10);
    return 0;
}

/*
 * A job row (the F fields' values) into j, its strings copied into op's
 * memory. GW_OK, GW_DONE (no such job: the id is nil), GW_ERR (op failed).
 */
static int parse_job(struct gw_store_op *op, const redisReply *row, struct gw_job *j,
                     int *log_it)
{
    static const int text[] = { F_ID, F_KEY, F_UPK, F_ASKED, F_SENT, F_SIZE, F_OBJ };
    const char **dst[] = { &j->id, &j->key_name, &j->upstream_key, &j->model_asked,
                           &j->model_sent, &j->size, &j->object };
    size_t total = 0;

    if (row == NULL || row->type != REDIS_REPLY_ARRAY || row->elements != F_N)
        return malformed(op, log_it);
    if (row->element[F_ID]->type == REDIS_REPLY_NIL)
        return GW_DONE;
    for (int i = 0; i < F_N; i++) {
        if (!is_str(row->element[i]))
            return malformed(op, log_it);
    }
    memset(j, 0, sizeof(*j));
    const redisReply *st = row->element[F_ST], *kind = row->element[F_KIND];
    if (gw_job_status_parse(st->str, st->len, &j->status) != GW_OK ||
        gw_job_kind_parse(kind->str, kind->len, &j->kind) != GW_OK) {
        *log_it = 1;
        gw_store_op_fail(op, "the job store holds a job with an unknown status or kind");
        return GW_ERR;
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(text); i++)
        total += row->element[text[i]]->len + 1;
    char *p = gw_store_op_alloc(op, total);
    if (p == NULL)
        return GW_ERR; /* op failed: out of memory */
    for (size_t i = 0; i < GW_ARRAY_LEN(text); i++) {
        const redisReply *e = row->element[text[i]];
        if (e->len > 0)
            memcpy(p, e->str, e->len);
        p[e->len] = '\0';
        *dst[i] = p;
        p += e->len + 1;
    }
    j->object_len = row->element[F_OBJ]->len;
    j->seconds = (int)num(row->element[F_SEC]);
    j->created_at = num(row->element[F_CR]);
    j->updated_at = num(row->element[F_UP]);
    j->refreshed_at = num(row->element[F_RF]);
    j->deleted_at = num(row->element[F_DEL]);
    j->refunded = (int)num(row->element[F_RFD]);
    return GW_OK;
}

/* res->job from a row (none: NULL). */
static int one_job(struct gw_store_op *op, const redisReply *row, int *log_it)
{
    struct gw_job *j = gw_store_op_alloc(op, sizeof(*j));

    if (j == NULL)
        return GW_ERR; /* op failed: out of memory */
    int rc = parse_job(op, row, j, log_it);
    if (rc == GW_ERR)
        return GW_ERR;
    op->res.job = rc == GW_OK ? j : NULL;
    return GW_OK;
}

/* res->jobs from r->element[first..]; rows of jobs gone meanwhile are skipped. */
static int many_jobs(struct gw_store_op *op, const redisReply *r, size_t first, int *log_it)
{
    size_t n = r->elements > first ? r->elements - first : 0;
    struct gw_job *jobs = gw_store_op_alloc(op, sizeof(*jobs) * (n > 0 ? n : 1));
    size_t k = 0;

    if (jobs == NULL)
        return GW_ERR; /* op failed: out of memory */
    for (size_t i = first; i < r->elements; i++) {
        int rc = parse_job(op, r->element[i], &jobs[k], log_it);
        if (rc == GW_ERR)
            return GW_ERR;
        k += rc == GW_OK;
    }
    op->res.jobs = jobs;
    op->res.njobs = k;
    return GW_OK;
}

/* res->character from {id key upk name cr obj} (id nil: none) */
static int one_character(struct gw_store_op *op, const redisReply *r, int *log_it)
{
    static const int text[5] = { 0, 1, 2, 3, 5 }; /* id key upk name obj */
    size_t total = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements != 6)
        return malformed(op, log_it);
    op->res.character = NULL;
    if (r->element[0]->type == REDIS_REPLY_NIL)
        return GW_OK;
    for (int i = 0; i < 6; i++) {
        if (!is_str(r->element[i]))
            return malformed(op, log_it);
    }
    for (int i = 0; i < 5; i++)
        total += r->element[text[i]]->len + 1;
    struct gw_character *ch = gw_store_op_alloc(op, sizeof(*ch));
    char *p = ch != NULL ? gw_store_op_alloc(op, total) : NULL;
    if (p == NULL)
        return GW_ERR; /* op failed: out of memory */
    const char **dst[5] = { &ch->id, &ch->key_name, &ch->upstream_key, &ch->name, &ch->object };
    for (int i = 0; i < 5; i++) {
        const redisReply *e = r->element[text[i]];
        if (e->len > 0)
            memcpy(p, e->str, e->len);
        p[e->len] = '\0';
        *dst[i] = p;
        p += e->len + 1;
    }
    ch->object_len = r->element[5]->len;
    ch->created_at = num(r->element[4]);
    op->res.character = ch;
    return GW_OK;
}

/* {aux, row} or {} (no such job): aux into *aux */
static int aux_and_job(struct gw_store_op *op, const redisReply *r, const redisReply **aux,
                       int *log_it)
{
    *aux = NULL;
    if (r->type != REDIS_REPLY_ARRAY)
        return malformed(op, log_it);
    if (r->elements == 0) {
        op->res.job = NULL;
        return GW_OK;
    }
    if (r->elements != 2)
        return malformed(op, log_it);
    *aux = r->element[0];
    return one_job(op, r->element[1], log_it);
}

/* the fields of a team key row, in the order of LUA_KEYS's K (redis_scripts.c) */
enum { K_NAME = 0, K_SHA, K_RPM, K_BURST, K_CONC, K_DAILY, K_MODELS, K_EXP, K_CR, K_UP, K_RV,
       K_N };

/* An integer as Redis keeps it: decimal digits, an optional '-', nothing else. */
static int strict_num(const redisReply *r, int64_t *out)
{
    char *end;

    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return 1;
    }
    if (!is_str(r) || r->len == 0 || r->len > 20)
        return 0;
    errno = 0;
    *out = strtoll(r->str, &end, 10);
    return errno == 0 && end == r->str + r->len;
}

enum { KEY_BAD = -2 }; /* parse_key: a row that is not one of ours */

/* A key row (K_N fields, more ignored) into k, strings in op's memory. GW_OK,
 * GW_DONE (no such key), GW_ERR (op failed: out of memory), KEY_BAD (a field
 * missing, of another type, or a limit that is not a number: never read as 0,
 * which would mean "unlimited"). */
static int parse_key(struct gw_store_op *op, const redisReply *row, struct gw_store_key *k)
{
    int64_t *nums[] = { &k->rpm, &k->burst, &k->concurrency, &k->daily_seconds,
                        &k->expires_at, &k->created_at, &k->updated_at, &k->revoked_at };
    static const int numf[] = { K_RPM, K_BURST, K_CONC, K_DAILY, K_EXP, K_CR, K_UP, K_RV };

    if (row == NULL || row->type != REDIS_REPLY_ARRAY || row->elements < K_N)
        return KEY_BAD;
    if (row->element[K_NAME]->type == REDIS_REPLY_NIL)
        return GW_DONE;
    memset(k, 0, sizeof(*k));
    for (int i = 0; i < K_N; i++) {
        if (!is_str(row->element[i]) && row->element[i]->type != REDIS_REPLY_INTEGER)
            return KEY_BAD;
    }
    for (size_t i = 0; i < GW_ARRAY_LEN(numf); i++) {
        if (!strict_num(row->element[numf[i]], nums[i]))
            return KEY_BAD;
    }
    if (!is_str(row->element[K_NAME]) || !is_str(row->element[K_MODELS]) ||
        row->element[K_SHA]->len != sizeof(k->sha256))
        return KEY_BAD;
    k->name = gw_store_op_strdup(op, row->element[K_NAME]->str, row->element[K_NAME]->len);
    k->models = gw_store_op_strdup(op, row->element[K_MODELS]->str,
                                   row->element[K_MODELS]->len);
    if (k->name == NULL || k->models == NULL)
        return GW_ERR; /* op failed: out of memory */
    memcpy(k->sha256, row->element[K_SHA]->str, sizeof(k->sha256));
    if (row->elements > K_N)
        k->last_used_at = num(row->element[K_N]);
    return GW_OK;
}

/* res->key from a row (none: NULL). */
static int one_key(struct gw_store_op *op, const redisReply *row, int *log_it)
{
    struct gw_store_key *k = gw_store_op_alloc(op, sizeof(*k));

    if (k == NULL)
        return GW_ERR; /* op failed: out of memory */
    int rc = parse_key(op, row, k);
    if (rc == KEY_BAD)
        return malformed(op, log_it);
    if (rc == GW_ERR)
        return GW_ERR;
    op->res.key = rc == GW_OK ? k : NULL;
    return GW_OK;
}

/* Note a left-out key's name in res.keys_skipped (at most 64 bytes of it, for a log). */
static int skipped_add(struct gw_store_op *op, const char *name, size_t len)
{
    const char *had = op->res.keys_skipped;
    size_t hl = had != NULL ? strlen(had) : 0;
    char *s;

    if (len > 64)
        len = 64;
    if ((s = gw_store_op_alloc(op, hl + 2 + len + 1)) == NULL)
        return GW_ERR; /* op failed: out of memory */
    if (hl > 0) {
        memcpy(s, had, hl);
        memcpy(s + hl, ", ", 2);
        hl += 2;
    }
    for (size_t i = 0; i < len; i++) /* someone else's bytes: printable only */
        s[hl + i] = name[i] > 0x20 && name[i] < 0x7f ? name[i] : '?';
    s[hl + len] = 0;
    op->res.keys_skipped = s;
    return GW_OK;
}

/* keys_list: {version, {rows}, {last used per name asked}} */
static int keys_list_reply(struct gw_store_op *op, const redisReply *r, int *log_it)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_ARRAY || r->element[2]->type != REDIS_REPLY_ARRAY ||
        r->element[2]->elements != op->nnames)
        return malformed(op, log_it);
    const redisReply *rows = r->element[1], *lu = r->element[2];
    struct gw_store_key *keys = gw_store_op_alloc(op, sizeof(*keys) *
                                                  (rows->elements > 0 ? rows->elements : 1));
    size_t n = 0;
    if (keys == NULL)
        return GW_ERR; /* op failed: out of memory */
    for (size_t i = 0; i < rows->elements; i++) {
        const redisReply *row = rows->element[i];
        int rc = parse_key(op, row, &keys[n]);
        if (rc == GW_ERR)
            return GW_ERR;
        if (rc == KEY_BAD) {
            /* someone else's data under the key's name: that key is left out (never
             * read as unlimited), the others stay. Its name: the row's last element. */
            const redisReply *nm = row->type == REDIS_REPLY_ARRAY && row->elements > 0
                                       ? row->element[row->elements - 1] : NULL;
            if (skipped_add(op, nm != NULL && is_str(nm) ? nm->str : "?",
                            nm != NULL && is_str(nm) ? nm->len : 1) != GW_OK)
                return GW_ERR;
            continue;
        }
        n += rc == GW_OK;
    }
    op->res.keys_version = (uint64_t)r->element[0]->integer;
    op->res.keys = keys;
    op->res.nkeys = n;
    if (op->nnames == 0)
        return GW_OK;
    int64_t *last = gw_store_op_alloc(op, op->nnames * sizeof(*last));
    if (last == NULL)
        return GW_ERR; /* op failed: out of memory */
    for (size_t i = 0; i < op->nnames; i++)
        last[i] = num(lu->element[i]);
    op->res.last_used = last;
    return GW_OK;
}

/* key, model, (kind,) day: the order of store.h's usage */
static int cmp_rows(const void *a, const void *b)
{
    const struct gw_usage_row *x = a, *y = b;
    int c = strcmp(x->key_name, y->key_name);

    if (c == 0)
        c = strcmp(x->model, y->model);
    if (c == 0 && x->kind != NULL && y->kind != NULL)
        c = strcmp(x->kind, y->kind);
    return c != 0 ? c : strcmp(x->day, y->day);
}

int rs_parse_usage(const redisReply *r, void *(*alloc)(void *ctx, size_t size), void *ctx,
                       struct gw_usage_row **rows, size_t *n, int *oom)
{
    *oom = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return GW_ERR;
    struct gw_usage_row *u = alloc(ctx, sizeof(*u) * (r->elements > 0 ? r->elements : 1));
    if (u == NULL) {
        *oom = 1;
        return GW_ERR;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        /* 8: per kind of job, the kind last */
        if (e->type != REDIS_REPLY_ARRAY || (e->elements != 7 && e->elements != 8))
            return GW_ERR;
        for (size_t k = 0; k < e->elements; k++) {
            if (!is_str(e->element[k]))
                return GW_ERR;
        }
        memset(&u[i], 0, sizeof(u[i])); /* kind NULL: not per kind */
        if (e->elements == 8) {
            char *kind = alloc(ctx, e->element[7]->len + 1);
            if (kind == NULL) {
                *oom = 1;
                return GW_ERR;
            }
            memcpy(kind, e->element[7]->str, e->element[7]->len + 1);
            u[i].kind = kind;
        }
        snprintf(u[i].day, sizeof(u[i].day), "%s", e->element[0]->str);
        char *key = alloc(ctx, e->element[1]->len + 1), *model = alloc(ctx, e->element[2]->len + 1);
        if (key == NULL || model == NULL) {
            *oom = 1;
            return GW_ERR;
        }
        memcpy(key, e->element[1]->str, e->element[1]->len + 1);
        memcpy(model, e->element[2]->str, e->element[2]->len + 1);
        u[i].key_name = key;
        u[i].model = model;
        u[i].jobs = num(e->element[3]);
        u[i].seconds = num(e->element[4]);
        u[i].failed = num(e->element[5]);
        u[i].refunded_seconds = num(e->element[6]);
    }
    qsort(u, r->elements, sizeof(*u), cmp_rows);
    *rows = u;
    *n = r->elements;
    return GW_OK;
}

static void *op_alloc(void *ctx, size_t size)
{
    return gw_store_op_alloc(ctx, size);
}

int rs_reply(struct gw_store_op *op, const redisReply *r, const char *prefix,
             const char (*sha)[41], struct rs_cmd *c, int *log_it)
{
    const redisReply *aux;

    *log_it = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        if (op->kind == GW_OP_JOB_PUT && strncmp(r->str, "EXISTS", 6) == 0) {
            gw_store_op_fail(op, "job %s is already recorded", op->job.id);
            return GW_ERR;
        }
        if (op->kind == GW_OP_CHARACTER_PUT && strncmp(r->str, "EXISTS", 6) == 0) {
            gw_store_op_fail(op, "character %s is already recorded", op->character.id);
            return GW_ERR;
        }
        *log_it = 1;
        gw_store_op_fail(op, "the job store (Redis) answered an error: %.160s", r->str);
        return GW_ERR;
    }
    switch (op->kind) {
    case GW_OP_JOB_PUT:
    case GW_OP_IDEM_FINISH:
    case GW_OP_IDEM_ABORT:
    case GW_OP_CHARACTER_PUT:
        return r->type == REDIS_REPLY_INTEGER ? GW_OK : malformed(op, log_it);
    case GW_OP_CHARACTER_GET:
        return one_character(op, r, log_it);
    case GW_OP_JOBS_RECENT:
        if (r->type != REDIS_REPLY_ARRAY)
            return malformed(op, log_it);
        return many_jobs(op, r, 0, log_it);
    case GW_OP_JOB_GET:
        return one_job(op, r, log_it);
    case GW_OP_JOB_UPDATE:
        if (aux_and_job(op, r, &aux, log_it) != GW_OK)
            return GW_ERR;
        if (aux != NULL && (!is_str(aux) || gw_job_status_parse(aux->str, aux->len,
                                                                &op->res.prev_status) != GW_OK))
            return malformed(op, log_it);
        return GW_OK;
    case GW_OP_JOB_DELETE:
        return aux_and_job(op, r, &aux, log_it);
    case GW_OP_JOB_REFUND:
        if (aux_and_job(op, r, &aux, log_it) != GW_OK)
            return GW_ERR;
        op->res.refunded = aux != NULL && num(aux) == 1;
        return GW_OK;
    case GW_OP_JOB_LIST:
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
            r->element[0]->type != REDIS_REPLY_INTEGER)
            return malformed(op, log_it);
        if (r->element[0]->integer < 0) {
            op->res.after_unknown = 1;
            return GW_OK;
        }
        op->res.has_more = r->element[0]->integer == 1;
        return many_jobs(op, r, 1, log_it);
    case GW_OP_JOB_CLAIM:
        if (r->type != REDIS_REPLY_ARRAY)
            return malformed(op, log_it);
        return many_jobs(op, r, 0, log_it);
    case GW_OP_PRUNE:
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 5 || !is_str(r->element[2]))
            return malformed(op, log_it);
        op->progress[0] += (uint64_t)num(r->element[0]);
        op->progress[1] += (uint64_t)num(r->element[1]);
        op->res.pruned_jobs = op->progress[0];
        op->res.pruned_idem = op->progress[1];
        if (num(r->element[4]) == 1) {
            op->prune_state = PRUNE_JOBS_DONE;
        } else {
            op->prune_key = gw_store_op_strdup(op, r->element[2]->str, r->element[2]->len);
            if (op->prune_key == NULL)
                return GW_ERR; /* op failed: out of memory */
            op->prune_state = num(r->element[3]) == 1 ? PRUNE_IN_KEY : PRUNE_AFTER_KEY;
        }
        if (op->prune_state != PRUNE_JOBS_DONE || num(r->element[1]) >= 500) {
            if (rs_build(op, prefix, sha, c) != GW_OK)
                return GW_ERR;
            return GW_AGAIN;
        }
        return GW_OK;
    case GW_OP_IDEM_BEGIN:
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
            return malformed(op, log_it);
        op->res.idem = (enum gw_idem_state)num(r->element[0]);
        if (op->res.idem == GW_IDEM_DONE) {
            if (r->elements != 3 || !is_str(r->element[2]))
                return malformed(op, log_it);
            op->res.answer_status = (int)num(r->element[1]);
            op->res.answer_len = r->element[2]->len;
            op->res.answer_body = gw_store_op_strdup(op, r->element[2]->str, r->element[2]->len);
            if (op->res.answer_body == NULL)
                return GW_ERR; /* op failed: out of memory */
        } else if (op->res.idem != GW_IDEM_NEW && op->res.idem != GW_IDEM_IN_FLIGHT) {
            return malformed(op, log_it);
        }
        return GW_OK;
    case GW_OP_SCRIPT:
        if (r->type == REDIS_REPLY_INTEGER) {
            op->res.ints[0] = r->integer;
            op->res.nints = 1;
            return GW_OK;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements > GW_ARRAY_LEN(op->res.ints))
            return malformed(op, log_it);
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_INTEGER)
                return malformed(op, log_it);
            op->res.ints[i] = r->element[i]->integer;
        }
        op->res.nints = (unsigned)r->elements;
        return GW_OK;
    case GW_OP_USAGE: {
        struct gw_usage_row *rows = NULL;
        size_t n = 0;
        int oom;
        if (rs_parse_usage(r, op_alloc, op, &rows, &n, &oom) != GW_OK) {
            if (oom) {
                gw_store_op_fail(op, "out of memory");
                return GW_ERR;
            }
            return malformed(op, log_it);
        }
        op->res.usage = rows;
        op->res.nusage = n;
        return GW_OK;
    }
    case GW_OP_KEY_PUT:
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1)
            return malformed(op, log_it);
        if (num(r->element[0]) == 1) {
            op->res.key_exists = 1;
            return GW_OK;
        }
        return r->elements == 2 ? one_key(op, r->element[1], log_it) : malformed(op, log_it);
    case GW_OP_KEY_PATCH:
        if (r->type != REDIS_REPLY_ARRAY || r->elements > 1)
            return malformed(op, log_it);
        op->res.key = NULL;
        return r->elements == 1 ? one_key(op, r->element[0], log_it) : GW_OK;
    case GW_OP_KEY_REVOKE:
        if (r->type != REDIS_REPLY_ARRAY || (r->elements != 0 && r->elements != 2))
            return malformed(op, log_it);
        op->res.key = NULL;
        if (r->elements == 0)
            return GW_OK;
        op->res.key_revoked = num(r->element[0]) == 1;
        return one_key(op, r->element[1], log_it);
    case GW_OP_KEYS_LIST:
        return keys_list_reply(op, r, log_it);
    case GW_OP_KEYS_VERSION:
        if (r->type != REDIS_REPLY_INTEGER)
            return malformed(op, log_it);
        op->res.keys_version = (uint64_t)r->integer;
        return GW_OK;
    default: /* never built (rs_build refused it) */
        break;
    }
    gw_store_op_fail(op, "this operation is not supported by the redis store yet");
    return GW_ERR;
}
