/*
 * reqbody.c - the request body pipeline of one exchange: fields observed and
 * checked against the catalog, multipart classified (never copied) or JSON
 * rewritten, the upstream framing decided, the upstream head written, the body
 * moved upstream (chunked, sized, or spooled). See docs/streaming.md.
 */
#define _GNU_SOURCE /* O_TMPFILE */
#include <fcntl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "admit.h"
#include "exchange.h"
#include "jsonbody.h"
#include "limiter.h"
#include "log.h"
#include "metrics.h"

static int spool_open(struct exchange *x, struct gw_error *err);

/* ------------------------------------------------- body field observation */

/*
 * Would some parser take this part for a file? Go and busboy read a part with an
 * empty filename as a text field, python-multipart and Werkzeug as a file; busboy
 * also takes a part without filename but with Content-Type application/octet-stream
 * for a file.
 */
static int file_like(const struct gw_mp_part *part)
{
    static const char octet[] = "application/octet-stream";
    struct gw_str ct = part->content_type;
    size_t n = sizeof(octet) - 1;

    if (part->has_filename)
        return 1;
    return ct.p != NULL && ct.len >= n && strncasecmp(ct.p, octet, n) == 0 &&
           (ct.len == n || ct.p[n] == ';' || ct.p[n] == ' ' || ct.p[n] == '\t');
}

/* A create naming characters (characters[][id], or a JSON `characters`): the video
 * service behind this gateway takes none in a create (docs/decisions.md), so none
 * goes through unchecked. */
static int no_characters(struct gw_error *err)
{
    return gw_error_set(err, 400, "invalid_request_error", "unsupported_parameter", "characters",
                        "This gateway's video service does not take characters in a create");
}

static int on_part(void *arg, const struct gw_mp_part *part, struct gw_error *err)
{
    /* the fields the gateway reads as text; a file part of that name would escape the
     * checks where the upstream reads it as text (see file_like) */
    static const char *const text_fields[] = { "model", "prompt", "seconds", "size" };
    struct exchange *x = arg;

    for (size_t i = 0; i < GW_ARRAY_LEN(text_fields); i++) {
        if (gw_str_eq(part->name, text_fields[i]) && file_like(part))
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value",
                                text_fields[i], "The %s field must be a text field, not a file",
                                text_fields[i]);
    }
    if (gw_followup_route(x))
        return gw_followup_part(x, part, file_like(part), err);
    if (gw_str_eq(part->name, "characters") ||
        (part->name.len > 10 && memcmp(part->name.p, "characters", 10) == 0 &&
         part->name.p[10] == '['))
        return no_characters(err);
    if (gw_str_eq(part->name, "input_reference") || gw_str_eq(part->name, "input_reference[]")) {
        x->nimages++;
        if (x->have_model)
            return gw_catalog_check_images(x->resolved.model, x->nimages, err);
    }
    return GW_OK;
}

static size_t copy_field(char *dst, size_t cap, struct gw_str v)
{
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    memcpy(dst, v.p, n);
    dst[n] = '\0';
    return n;
}

/* A field given twice: the upstream may take either value, and a value that came
 * before the model could not be kept to be checked, so neither is trusted. */
static int field_twice(struct gw_error *err, const char *name)
{
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", name,
                        "The %s field appears more than once", name);
}

static int on_field(void *arg, const struct gw_mp_field *f, struct gw_error *err)
{
    struct exchange *x = arg;

    if (gw_str_eq(f->name, "prompt")) {
        x->have_prompt = f->total_len > 0;
    } else if (gw_str_eq(f->name, "seconds")) {
        if (x->have_seconds++)
            return field_twice(err, "seconds");
        x->seconds_len = copy_field(x->seconds, sizeof(x->seconds), f->value);
        if (x->have_model)
            return gw_catalog_check_seconds(x->resolved.model, f->value, err);
    } else if (gw_str_eq(f->name, "size")) {
        if (x->have_size++)
            return field_twice(err, "size");
        x->size_len = copy_field(x->size, sizeof(x->size), f->value);
        if (x->have_model)
            return gw_catalog_check_size(x->resolved.model, f->value, err);
    } else if (gw_str_eq(f->name, "characters") && x->route.id == GW_ROUTE_CREATE) {
        return no_characters(err);
    }
    if (gw_followup_route(x))
        return gw_followup_field(x, f, err);
    return GW_OK;
}

/* The key's allowlist holds upstream names: what the asked model resolves to. */
static int model_allowed(const struct gw_team_key *k, struct gw_str sent)
{
    if (k == NULL || k->models.n == 0)
        return 1;
    for (unsigned i = 0; i < k->models.n; i++) {
        if (gw_str_eq(sent, k->models.v[i]))
            return 1;
    }
    return 0;
}

static int on_model(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err)
{
    struct exchange *x = arg;

    if (gw_followup_route(x))
        return gw_error_set(err, 400, "invalid_request_error", "unsupported_parameter", "model",
                            "This request takes no model: an edit or an extension keeps the "
                            "model of its video");
    if (x->have_model)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "model",
                            "The model field appears more than once");
    if (gw_catalog_resolve(&x->cfg->catalog, value, &x->resolved, err) != GW_OK)
        return GW_ERR;
    if (!model_allowed(x->key, x->resolved.sent))
        return gw_error_set(err, 403, "invalid_request_error", "model_not_allowed", "model",
                            "This API key may not use model \"%.*s\"",
                            (int)(value.len < 64 ? value.len : 64), value.p);
    x->have_model = 1;
    copy_field(x->model_asked, sizeof(x->model_asked), value);
    /* fields seen before the model are checked now */
    if (gw_catalog_check_images(x->resolved.model, x->nimages, err) != GW_OK)
        return GW_ERR;
    if (x->have_seconds &&
        gw_catalog_check_seconds(x->resolved.model,
                                 (struct gw_str){ x->seconds, x->seconds_len }, err) != GW_OK)
        return GW_ERR;
    if (x->have_size &&
        gw_catalog_check_size(x->resolved.model, (struct gw_str){ x->size, x->size_len },
                              err) != GW_OK)
        return GW_ERR;
    *out = x->resolved.sent;
    return GW_OK;
}

#define SECONDS_MAX 3600 /* the catalog's bound on a seconds value */

/* A decision put off to the body's end (admit.h) refuses on any limit. */
static enum gw_m_limit refused_by(const struct gw_error *e)
{
    return strcmp(e->code, "insufficient_quota") == 0 ? GW_M_QUOTA_EXCEEDED
           : strstr(e->message, "video service") != NULL ? GW_M_UPSTREAM_BUSY
                                                         : GW_M_RATE_LIMITED;
}

static void reserved(struct exchange *x)
{
    gw_m_vs(x->key->slot,
            x->have_model && x->resolved.model != NULL ? x->resolved.sent
                                                       : (struct gw_str){ NULL, 0 },
            GW_M_VS_RESERVED, x->quota_seconds); /* a model outside the catalog: "other" */
    x->quota_reserved = 1;
}

/* Redis answered the reservation: the held end of the body goes on, or the
 * create is refused (the upstream never saw a complete body: no job). */
static void quota_decided(void *arg, const struct gw_error *refusal)
{
    struct exchange *x = arg;
    struct gw_error err;

    x->quota_wait = NULL;
    if (refusal != NULL) {
        if (refusal->status == 429)
            gw_m_limit(x->key->slot, refused_by(refusal));
        gw_proxy_fail(x, refusal);
        return;
    }
    reserved(x);
    if (gw_reqbody_pump(x, &err) != GW_OK)
        gw_proxy_fail(x, &err);
}

/*
 * The create's video-seconds against the key's daily budget, reserved before the
 * upstream can see a complete body (on_end runs before the closing delimiter is
 * passed on): over budget, the upstream request is aborted and no job exists.
 * Absent, `seconds` counts as the largest value the model's catalog lists (8
 * when it lists none): the budget is never under-counted.
 */
int gw_reqbody_reserve(struct exchange *x, struct gw_error *err)
{
    uint32_t secs = 0;

    if (x->have_seconds) {
        if (x->seconds_len == 0 || x->seconds_len > 6)
            goto bad;
        for (size_t i = 0; i < x->seconds_len; i++) {
            if (x->seconds[i] < '0' || x->seconds[i] > '9')
                goto bad;
            secs = secs * 10 + (uint32_t)(x->seconds[i] - '0');
        }
        if (secs == 0 || secs > SECONDS_MAX)
            goto bad;
    } else {
        const struct gw_model *m = x->resolved.model;
        secs = m != NULL && m->nseconds > 0 ? 0 : 8;
        for (unsigned i = 0; m != NULL && i < m->nseconds; i++) {
            uint32_t v = (uint32_t)strtoul(m->seconds[i], NULL, 10);
            secs = v > secs ? v : secs;
        }
    }
    /* day and Retry-After are written into the exchange, now or when Redis answers */
    struct gw_quota_req q = { x->key, secs, &x->quota_day, &x->retry_after_ms,
                              &x->quota_remote, &x->rate, &x->lease };
    x->quota_seconds = secs;
    switch (gw_admit_quota(x->w, &q, quota_decided, x, &x->quota_wait, err)) {
    case GW_OK:
        reserved(x);
        return GW_OK;
    case GW_AGAIN: /* Redis decides; the body's end waits for it (gw_reqbody_pump) */
        return GW_OK;
    default:
        if (err->status == 429)
            gw_m_limit(x->key->slot, refused_by(err));
        return GW_ERR;
    }

bad:
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "seconds",
                        "Invalid 'seconds': expected a whole number of seconds, 1 to %d",
                        SECONDS_MAX);
}

static int on_end(void *arg, struct gw_error *err)
{
    struct exchange *x = arg;

    if (gw_followup_route(x))
        return gw_followup_end(x, err);
    if (x->route.id == GW_ROUTE_REMIX) {
        if (!x->have_prompt)
            return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                                "prompt", "Missing required parameter: 'prompt'");
        return GW_OK;
    }
    if (!x->have_model)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            "model", "Missing required parameter: 'model'");
    if (!x->have_prompt)
        return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter",
                            "prompt", "Missing required parameter: 'prompt'");
    return gw_reqbody_reserve(x, err);
}

/*
 * Decide how the upstream body is framed, as soon as it can be known (see
 * docs/streaming.md): exact length once the model part is rewritten (sized
 * client body) or the whole body is in; the fallback once more than
 * `lookahead` bytes are held without a model part.
 */
static int decide_framing(struct exchange *x, int input_done, struct gw_error *err)
{
    if (x->framing != FRAME_UNDECIDED)
        return GW_OK;
    if (x->body == BODY_MULTIPART && gw_followup_route(x) && x->client_cl >= 0) {
        /* nothing of an edit's, extension's or character's body is rewritten (a
         * model part is refused): its length is the client's */
        x->framing = FRAME_LENGTH;
        x->up_cl = (uint64_t)x->client_cl;
    } else if (x->body == BODY_MULTIPART && x->mp->seen_model && x->client_cl >= 0) {
        x->framing = FRAME_LENGTH;
        x->up_cl = (uint64_t)(x->client_cl + x->mp->delta);
    } else if (input_done) {
        x->framing = FRAME_LENGTH;
        x->up_cl = evbuffer_get_length(x->out);
    } else if (x->body == BODY_MULTIPART && evbuffer_get_length(x->out) > x->cfg->lookahead) {
        x->framing = x->cfg->fallback == GW_FALLBACK_SPOOL ? FRAME_SPOOL : FRAME_CHUNKED;
        if (x->framing == FRAME_SPOOL && spool_open(x, err) != GW_OK)
            return GW_ERR;
        gw_log(GW_LOG_DEBUG, "rid=%s no model part within %zu bytes: %s upstream", x->rid,
               x->cfg->lookahead, x->framing == FRAME_SPOOL ? "spooling" : "chunked");
    }
    return GW_OK;
}

static int scan_multipart(struct exchange *x, struct gw_error *err)
{
    struct gw_mp_op ops[MP_OPS];
    size_t nops;

    for (;;) {
        /* bytes before mp->scanned - mp->classified are scanned but unclassified */
        size_t skip = (size_t)(x->mp->scanned - x->mp->classified);
        size_t avail = evbuffer_get_length(x->in);
        struct evbuffer_ptr pos;
        struct evbuffer_iovec vec;
        ssize_t used;

        if (avail <= skip)
            return GW_OK;
        evbuffer_ptr_set(x->in, &pos, skip, EVBUFFER_PTR_SET);
        if (evbuffer_peek(x->in, -1, &pos, &vec, 1) < 1)
            return GW_OK;
        if (x->framing == FRAME_UNDECIDED) {
            /* scan no further than the window, so the decision does not depend
             * on how the body happened to be sliced into reads */
            size_t held = evbuffer_get_length(x->out);
            size_t room = held < x->cfg->lookahead ? x->cfg->lookahead - held + 1 : 1;
            if (vec.iov_len > room)
                vec.iov_len = room;
        }
        nops = 0;
        used = gw_mp_execute(x->mp, vec.iov_base, vec.iov_len, ops, &nops, MP_OPS);
        if (used < 0) {
            *err = x->mp->err;
            return GW_ERR;
        }
        for (size_t i = 0; i < nops; i++) {
            switch (ops[i].kind) {
            case GW_MP_PASS:
                evbuffer_remove_buffer(x->in, x->out, ops[i].len);
                break;
            case GW_MP_DROP:
                evbuffer_drain(x->in, ops[i].len);
                break;
            case GW_MP_LITERAL:
                evbuffer_add(x->out, ops[i].p, ops[i].len);
                break;
            }
        }
        if (decide_framing(x, 0, err) != GW_OK)
            return GW_ERR;
        if (used == 0 && nops == 0)
            return GW_OK;
    }
}

static int finish_multipart(struct exchange *x, struct gw_error *err)
{
    struct gw_mp_op ops[MP_OPS];
    size_t nops = 0;

    if (gw_mp_finish(x->mp, ops, &nops, MP_OPS) != GW_OK) {
        *err = x->mp->err;
        return GW_ERR;
    }
    for (size_t i = 0; i < nops; i++) {
        if (ops[i].kind == GW_MP_PASS)
            evbuffer_remove_buffer(x->in, x->out, ops[i].len);
        else if (ops[i].kind == GW_MP_DROP)
            evbuffer_drain(x->in, ops[i].len);
        else
            evbuffer_add(x->out, ops[i].p, ops[i].len);
    }
    return GW_OK;
}

static void free_ref(const void *data, size_t len, void *extra)
{
    free((void *)data);
}

static int rewrite_json(struct exchange *x, struct gw_error *err)
{
    size_t len = evbuffer_get_length(x->in);
    const char *p = (const char *)evbuffer_pullup(x->in, -1);
    char *out = NULL;
    size_t out_len = 0;

    if (gw_jsonbody_rewrite((struct gw_str){ p ? p : "", len }, &gw_reqbody_hooks, x, &out, &out_len,
                            err) != GW_OK)
        return GW_ERR;
    if (out != NULL) {
        evbuffer_drain(x->in, len);
        evbuffer_add_reference(x->out, out, out_len, free_ref, NULL);
    } else {
        evbuffer_add_buffer(x->out, x->in);
    }
    return GW_OK;
}

static int spool_open(struct exchange *x, struct gw_error *err)
{
    const char *dir = x->cfg->spool_dir ? x->cfg->spool_dir : "/tmp";

    x->spool_fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (x->spool_fd < 0) {
        gw_log(GW_LOG_ERROR, "rid=%s cannot create a spool file in %s: %s", x->rid, dir,
               strerror(errno));
        return gw_error_set(err, 503, "server_error", "spool_unavailable", NULL,
                            "The gateway cannot buffer this upload right now");
    }
    return GW_OK;
}

static int spool_write(struct exchange *x, struct gw_error *err)
{
    while (evbuffer_get_length(x->out) > 0) {
        int n = evbuffer_write(x->out, x->spool_fd);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            gw_log(GW_LOG_ERROR, "rid=%s spool write failed: %s", x->rid, strerror(errno));
            return gw_error_set(err, 503, "server_error", "spool_unavailable", NULL,
                                "The gateway cannot buffer this upload right now");
        }
        x->spool_len += (uint64_t)n;
    }
    return GW_OK;
}

/* Fill the upstream output from the spool file, SPOOL_STEP at a time, so the
 * memory used stays bounded whatever the file size. */
void gw_reqbody_spool_feed(struct exchange *x)
{
    struct evbuffer *o = gw_upconn_output(x->up);

    while (x->spool_fed < x->spool_len && evbuffer_get_length(o) < REQ_HWM) {
        struct evbuffer_iovec v;
        size_t want = x->spool_len - x->spool_fed;
        if (want > SPOOL_STEP)
            want = SPOOL_STEP;
        if (evbuffer_reserve_space(o, (ev_ssize_t)want, &v, 1) < 1)
            return;
        ssize_t n = pread(x->spool_fd, v.iov_base, want, (off_t)x->spool_fed);
        if (n <= 0) {
            struct gw_error err;
            gw_error_set(&err, 503, "server_error", "spool_unavailable", NULL,
                         "The gateway could not read back the buffered upload");
            gw_proxy_fail(x, &err);
            return;
        }
        v.iov_len = (size_t)n;
        evbuffer_commit_space(o, &v, 1);
        x->spool_fed += (uint64_t)n;
        x->up_sent += (uint64_t)n;
    }
}

/* Write the upstream request head into the upstream output. */
static void write_head(struct exchange *x)
{
    struct evbuffer *o = gw_upconn_output(x->up);
    const struct gw_config *cfg = x->cfg;
    evhtp_request_t *req = x->req;
    const unsigned char *q = req->uri->query_raw;
    struct gw_worker *w = x->w;
    evhtp_header_t *h;
    char tail[GW_ID_MAX + 32];
    int n;

    /* The upstream path is rebuilt from the route, not copied: it is canonical
     * (no trailing slash, an id already validated); the query is passed on. */
    n = snprintf(tail, sizeof(tail), "%s%s%.*s%s",
                 x->route.id == GW_ROUTE_EDIT                 ? "/edits"
                 : x->route.id == GW_ROUTE_EXTEND             ? "/extensions"
                 : x->route.id == GW_ROUTE_CHARACTER_CREATE ||
                         x->route.id == GW_ROUTE_CHARACTER    ? "/characters"
                                                              : "",
                 x->route.video_id.len > 0 ? "/" : "", (int)x->route.video_id.len,
                 x->route.video_id.p,
                 x->route.id == GW_ROUTE_CONTENT ? "/content"
                 : x->route.id == GW_ROUTE_REMIX ? "/remix"
                                                 : "");
    /* the client's key never goes upstream; one of ours does. A follow-up goes with
     * the key that created its job (another provider account would not know it). */
    x->upstream_key =
        x->pinned_key >= 0 ? (unsigned)x->pinned_key : gw_keypool_pick(&w->keys, gw_proxy_now_ms());
    gw_upconn_start_request(
        x->up, cfg, htparser_get_methodstr_m(req->method), (struct gw_str){tail, (size_t)n},
        (struct gw_str){q ? (const char *)q : "", q ? strlen((const char *)q) : 0},
        x->upstream_key);
    evbuffer_add_printf(o, "X-Request-Id: %s\r\ntraceparent: %s\r\n", x->rid, x->traceparent);
    TAILQ_FOREACH(h, req->headers_in, next)
    {
        if (gw_proxy_hop_by_hop(h->key, h->klen))
            continue;
        /* a tracestate belongs to the traceparent it came with (W3C: discard it
         * when that one is not used) */
        if (!x->trace_kept && h->klen == 10 && strncasecmp(h->key, "tracestate", 10) == 0)
            continue;
        evbuffer_add(o, h->key, h->klen);
        evbuffer_add(o, ": ", 2);
        evbuffer_add(o, h->val, h->vlen);
        evbuffer_add(o, "\r\n", 2);
    }
    if (x->framing == FRAME_CHUNKED)
        evbuffer_add(o, "Transfer-Encoding: chunked\r\n\r\n", 30);
    else if (x->framing == FRAME_SPOOL)
        evbuffer_add_printf(o, "Content-Length: %" PRIu64 "\r\n\r\n", x->spool_len);
    else if (x->up_cl > 0 || x->route.has_body)
        evbuffer_add_printf(o, "Content-Length: %" PRIu64 "\r\n\r\n", x->up_cl);
    else
        evbuffer_add(o, "\r\n", 2);
    x->head_sent = 1;
}

/* Move what is classified to the upstream output, framed as decided. */
static void flush_out(struct exchange *x)
{
    struct evbuffer *o = gw_upconn_output(x->up);
    size_t n = evbuffer_get_length(x->out);

    if (n == 0)
        return;
    if (x->framing == FRAME_CHUNKED) {
        evbuffer_add_printf(o, "%zx\r\n", n);
        evbuffer_add_buffer(o, x->out);
        evbuffer_add(o, "\r\n", 2);
    } else {
        evbuffer_add_buffer(o, x->out);
    }
    x->up_sent += n;
}

void gw_reqbody_written(struct exchange *x)
{
    x->req_finished = 1;
    gw_upconn_request_sent(x->up);
    if (x->state == X_STREAM_REQ || x->state == X_CONNECT)
        gw_proxy_set_state(x, X_AWAIT_RESP);
}

/*
 * Drive the request side as far as it can go now: classify what arrived,
 * decide the framing, write the head and the body upstream. Called on every
 * body piece, at the end of the body, on connect and when the upstream output
 * drains. GW_ERR with err when the request must be refused.
 */
int gw_reqbody_pump(struct exchange *x, struct gw_error *err)
{
    int input_done;

    if (x->state == X_DONE)
        return GW_OK;
    /* 1. classify */
    switch (x->body) {
    case BODY_MULTIPART:
        if (scan_multipart(x, err) != GW_OK)
            return GW_ERR;
        if (x->body_done && !x->mp_finished) {
            if (finish_multipart(x, err) != GW_OK)
                return GW_ERR;
            x->mp_finished = 1;
        }
        break;
    case BODY_JSON:
        /* once, when the body is whole (the framing is decided right after), even
         * when it is empty: an empty chunked body must be refused, not forwarded */
        if (x->body_done && x->framing == FRAME_UNDECIDED && rewrite_json(x, err) != GW_OK)
            return GW_ERR;
        break;
    case BODY_RAW:
        evbuffer_add_buffer(x->out, x->in);
        break;
    }
    input_done = x->body_done && evbuffer_get_length(x->in) == 0;

    /* 2. decide the framing (multipart and JSON only) */
    if (decide_framing(x, input_done, err) != GW_OK)
        return GW_ERR;
    if (x->framing == FRAME_SPOOL) {
        if (spool_write(x, err) != GW_OK)
            return GW_ERR;
        if (!input_done || !x->connected || gw_followup_hold(x) || x->quota_wait != NULL ||
            gw_admit_deferred(x->lease))
            return GW_OK;
        if (!x->head_sent) {
            write_head(x);
            gw_proxy_set_state(x, X_STREAM_REQ);
        }
        gw_reqbody_spool_feed(x);
        if (x->spool_fed == x->spool_len && !x->req_finished)
            gw_reqbody_written(x);
        return GW_OK;
    }
    /* an edit's or extension's head waits for its `video` part (followup.c) */
    if (x->framing == FRAME_UNDECIDED || gw_followup_hold(x) || !x->connected)
        return GW_OK;
    /* the daily budget's answer is due: nothing more goes upstream before it, so the
     * upstream never sees a complete body that was over budget; nor anything of a
     * small body whose limits are decided at its end (admit.h GW_ADMIT_HOLD_MAX) */
    if (x->quota_wait != NULL || gw_admit_deferred(x->lease))
        return GW_OK;

    /* 3. send */
    if (!x->head_sent) {
        write_head(x);
        gw_proxy_set_state(x, X_STREAM_REQ);
    }
    flush_out(x);
    if (input_done && !x->req_finished) {
        if (x->framing == FRAME_CHUNKED)
            evbuffer_add(gw_upconn_output(x->up), "0\r\n\r\n", 5);
        else if (x->up_sent != x->up_cl) {
            gw_log(GW_LOG_ERROR, "rid=%s body length %" PRIu64 " != announced %" PRIu64,
                   x->rid, x->up_sent, x->up_cl);
            return gw_error_set(err, 502, "upstream_error", "bad_gateway", NULL,
                                "The gateway could not frame the request body");
        }
        gw_reqbody_written(x);
    }
    if (gw_upconn_output_pending(x->up) >= FLUSH_NOW)
        gw_upconn_flush(x->up);
    return GW_OK;
}

const struct gw_mp_hooks gw_reqbody_hooks = {
    .on_part = on_part,
    .on_field = on_field,
    .on_model = on_model,
    .on_end = on_end,
};
