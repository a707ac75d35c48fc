/*
 * exchange.h - one client exchange, shared by the files that drive it:
 * proxy.c (lifecycle, state machine), exchange.c (allocation, pool, ids),
 * response.c (upstream events, response relay), reqbody.c (the request body
 * pipeline) and reply.c (answers to the client). Internal to the gateway.
 */
#ifndef GW_EXCHANGE_H
#define GW_EXCHANGE_H

#include <stdint.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <evhtp/evhtp.h>

#include "admit.h"
#include "gcra.h"
#include "catalog.h"
#include "multipart.h"
#include "router.h"
#include "server.h"
#include "upstream.h"

/* Request side: at most this many bytes queued for the upstream per exchange
 * (client reads sized to the room left, the client paused when less than
 * READ_MIN is left). */
#define REQ_HWM (128 * 1024)
#define READ_MIN (16 * 1024)
/* Request side: at least this many bytes for the upstream are written at once
 * (gw_upconn_flush) instead of later in the loop pass: a body piece is then
 * freed in the callback that read it. Small requests keep one writev per pass. */
#define FLUSH_NOW (32 * 1024)
/* Response side: pause the upstream above this many bytes queued for the client,
 * resume below RESP_LWM. */
#define RESP_HWM (256 * 1024)
#define RESP_LWM (64 * 1024)
/* Upstream responses up to this size with a known length are sent in one piece
 * (the job objects); larger or unknown ones are streamed. */
#define RESP_WHOLE_MAX (64 * 1024)
/* Bytes of the spool file fed to the upstream per step. */
#define SPOOL_STEP (256 * 1024)
#define MP_OPS 64

enum xstate {
    X_HEADERS = 0,
    X_ADMIT,
    X_CONNECT,
    X_STREAM_REQ,
    X_AWAIT_RESP,
    X_STREAM_RESP,
    X_DONE,
};

enum body_kind {
    BODY_RAW = 0,   /* passed through as is (follow-up routes) */
    BODY_MULTIPART, /* scanned, `model` rewritten */
    BODY_JSON,      /* held whole (bounded), `model` rewritten */
};

enum framing {
    FRAME_UNDECIDED = 0, /* head held until the model part is seen (bounded) */
    FRAME_LENGTH,        /* exact Content-Length */
    FRAME_CHUNKED,       /* chunked upstream (fallback) */
    FRAME_SPOOL,         /* spooled to a temp file, sent with Content-Length at the end */
};

struct gw_store_op;

struct exchange {
    enum xstate state;
    struct gw_worker *w;
    const struct gw_config *cfg;
    const struct gw_keytab *keytab; /* the store's keys it started under (held; key may
                                     * point into it) */
    evhtp_request_t *req;
    struct gw_route route;
    const struct gw_team_key *key;
    struct gw_admission *admission; /* pending asynchronous admission */
    struct gw_lease *lease;      /* a create admitted by the limits in Redis: what it holds
                                    (given back when it ends); NULL otherwise */
    int admitted;            /* gw_admit_release() owed (gw_exchange_release_slot) */
    int put_lease;           /* the job's put carries the concurrency slot's release */
    int expect_continue;     /* send 100 Continue once admitted */
    char rid[20];
    struct timespec t0;

    /* client request body */
    enum body_kind body;
    int64_t client_cl;       /* -1: chunked */
    uint64_t body_in;        /* bytes received */
    int body_done;           /* libevhtp saw the end of the request */
    int client_paused;
    int refused;             /* answered early: drain whatever else comes */
    int linger;              /* early reply sent but not ended: see gw_reply_send() */
    struct evbuffer *in;     /* received, not yet classified */
    struct evbuffer *out;    /* classified, not yet written upstream */
    struct gw_mp *mp;        /* multipart creates only; kept when recycled */
    struct exchange *next_free; /* the worker's free list */
    int mp_finished;         /* gw_mp_finish() has run */

    /* what the body said (for checks and the access log) */
    struct gw_resolved resolved;
    char model_asked[64];
    unsigned nimages;
    int have_model, have_prompt;
    int have_seconds, have_size;   /* a second one is refused: only one value can be held */
    char seconds[16], size[32];    /* held until the model is known; may hold NULs */
    size_t seconds_len, size_len;

    /* upstream request */
    struct gw_upconn *up;
    int connected;
    enum framing framing;
    uint64_t up_cl;          /* FRAME_LENGTH / FRAME_SPOOL: body length sent */
    uint64_t up_sent;        /* body bytes written upstream (without chunk framing) */
    int head_sent;
    int retried;             /* retry_stale() used its one retry */
    unsigned upstream_key;   /* index of the upstream key used (keypool) */
    int req_finished;        /* whole request written upstream */
    int spool_fd;
    uint64_t spool_len, spool_fed;

    /* upstream response */
    int up_status;
    int up_done;
    int up_paused;
    int reply_started;       /* client reply head sent (streaming) */
    int replied;             /* client reply complete or error sent */
    int reply_chunked;
    struct evbuffer *resp;   /* whole-response buffer (small bodies) */
    uint64_t bytes_out;
    int status;              /* status sent to the client */

    /* limits */
    struct gw_gcra_result rate;  /* the key's rpm state: x-ratelimit-* headers (limit 0: none) */
    int64_t retry_after_ms;      /* a 429 of the gateway's own: Retry-After */
    int quota_reserved;          /* quota_seconds held for this create until settled */
    int quota_remote;            /* ... in Redis (shared by the instances), not limiter.c */
    struct gw_quota_wait *quota_wait; /* the reservation Redis has not answered yet: the
                                    body's end is held back from the upstream meanwhile */
    uint32_t quota_seconds;
    int64_t quota_day;

    /* the job registry (jobs.c) */
    struct gw_store_op *store_op; /* a pending store call: cancelled if the exchange ends */
    int pinned_key;              /* follow-up: index of the upstream key that made the job; -1 */
    int job_seconds;             /* follow-up: the job's seconds, as recorded */
    int64_t job_created_at;      /* unix s */
    int recording;               /* a 2xx create held until its job is recorded */
    int idem;                    /* an Idempotency-Key record in flight: finish or abort it */
    int idem_begin;              /* its begin is pending in the store */
    int idem_replayed;           /* the answer is a stored one: Idempotent-Replayed */
    char idem_key[256];
    const char *err_code;    /* gateway error code for the access log */

    /* edits, extensions, characters (followup.c): the `video` they take, and when
     * the upstream head may go (it names the upstream key, which a referenced video
     * decides) */
    enum { KEY_OPEN = 0, KEY_HOLD, KEY_LOOKUP } key_state;
    int video_given;         /* a `video` file part or a video[id] field was seen */
    int video_file;          /* ... and it was a file */
    int head_blind;          /* the head went before any `video`: a later id is refused */
    int end_deferred;        /* the body ended while the referenced video was looked up */
    int have_name;           /* characters: the `name` field */
    const struct gw_model *op_model; /* the source video's model (NULL: not known) */
    int op_any;              /* an uploaded video: the catalog checks any model */
    char video_ref[GW_ID_MAX + 1];

    /* operations (gateway/ops/) */
    int64_t up_wait_from_us; /* monotonic µs: request fully sent upstream (0: not yet) */
    char traceparent[56];    /* W3C trace context sent upstream: the client's or ours */
    int trace_kept;          /* it is the client's: its tracestate goes along too */
};

/* proxy.c: the exchange's lifecycle */
void gw_proxy_set_state(struct exchange *x, enum xstate to);
void gw_proxy_resume_client(struct exchange *x); /* if paused and below the watermark */

/* exchange.c */
struct exchange *gw_exchange_new(struct gw_worker *w, evhtp_request_t *req);
void gw_exchange_free(struct exchange *x); /* back to the worker's pool */
void gw_exchange_release_slot(struct exchange *x); /* the answer is going out */
void gw_exchange_set_traceparent(struct exchange *x, evhtp_headers_t *h);
int64_t gw_exchange_key_slot(const struct exchange *x); /* -1: no key */
struct gw_str gw_exchange_model_sent(const struct exchange *x); /* {NULL, 0}: none */

/* response.c */
void gw_response_up_event(struct gw_upconn *c, enum gw_up_event ev, void *arg);
void gw_response_start(struct exchange *x);
evhtp_res gw_response_on_write(evhtp_connection_t *conn, void *arg);
void gw_proxy_fail(struct exchange *x, const struct gw_error *err);
int64_t gw_proxy_now_ms(void);  /* monotonic */
int64_t gw_proxy_unix_ms(void); /* wall clock (UTC) */
int64_t gw_proxy_now_us(void);  /* monotonic */
struct bufferevent *gw_proxy_client_bev(struct exchange *x);
int gw_proxy_hop_by_hop(const char *name, size_t len);

/* reply.c: answers to the client */
const char *gw_reply_reason(int status);
void gw_reply_head(struct exchange *x, int status, int upstream, const char *allow,
                   int64_t length);
void gw_reply_send(struct exchange *x, int status, int upstream, const char *allow,
                   struct evbuffer *body);
void gw_reply_end(struct exchange *x);
void gw_reply_end_linger(struct exchange *x);
void gw_reply_close_after(struct exchange *x);
void gw_reply_json(struct exchange *x, int status, struct evbuffer *buf, const char *allow);
void gw_reply_error(struct exchange *x, const struct gw_error *err);
void gw_reply_healthz(struct exchange *x);
void gw_reply_readyz(struct exchange *x);
void gw_reply_models(struct exchange *x);

/* proxy.c: where jobs.c's asynchronous answers come back */
void gw_proxy_owner_checked(struct exchange *x, const struct gw_error *refusal);
void gw_proxy_recorded(struct exchange *x);
void gw_proxy_replay(struct exchange *x, int status, const char *body, size_t len);

/* jobs.c: the job registry (GW_AGAIN: the answer comes back through proxy.c) */
int gw_jobs_check_owner(struct exchange *x, struct gw_error *err);
int gw_jobs_list(struct exchange *x, struct gw_error *err);
int gw_jobs_record(struct exchange *x);
int gw_jobs_idem_begin(struct exchange *x, const char *idem_key, struct gw_error *err);
void gw_jobs_idem_end(struct exchange *x);
void gw_jobs_seen(struct exchange *x);
/* a job object seen (a retrieve, the refresh): stored; a first failure refunds */
void gw_jobs_store_seen(struct gw_worker *w, const char *id, const char *body, size_t len);

/* proxy.c: a held upstream head may go now (followup.c decided its key) */
void gw_proxy_head_ready(struct exchange *x);

/* followup.c: the bodies of edits, extensions and character creates */
int gw_followup_route(const struct exchange *x); /* 1 for those three routes */
void gw_followup_begin(struct exchange *x);
int gw_followup_part(struct exchange *x, const struct gw_mp_part *part, int file,
                     struct gw_error *err);
int gw_followup_field(struct exchange *x, const struct gw_mp_field *f, struct gw_error *err);
int gw_followup_end(struct exchange *x, struct gw_error *err);
int gw_followup_hold(struct exchange *x); /* 1: the upstream head must wait */
/* the referenced video, looked up (jobs.c): its model, or a refusal */
void gw_followup_ref_checked(struct exchange *x, const struct gw_model *m,
                             const struct gw_error *refusal);

/* jobs.c: pin the exchange to the upstream key of this label (a job's, a character's) */
int gw_jobs_pin(struct exchange *x, const char *label, const char *what, struct gw_error *err);
/* jobs.c: look a body's video[id] up (GW_AGAIN: gw_followup_ref_checked comes later) */
int gw_jobs_ref_lookup(struct exchange *x, struct gw_error *err);

/* characters.c: the character registry */
int gw_characters_check_owner(struct exchange *x, struct gw_error *err);
int gw_characters_record(struct exchange *x);

/* reqbody.c: the request body pipeline */
int gw_reqbody_reserve(struct exchange *x, struct gw_error *err);
extern const struct gw_mp_hooks gw_reqbody_hooks;
int gw_reqbody_pump(struct exchange *x, struct gw_error *err);
void gw_reqbody_spool_feed(struct exchange *x);
void gw_reqbody_written(struct exchange *x);

#endif
