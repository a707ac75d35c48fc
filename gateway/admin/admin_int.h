/*
 * admin_int.h - between the admin listener (admin.c: requests, auth, dispatch,
 * usage) and its routes (admin_keys.c, admin_jobs.c, admin_console.c). Not for
 * the rest of the gateway.
 */
#ifndef GW_ADMIN_INT_H
#define GW_ADMIN_INT_H

#include <stdint.h>
#include <time.h>

#include <event2/buffer.h>
#include <evhtp/evhtp.h>

#include "config.h"
#include "keysync.h"
#include "server.h"
#include "store/store.h"

#define GW_ADMIN_BODY_MAX (64 * 1024) /* bytes of an admin request body: a key's JSON */

/*
 * One admin request, from its headers to its end (freed by the request's fini
 * hook, which also withdraws a store callback or keysync wait still pending).
 */
struct admin_req {
    evhtp_request_t *req;
    struct gw_worker *w;
    const struct gw_config *cfg;   /* held while the request waits: key points into it */
    const struct gw_team_key *key; /* the admin key (a config key) */
    const char *route;             /* for the access log: "admin.keys"... */
    struct evbuffer *body;         /* the request's body, at most GW_ADMIN_BODY_MAX */
    int body_too_big;
    struct gw_store_op *op;        /* pending store operation, or NULL */
    struct gw_keysync_wait *wait;  /* pending keysync wait, or NULL */
    struct evbuffer *answer;       /* an answer held until the keys are published */
    int answer_status;
    int csv, by_day, by_kind;      /* usage */
    char name[GW_STORE_KEY_NAME_MAX + 1]; /* keys: the key of the path or body */
    char secret[48];               /* POST /admin/keys: shown once, wiped at fini */
    void *data;                    /* a route's own (malloc'd; freed at fini) */
    struct timespec t0;
};

/* Wall clock, unix ms. */
int64_t gw_admin_unix_ms(void);

/* Answer with b's bytes (moved) and write the access-log line. */
void gw_admin_send(struct admin_req *a, int status, const char *ctype, struct evbuffer *b);

/* Answer with err's OpenAI error body and write the access-log line. */
void gw_admin_error(struct admin_req *a, const struct gw_error *err);

/* The same, from a printf-style message. */
void gw_admin_fail(struct admin_req *a, int status, const char *code, const char *param,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A store's answer arrived (a->op is done): the buffer to write the answer in,
 * or NULL when the request is answered already (the store's error, or out of
 * memory). */
struct evbuffer *gw_admin_answer_buffer(struct admin_req *a, const struct gw_store_res *res);

/* A JSON string of s (escaped; control bytes as \u00XX). */
void gw_admin_json_str(struct evbuffer *b, const char *s);

/* A query parameter of the request, or NULL. */
const char *gw_admin_query(struct admin_req *a, const char *name);

/* Hold the config for an answer that comes later (released at the request's end). */
void gw_admin_hold(struct admin_req *a);

/* Routes. path is the request's path; method its method. They answer (now or
 * later) in every case. */
void gw_admin_keys(struct admin_req *a, const char *method, const char *path);
void gw_admin_jobs(struct admin_req *a, const char *method);

/* The console's files (admin_console.c): if path is one of them, answered, and the
 * status is returned (*bytes: the body's length); else 0. */
int gw_admin_console(evhtp_request_t *req, const char *method, const char *path,
                     size_t *bytes);

#endif
