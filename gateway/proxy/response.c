/*
 * response.c - the upstream half of an exchange: the upstream connection's
 * events (connected, writable, head, body, done, error), the relay of its
 * response to the client with backpressure both ways, the one retry of a stale
 * pooled connection, and replays of an idempotent answer.
 */
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "admit.h"
#include "exchange.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"

static void relay_body(struct exchange *x);

/*
 * Whether a response body held whole contains one of the gateway's upstream keys
 * (a provider echoing the Authorization it received in an error body): then it
 * is not relayed. One evbuffer_search per key, no copy; only bodies sent whole
 * are searched (small: RESP_WHOLE_MAX, or what the hold before the client body
 * ended bounded), streamed downloads are not.
 */
static int body_holds_upstream_key(const struct exchange *x, struct evbuffer *b)
{
    for (unsigned i = 0; i < x->cfg->nupstream_keys; i++) {
        const char *k = x->cfg->upstream_keys[i];
        size_t kl = strlen(k);

        if (kl > 0 && evbuffer_search(b, k, kl, NULL).pos >= 0)
            return 1;
    }
    return 0;
}

/* The upstream head is here and the client body is done: answer. Small bodies
 * of known length are sent whole at GW_UP_DONE; others are streamed. */
void gw_response_start(struct exchange *x)
{
    int64_t len = gw_upconn_content_length(x->up);

    if (!x->up_done && len >= 0 && len <= RESP_WHOLE_MAX)
        return; /* wait for the whole body (GW_UP_DONE) */
    x->status = x->up_status;
    if (x->up_done) {
        /* complete already: one write */
        evbuffer_add_buffer(x->resp, gw_upconn_body(x->up));
        if (body_holds_upstream_key(x, x->resp)) {
            struct gw_error err;

            evbuffer_drain(x->resp, evbuffer_get_length(x->resp));
            gw_error_set(&err, 502, "upstream_error", "bad_gateway", NULL,
                         "The upstream response (status %d) held the gateway's upstream "
                         "credentials and was withheld", x->up_status);
            gw_reply_error(x, &err);
            return;
        }
        x->bytes_out += evbuffer_get_length(x->resp);
        x->replied = 1;
        gw_reply_send(x, x->up_status, 1, NULL, x->resp);
        return;
    }
    x->reply_started = 1;
    bufferevent_setwatermark(gw_proxy_client_bev(x), EV_WRITE, RESP_LWM, 0);
    gw_reply_head(x, x->up_status, 1, NULL, len);
    if (x->up_paused) { /* held while the client body was still coming */
        x->up_paused = 0;
        gw_upconn_pause_read(x->up, 0);
    }
    if (evbuffer_get_length(x->resp) > 0) {
        x->bytes_out += evbuffer_get_length(x->resp);
        if (x->reply_chunked)
            evhtp_send_reply_chunk(x->req, x->resp);
        else
            evhtp_send_reply_body(x->req, x->resp);
    }
    relay_body(x);
}

/* Move response body bytes to the client, pausing the upstream when the client
 * is slower than the upstream. */
static void relay_body(struct exchange *x)
{
    struct evbuffer *b = gw_upconn_body(x->up);
    size_t n = evbuffer_get_length(b);

    if (!x->reply_started) {
        /* small response, or the client body is not done yet: hold it, bounded */
        evbuffer_add_buffer(x->resp, b);
        if (!x->up_paused && evbuffer_get_length(x->resp) > RESP_HWM) {
            x->up_paused = 1;
            gw_upconn_pause_read(x->up, 1);
        }
        return;
    }
    if (n > 0) {
        x->bytes_out += n;
        if (x->reply_chunked)
            evhtp_send_reply_chunk(x->req, b);
        else
            evhtp_send_reply_body(x->req, b);
    }
    if (!x->up_paused &&
        evbuffer_get_length(bufferevent_get_output(gw_proxy_client_bev(x))) > RESP_HWM) {
        x->up_paused = 1;
        gw_upconn_pause_read(x->up, 1);
    }
}

static void finish_response(struct exchange *x)
{
    if (x->reply_started) {
        x->replied = 1;
        if (x->reply_chunked)
            evhtp_send_reply_chunk_end(x->req);
        else
            gw_reply_end(x);
    } else if (x->body_done) {
        gw_response_start(x); /* sends the whole response */
    } else {
        /* the upstream answered before the client finished its body (an early
         * error, typically): relay it and close the client connection */
        gw_reply_close_after(x);
        x->refused = 1;
        if (x->client_paused) {
            x->client_paused = 0;
            evhtp_request_resume(x->req);
        }
        gw_response_start(x);
    }
}

/*
 * A pooled connection the upstream closed just as it was reused fails before any
 * response byte. Like nginx, try once more on a fresh connection - but only for
 * requests without a body (retrieve, content, list, delete): their request can be
 * written again, and a body already streamed cannot. Only before any response
 * byte: a connection that answered, even with an invalid answer (two
 * Content-Lengths, a NUL in a header, headers too large), was not stale, and
 * that answer is the 502; a retry would send the request a second time.
 */
static int retry_stale(struct exchange *x, struct gw_upconn *c)
{
    if (x->retried || !gw_upconn_reused(c) || gw_upconn_received(c) > 0 ||
        x->up_status != 0 || x->route.has_body || x->body_in > 0 || x->state == X_DONE)
        return 0;
    gw_log(GW_LOG_INFO, "rid=%s reused upstream connection failed (%s); retrying once",
           x->rid, gw_upconn_error(c)->message);
    x->retried = 1;
    gw_upconn_release(c);
    x->up = gw_upstream_lease(x->w->up, gw_response_up_event, x);
    if (x->up == NULL)
        return 0;
    x->connected = 0;
    x->head_sent = 0;
    x->req_finished = 0;
    x->up_sent = 0;
    gw_proxy_set_state(x, X_CONNECT);
    return 1;
}

/* Tell the key pool how the upstream took the key this request used. */
static void report_key(struct exchange *x, struct gw_upconn *c)
{
    int st = x->up_status;

    gw_keypool_report(&x->w->keys, x->upstream_key, st, gw_upconn_header(c, "Retry-After"),
                      gw_proxy_now_ms());
    if (st == 401 || st == 403 || st == 429)
        gw_log(GW_LOG_WARN, "rid=%s upstream key #%u answered %d: it rests for %lld ms", x->rid,
               x->upstream_key + 1, st,
               (long long)(x->w->keys.rest_until[x->upstream_key] - gw_proxy_now_ms()));
}

void gw_response_up_event(struct gw_upconn *c, enum gw_up_event ev, void *arg)
{
    struct exchange *x = arg;
    struct gw_error err;

    switch (ev) {
    case GW_UP_CONNECTED:
        x->connected = 1;
        if (gw_reqbody_pump(x, &err) != GW_OK) {
            gw_proxy_fail(x, &err);
            return;
        }
        gw_proxy_resume_client(x);
        break;
    case GW_UP_WRITABLE:
        if (x->framing == FRAME_SPOOL && x->head_sent) {
            gw_reqbody_spool_feed(x);
            if (x->state != X_DONE && x->spool_fed == x->spool_len && !x->req_finished)
                gw_reqbody_written(x);
            return;
        }
        if (!x->req_finished && gw_reqbody_pump(x, &err) != GW_OK) {
            gw_proxy_fail(x, &err);
            return;
        }
        gw_proxy_resume_client(x);
        break;
    case GW_UP_HEADERS:
        x->up_status = gw_upconn_status(c);
        gw_m_up_head((int)x->route.id,
                     (uint64_t)(gw_proxy_now_us() - (x->up_wait_from_us
                                                         ? x->up_wait_from_us
                                                         : (int64_t)x->t0.tv_sec * 1000000 +
                                                               x->t0.tv_nsec / 1000)));
        report_key(x, c);
        if (x->quota_reserved) {
            /* a job exists only if the upstream took the create */
            int kept = x->up_status >= 200 && x->up_status < 300;
            gw_admit_quota_settle(x->w, x->key, x->quota_seconds, x->quota_day, x->quota_remote,
                                  kept);
            gw_m_vs(gw_exchange_key_slot(x), gw_exchange_model_sent(x), kept ? GW_M_VS_KEPT : GW_M_VS_RELEASED,
                    x->quota_seconds);
            x->quota_reserved = 0;
        }
        if (x->up_status == 401 || x->up_status == 407) {
            /* The provider refused the gateway's own credentials: the gateway's
             * problem, not the caller's (relayed, a 401 makes the SDKs blame the
             * team key), and its body or WWW-Authenticate may echo the key.
             * Nothing of it is relayed; the key pool has learnt it above. */
            gw_error_set(&err, 502, "upstream_error", "upstream_auth_failed", NULL,
                         "The video service refused the gateway's upstream credentials "
                         "(status %d). Your API key is not at fault: the gateway's "
                         "operator must fix its upstream key", x->up_status);
            gw_proxy_fail(x, &err);
            return;
        }
        gw_proxy_set_state(x, X_STREAM_RESP);
        if (x->body_done)
            gw_response_start(x);
        break;
    case GW_UP_BODY:
        relay_body(x);
        break;
    case GW_UP_DONE:
        x->up_done = 1;
        relay_body(x);
        /* a job object is recorded before the client sees it (gw_proxy_recorded) */
        if (!x->reply_started && x->body_done && gw_jobs_record(x) == GW_AGAIN) {
            x->recording = 1;
            return;
        }
        gw_jobs_seen(x);
        gw_jobs_idem_end(x); /* no job: a client error is kept for repeats, else dropped */
        gw_proxy_recorded(x);
        break;
    case GW_UP_ERROR:
        err = *gw_upconn_error(c);
        if (retry_stale(x, c))
            return;
        gw_upconn_release(c);
        x->up = NULL;
        gw_proxy_fail(x, &err);
        break;
    }
}

/* The upstream's answer is complete (and its job recorded, if it made one): send it. */
void gw_proxy_recorded(struct exchange *x)
{
    x->recording = 0;
    finish_response(x);
    gw_upconn_release(x->up);
    x->up = NULL;
    gw_proxy_set_state(x, X_DONE);
}

/* A repeated Idempotency-Key: the first answer again, the upstream not asked. */
void gw_proxy_replay(struct exchange *x, int status, const char *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    struct gw_error err;

    if (b == NULL) {
        gw_error_set(&err, 503, "server_error", "overloaded", NULL, "Out of memory");
        gw_proxy_fail(x, &err);
        return;
    }
    evbuffer_add(b, body, len);
    x->idem_replayed = 1;
    gw_proxy_set_state(x, X_DONE);
    gw_reply_json(x, status, b, NULL);
    evbuffer_free(b);
}

/* The client drained its output below RESP_LWM: read the upstream again. */
evhtp_res gw_response_on_write(evhtp_connection_t *conn, void *arg)
{
    evhtp_request_t *req = conn->request;
    struct exchange *x = req ? req->cbarg : NULL;

    if (x != NULL && x->up_paused && x->up != NULL &&
        evbuffer_get_length(bufferevent_get_output(conn->bev)) <= RESP_LWM) {
        x->up_paused = 0;
        gw_upconn_pause_read(x->up, 0);
    }
    return EVHTP_RES_OK;
}
