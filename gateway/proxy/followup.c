/*
 * followup.c - the bodies of edits, extensions and character creates (issue 9):
 * the `video` they take - an uploaded file, streamed like input_reference and
 * never held, or video[id] naming one of the caller's videos - their other
 * fields, and when the upstream head may go.
 *
 * The upstream head names the upstream key, and a referenced video must go out
 * with the key that made it (another provider account would not know it). So the
 * head is held (KEY_HOLD) until the `video` part says which key: a file, any key
 * (round-robin, as a create); an id, the one the store recorded with the job
 * (KEY_LOOKUP, the client paused meanwhile). The hold is bounded: past
 * FOLLOWUP_WINDOW bytes without a `video` part, the head goes with any key and
 * a video[id] that comes later is refused. Holding the head also means a bad
 * field before the video (a name of 10,000 bytes, seconds the catalog does not
 * list, `video` twice) is refused before the upstream has seen a byte; one after
 * a streamed file is refused before the body's closing delimiter goes, so the
 * upstream never gets a complete request and makes nothing.
 *
 * What an edit or extension may do is the catalog's (gw_catalog_check_op): the
 * model of the referenced video decides; an uploaded video has no model the
 * gateway knows, so there the question is whether any model offers it.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "exchange.h"
#include "log.h"

/* bytes of a follow-up's body held before its `video` part shows which upstream
 * key it needs: the SDKs send prompt (and seconds) first, a few hundred bytes */
#define FOLLOWUP_WINDOW (64 * 1024)
/* bytes of a character's name: room for any display name, and a bound */
#define CHARACTER_NAME_MAX 256

int gw_followup_route(const struct exchange *x)
{
    return x->route.id == GW_ROUTE_EDIT || x->route.id == GW_ROUTE_EXTEND ||
           x->route.id == GW_ROUTE_CHARACTER_CREATE;
}

void gw_followup_begin(struct exchange *x)
{
    if (gw_followup_route(x))
        x->key_state = KEY_HOLD;
}

static enum gw_video_op op_of(const struct exchange *x)
{
    return x->route.id == GW_ROUTE_EDIT ? GW_VIDEO_OP_EDIT : GW_VIDEO_OP_EXTEND;
}

static int video_twice(struct gw_error *err)
{
    return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "video",
                        "Give the video once: an uploaded file or video[id], not both and "
                        "not twice");
}

static int missing(struct gw_error *err, const char *param)
{
    return gw_error_set(err, 400, "invalid_request_error", "missing_required_parameter", param,
                        "Missing required parameter: '%s'", param);
}

/* The extension's seconds against what the catalog says of the source's model. */
static int check_seconds(struct exchange *x, struct gw_error *err)
{
    if (x->route.id != GW_ROUTE_EXTEND || !x->have_seconds)
        return GW_OK;
    return gw_catalog_check_extend_seconds(&x->cfg->catalog, x->op_model, x->op_any,
                                           (struct gw_str){ x->seconds, x->seconds_len }, err);
}

/* The model is known (or known to be unknowable): may this video be edited or
 * extended, by these seconds? */
static int check_op(struct exchange *x, struct gw_error *err)
{
    if (x->route.id == GW_ROUTE_CHARACTER_CREATE)
        return GW_OK;
    if (gw_catalog_check_op(&x->cfg->catalog, x->op_model, x->op_any, op_of(x), err) != GW_OK)
        return GW_ERR;
    return check_seconds(x, err);
}

/* An extension is metered like a create: its seconds are checked and reserved
 * before the upstream can have the whole body. */
static int extend_reserve(struct exchange *x, struct gw_error *err)
{
    if (check_seconds(x, err) != GW_OK)
        return GW_ERR;
    return gw_reqbody_reserve(x, err);
}

int gw_followup_part(struct exchange *x, const struct gw_mp_part *part, int file,
                     struct gw_error *err)
{
    if (!gw_str_eq(part->name, "video")) {
        if (!file)
            return GW_OK;
        /* another file would be held with the head, or pass unchecked */
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", NULL,
                            "This request takes one file, video; it has another file part");
    }
    if (!file)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_type", "video",
                            "The video field must be a file; to name one of your videos, "
                            "send video[id]");
    if (x->video_given)
        return video_twice(err);
    x->video_given = x->video_file = 1;
    x->op_any = 1; /* an upload: no model the gateway knows */
    if (check_op(x, err) != GW_OK)
        return GW_ERR;
    if (x->key_state == KEY_HOLD)
        x->key_state = KEY_OPEN; /* any key: the pump sends the head next */
    return GW_OK;
}

static int video_ref(struct exchange *x, const struct gw_mp_field *f, struct gw_error *err)
{
    if (x->video_given)
        return video_twice(err);
    x->video_given = 1;
    if (f->total_len > GW_ID_MAX || !gw_router_valid_id(f->value))
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "video",
                            "Invalid video[id]: expected a video id, 1 to 128 characters of "
                            "[A-Za-z0-9_-]");
    if (x->head_blind)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "video",
                            "video[id] must come within the first %d KiB of the body",
                            FOLLOWUP_WINDOW / 1024);
    memcpy(x->video_ref, f->value.p, f->value.len);
    x->video_ref[f->value.len] = '\0';
    switch (gw_jobs_ref_lookup(x, err)) {
    case GW_AGAIN:
        x->key_state = KEY_LOOKUP; /* gw_followup_ref_checked() comes later */
        return GW_OK;
    case GW_OK:
        /* no store: no owner to check and no key to pin (docs/decisions.md, Jobs) */
        x->op_any = 1;
        if (check_op(x, err) != GW_OK)
            return GW_ERR;
        x->key_state = KEY_OPEN;
        return GW_OK;
    default:
        return GW_ERR;
    }
}

int gw_followup_field(struct exchange *x, const struct gw_mp_field *f, struct gw_error *err)
{
    if (x->route.id == GW_ROUTE_CHARACTER_CREATE) {
        if (!gw_str_eq(f->name, "name"))
            return GW_OK;
        if (x->have_name++)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "name",
                                "The name field appears more than once");
        if (f->total_len == 0 || f->total_len > CHARACTER_NAME_MAX)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "name",
                                "The character name must be 1 to %d bytes, not %zu",
                                CHARACTER_NAME_MAX, f->total_len);
        return GW_OK;
    }
    if (gw_str_eq(f->name, "video[id]"))
        return video_ref(x, f, err);
    if (gw_str_eq(f->name, "seconds") && (x->op_any || x->op_model != NULL))
        return check_seconds(x, err); /* else checked once the model is known */
    return GW_OK;
}

int gw_followup_end(struct exchange *x, struct gw_error *err)
{
    if (x->route.id == GW_ROUTE_CHARACTER_CREATE) {
        if (!x->have_name)
            return missing(err, "name");
        if (!x->video_file)
            return missing(err, "video");
        return GW_OK;
    }
    if (!x->have_prompt)
        return missing(err, "prompt");
    if (!x->video_given)
        return missing(err, "video");
    if (x->route.id == GW_ROUTE_EDIT)
        return GW_OK;
    if (!x->have_seconds)
        return missing(err, "seconds");
    if (x->key_state == KEY_LOOKUP) {
        x->end_deferred = 1; /* the head waits for the lookup, and so does this */
        return GW_OK;
    }
    return extend_reserve(x, err);
}

int gw_followup_hold(struct exchange *x)
{
    if (x->key_state == KEY_HOLD && evbuffer_get_length(x->out) > FOLLOWUP_WINDOW) {
        gw_log(GW_LOG_DEBUG, "rid=%s no video part within %d bytes: the head goes", x->rid,
               FOLLOWUP_WINDOW);
        x->key_state = KEY_OPEN;
        x->head_blind = 1;
    }
    return x->key_state != KEY_OPEN;
}

void gw_followup_ref_checked(struct exchange *x, const struct gw_model *m,
                             const struct gw_error *refusal)
{
    struct gw_error err;

    if (x->state == X_DONE)
        return;
    if (refusal != NULL) {
        gw_proxy_fail(x, refusal);
        return;
    }
    x->op_model = m;
    x->op_any = 0;
    if (check_op(x, &err) != GW_OK) {
        gw_proxy_fail(x, &err);
        return;
    }
    x->key_state = KEY_OPEN;
    if (x->end_deferred) {
        x->end_deferred = 0;
        if (extend_reserve(x, &err) != GW_OK) {
            gw_proxy_fail(x, &err);
            return;
        }
    }
    gw_proxy_head_ready(x);
}
