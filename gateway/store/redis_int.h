/*
 * redis_int.h - between the Redis engine's files: store_redis.c (the
 * connections: one hiredis context per event loop, a deadline per command,
 * reconnect with backoff, dispatch, close), redis_ops.c (the Lua script of
 * each call, its arguments, its reply turned into a result) and redis_sync.c
 * (the blocking calls of `gateway usage` and `gateway keys`). Key layout and
 * semantics: docs/store.md, "The Redis engine".
 */
#ifndef GW_REDIS_INT_H
#define GW_REDIS_INT_H

#include <hiredis/hiredis.h>

#include "store_int.h"

/* The scripts, each loaded once per connection and called by SHA1 (EVALSHA;
 * re-sent with EVAL after a NOSCRIPT: a SCRIPT FLUSH or a restarted Redis). */
enum rs_script {
    RS_GET = 0,
    RS_PUT,
    RS_UPDATE,
    RS_DELETE,
    RS_LIST,
    RS_CLAIM,
    RS_REFUND,
    RS_PRUNE,
    RS_IDEM_BEGIN,
    RS_IDEM_FINISH,
    RS_IDEM_ABORT,
    RS_USAGE,
    RS_KEY_PUT,
    RS_KEY_PATCH,
    RS_KEY_REVOKE,
    RS_KEYS_LIST,
    RS_KEYS_VERSION,
    RS_USAGE_KIND,
    RS_JOBS_RECENT,
    RS_CHARACTER_PUT,
    RS_CHARACTER_GET,
    RS_NSCRIPTS,
};

extern const char *const rs_script_src[RS_NSCRIPTS];

#define RS_ARGV_MAX 24   /* arguments of one command, the command's name included */
#define RS_NUM_MAX 10    /* numbers formatted per command */

/* One command of an operation: what was sent (kept for a NOSCRIPT re-send),
 * in the operation's memory. */
struct rs_cmd {
    const char *src;               /* the script's source (for a NOSCRIPT) */
    int argc;
    const char *argv[RS_ARGV_MAX]; /* argv[0] EVALSHA, argv[1] the SHA1 (EVAL: the source) */
    size_t argvlen[RS_ARGV_MAX];
    char num[RS_NUM_MAX][24];      /* numbers the arguments point into */
    unsigned nnum;
};

/* Fill cmd for op (its kind and arguments); prefix is [store] prefix. GW_OK,
 * or GW_ERR with op failed (an unsupported kind: an operation added to the
 * store that this engine does not know yet). */
int rs_build(struct gw_store_op *op, const char *prefix, const char (*sha)[41],
             struct rs_cmd *cmd);

/*
 * The reply of op's command into op->res. GW_OK (done), GW_AGAIN (a prune with
 * more to do: send the next step, cmd rebuilt), GW_ERR (op failed with a
 * message; *log_it set when it is worth a log line: Redis answered an error).
 */
int rs_reply(struct gw_store_op *op, const redisReply *r, const char *prefix,
             const char (*sha)[41], struct rs_cmd *cmd, int *log_it);

/*
 * The usage script's reply into rows (n of them, allocated with alloc(ctx, size)),
 * ordered by key, model, (kind,) day. GW_OK, or GW_ERR (malformed or out of
 * memory: *oom set for the latter).
 */
int rs_parse_usage(const redisReply *r, void *(*alloc)(void *ctx, size_t size), void *ctx,
                   struct gw_usage_row **rows, size_t *n, int *oom);

/* SHA1 hex of each script, into sha[RS_NSCRIPTS][41]. */
void rs_script_shas(char (*sha)[41]);

#define RS_DEFAULT_PREFIX "videogw:"
#define RS_DEFAULT_TIMEOUT_MS 250

#endif
