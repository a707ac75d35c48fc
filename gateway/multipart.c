/*
 * multipart.c - incremental multipart/form-data scanner and `model` rewriter.
 *
 * How it finds delimiters without look-ahead: the delimiter is "\r\n--" boundary
 * and a boundary never contains CR or LF, so a delimiter can only start at a CR
 * and CR occurs in it only at offset 0. A failed partial match therefore never
 * hides the start of another one: the matched bytes (a known prefix of the
 * delimiter) are plain data, and only the byte that broke the match needs a
 * second look. That keeps the state to one counter (`match`) and lets the body of
 * a part be skipped with memchr() for the next CR.
 *
 * Classification lags scanning only by the bytes of a possible delimiter: while a
 * match is in progress, and after a complete delimiter until the next byte or two
 * tell whether it closes the body (on_end must run before the close delimiter is
 * classified). Those bytes are always delim[match - pending .. match) or the whole
 * delimiter plus one '-', so they never need to be stored: at most
 * GW_MP_BOUNDARY_MAX + 5 bytes pending.
 */
#include <string.h>

#include "multipart.h"

enum mp_state {
    MP_PREAMBLE = 0, /* before the first delimiter: PASS */
    MP_DELIM_END,    /* a whole delimiter scanned, still pending: close or next part? */
    MP_CLOSE_DASH,   /* delimiter + "-" scanned, pending */
    MP_PADDING,      /* transport padding after a delimiter, until CR */
    MP_PADDING_LF,   /* CR after a delimiter, LF expected */
    MP_HEADERS,      /* a part's header block: PASS, copied into hdr for parsing */
    MP_DATA,         /* a part's body: PASS, or DROP for the model value */
    MP_EPILOGUE,     /* after the close delimiter: PASS */
};

/* Where this call appends its ops. Only ops[first..] may be extended. */
struct mp_out {
    struct gw_mp_op *ops;
    size_t *nops;
    size_t cap;
    size_t first;
};

static int fail(struct gw_mp *mp, const char *code, const char *param, const char *msg)
{
    mp->failed = 1;
    return gw_error_set(&mp->err, 400, "invalid_request_error", code, param, "%s", msg);
}

/* A hook answered rc: GW_OK goes on; anything else stops the scan for good. */
static int hook_result(struct gw_mp *mp, int rc)
{
    if (rc == GW_OK)
        return GW_OK;
    mp->failed = 1;
    if (mp->err.status == 0)
        gw_error_set(&mp->err, 400, "invalid_request_error", "invalid_multipart", NULL,
                     "multipart body refused");
    return GW_ERR;
}

static uint64_t pending(const struct gw_mp *mp)
{
    return mp->scanned - mp->classified;
}

/* Can an op of this kind be recorded now, by merging or in a free slot? */
static int out_room(const struct mp_out *o, enum gw_mp_op_kind kind)
{
    size_t n = *o->nops;

    if (kind != GW_MP_LITERAL && n > o->first && o->ops[n - 1].kind == kind)
        return 1;
    return n < o->cap;
}

/* Record an op; out_room() was checked by the caller before any side effect. */
static void out_op(struct gw_mp *mp, struct mp_out *o, enum gw_mp_op_kind kind, size_t len,
                   const char *p)
{
    size_t n = *o->nops;

    if (len == 0)
        return;
    if (kind != GW_MP_LITERAL && n > o->first && o->ops[n - 1].kind == kind) {
        o->ops[n - 1].len += len;
    } else {
        o->ops[n] = (struct gw_mp_op){ .kind = kind, .len = len, .p = p };
        *o->nops = n + 1;
    }
    if (kind == GW_MP_LITERAL) {
        mp->delta += (int64_t)len;
    } else {
        mp->classified += len;
        if (kind == GW_MP_DROP)
            mp->delta -= (int64_t)len;
    }
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int str_ieq(const char *p, size_t len, const char *lit)
{
    size_t i;

    for (i = 0; i < len && lit[i] != '\0'; i++) {
        if (lower((unsigned char)p[i]) != lit[i])
            return 0;
    }
    return i == len && lit[i] == '\0';
}

/* RFC 9110 tchar */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static const char *skip_ows(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *skip_token(const char *p, const char *end)
{
    while (p < end && is_tchar((unsigned char)*p))
        p++;
    return p;
}

/*
 * Keep the first GW_MP_VALUE_MAX bytes of a text field's value. The model value is
 * kept apart (mp->model) because it may be emitted as a LITERAL after later parts
 * have reused mp->value; past the limit it is an error, not a truncation.
 */
static int capture(struct gw_mp *mp, const char *p, size_t n)
{
    char *dst = mp->is_model ? mp->model : mp->value;
    size_t room = GW_MP_VALUE_MAX - mp->value_len;

    if (!mp->in_part || mp->has_filename)
        return GW_OK;
    memcpy(dst + mp->value_len, p, n < room ? n : room);
    mp->value_len += n < room ? n : room;
    mp->value_total += n;
    if (mp->is_model && mp->value_total > GW_MP_VALUE_MAX) {
        mp->failed = 1;
        return gw_error_set(&mp->err, 400, "invalid_request_error", "invalid_value", "model",
                            "the model value is longer than %d bytes", GW_MP_VALUE_MAX);
    }
    return GW_OK;
}

/*
 * Parse a Content-Disposition value: form-data *( ";" param "=" (token | quoted) ).
 * Keeps the unescaped name and whether a filename was given; other parameters,
 * including name* and filename*, are skipped.
 */
static int parse_disposition(struct gw_mp *mp, const char *p, const char *end)
{
    const char *t = p;

    p = skip_token(p, end);
    if (!str_ieq(t, (size_t)(p - t), "form-data"))
        return fail(mp, "invalid_multipart", NULL,
                    "a multipart part's Content-Disposition is not form-data");
    for (;;) {
        p = skip_ows(p, end);
        if (p == end)
            return GW_OK;
        if (*p != ';')
            break;
        p = skip_ows(p + 1, end);
        if (p == end)
            return GW_OK; /* a trailing ';' is harmless */
        t = p;
        p = skip_token(p, end);
        if (p == t)
            break;
        int is_name = str_ieq(t, (size_t)(p - t), "name");
        int is_filename = str_ieq(t, (size_t)(p - t), "filename");
        p = skip_ows(p, end);
        if (p == end || *p != '=')
            break;
        p = skip_ows(p + 1, end);
        if (is_name && mp->has_name)
            return fail(mp, "invalid_multipart", NULL,
                        "a multipart part has two name parameters");
        if (p < end && *p == '"') {
            for (p++;; p++) {
                if (p == end)
                    return fail(mp, "invalid_multipart", NULL,
                                "unterminated quoted string in Content-Disposition");
                if (*p == '"')
                    break;
                if (*p == '\\' && ++p == end)
                    return fail(mp, "invalid_multipart", NULL,
                                "unterminated quoted string in Content-Disposition");
                if (!is_name)
                    continue;
                if (mp->name_len == GW_MP_NAME_MAX)
                    goto long_name;
                mp->name[mp->name_len++] = *p;
            }
            p++;
        } else {
            /* token; bytes >= 0x80 tolerated, as some clients send raw UTF-8 */
            t = p;
            while (p < end && (is_tchar((unsigned char)*p) || (unsigned char)*p >= 0x80))
                p++;
            if (p == t)
                break;
            if (is_name) {
                if ((size_t)(p - t) > GW_MP_NAME_MAX)
                    goto long_name;
                memcpy(mp->name, t, (size_t)(p - t));
                mp->name_len = (size_t)(p - t);
            }
        }
        if (is_name) {
            mp->has_name = 1;
            mp->name[mp->name_len] = '\0';
        }
        if (is_filename)
            mp->has_filename = 1;
    }
    return fail(mp, "invalid_multipart", NULL, "malformed Content-Disposition in a multipart part");

long_name:
    mp->failed = 1;
    return gw_error_set(&mp->err, 400, "invalid_request_error", "invalid_multipart", NULL,
                        "a multipart part name is longer than %d bytes", GW_MP_NAME_MAX);
}

/*
 * Parse the header block in hdr (every line ends in CRLF, the last one is empty:
 * the scanner checked) and announce the part.
 */
static int begin_part(struct gw_mp *mp)
{
    const char *p = mp->hdr, *end = mp->hdr + mp->hdr_len - 2;
    struct gw_str ctype = { NULL, 0 };
    int seen_cd = 0;

    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = skip_token(p, eol);

        /* a field name is a token followed at once by ':'; this also refuses folded
         * lines, which start with whitespace */
        if (colon == p || colon == eol || *colon != ':')
            return fail(mp, "invalid_multipart", NULL, "malformed multipart part header line");
        const char *v = skip_ows(colon + 1, eol), *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (str_ieq(p, (size_t)(colon - p), "content-disposition")) {
            if (seen_cd)
                return fail(mp, "invalid_multipart", NULL,
                            "a multipart part has two Content-Disposition headers");
            seen_cd = 1;
            if (parse_disposition(mp, v, ve) != GW_OK)
                return GW_ERR;
        } else if (str_ieq(p, (size_t)(colon - p), "content-type") && ctype.p == NULL) {
            ctype = (struct gw_str){ v, (size_t)(ve - v) };
        }
        p = eol + 2;
    }
    if (!mp->has_name || mp->name_len == 0)
        return fail(mp, "invalid_multipart", NULL, "a multipart part has no name");

    mp->is_model = !mp->has_filename && mp->name_len == 5 && memcmp(mp->name, "model", 5) == 0;
    if (mp->is_model) {
        if (mp->model_part_seen)
            return fail(mp, "invalid_multipart", "model", "the model field is given twice");
        mp->model_part_seen = 1;
    }
    mp->in_part = 1;
    if (mp->hooks != NULL && mp->hooks->on_part != NULL) {
        struct gw_mp_part part = {
            .name = { mp->name, mp->name_len },
            .has_filename = mp->has_filename,
            .content_type = ctype,
            .index = mp->nparts,
        };
        if (hook_result(mp, mp->hooks->on_part(mp->arg, &part, &mp->err)) != GW_OK)
            return GW_ERR;
    }
    mp->nparts++;
    mp->state = MP_DATA;
    mp->match = 0;
    return GW_OK;
}

/*
 * The delimiter that ends the current part was just scanned (it stays pending):
 * report the field and, for the model, insert its replacement. The caller made
 * room for the LITERAL.
 */
static int end_part(struct gw_mp *mp, struct mp_out *o)
{
    const struct gw_mp_hooks *h = mp->hooks;

    if (!mp->in_part)
        return GW_OK; /* the delimiter that ends the preamble */
    mp->in_part = 0;
    if (mp->has_filename)
        return GW_OK;
    if (h != NULL && h->on_field != NULL) {
        struct gw_mp_field field = {
            .name = { mp->name, mp->name_len },
            .value = { mp->is_model ? mp->model : mp->value, mp->value_len },
            .total_len = mp->value_total,
        };
        if (hook_result(mp, h->on_field(mp->arg, &field, &mp->err)) != GW_OK)
            return GW_ERR;
    }
    if (!mp->is_model)
        return GW_OK;

    struct gw_str value = { mp->model, mp->value_len };
    struct gw_str repl = value;
    if (h != NULL && h->on_model != NULL &&
        hook_result(mp, h->on_model(mp->arg, value, &repl, &mp->err)) != GW_OK)
        return GW_ERR;
    out_op(mp, o, GW_MP_LITERAL, repl.len, repl.p);
    mp->seen_model = 1;
    mp->is_model = 0;
    return GW_OK;
}

/*
 * Preamble and part bodies. Returns GW_OK when it stopped at a state change or the
 * end of buf, GW_AGAIN when ops are full, GW_ERR.
 */
static int scan_data(struct gw_mp *mp, struct mp_out *o, const char *buf, size_t len, size_t *pos)
{
    enum gw_mp_op_kind kind = mp->is_model ? GW_MP_DROP : GW_MP_PASS;
    size_t i = *pos;
    int rc = GW_OK;

    while (i < len) {
        if (mp->match == 0) {
            if (mp->state == MP_PREAMBLE && mp->scanned == 0 && buf[i] == '-') {
                /* the first delimiter may lack its CRLF: act as if it was there */
                mp->match = 3;
                mp->scanned++;
                i++;
                continue;
            }
            const char *cr = memchr(buf + i, '\r', len - i);
            size_t n = cr != NULL ? (size_t)(cr - (buf + i)) : len - i;
            if (n == 0) {
                mp->match = 1;
                mp->scanned++;
                i++;
                continue;
            }
            if (!out_room(o, kind)) {
                rc = GW_AGAIN;
                break;
            }
            if (capture(mp, buf + i, n) != GW_OK) {
                rc = GW_ERR;
                break;
            }
            mp->scanned += n;
            out_op(mp, o, kind, n, NULL);
            i += n;
            continue;
        }
        if (buf[i] == mp->delim[mp->match]) {
            if (mp->match + 1 < mp->delim_len) {
                mp->match++;
                mp->scanned++;
                i++;
                continue;
            }
            if (mp->is_model && !out_room(o, GW_MP_LITERAL)) {
                rc = GW_AGAIN;
                break;
            }
            mp->match = 0;
            mp->scanned++;
            i++;
            mp->state = MP_DELIM_END;
            rc = end_part(mp, o);
            break;
        }
        /* mismatch: the pending bytes were data; look at buf[i] again */
        size_t n = (size_t)pending(mp);
        if (!out_room(o, kind)) {
            rc = GW_AGAIN;
            break;
        }
        if (capture(mp, mp->delim + mp->match - n, n) != GW_OK) {
            rc = GW_ERR;
            break;
        }
        out_op(mp, o, kind, n, NULL);
        mp->match = 0;
    }
    *pos = i;
    return rc;
}

static void reset_part(struct gw_mp *mp)
{
    mp->hdr_len = 0;
    mp->line_start = 0;
    mp->name_len = 0;
    mp->name[0] = '\0';
    mp->has_name = 0;
    mp->has_filename = 0;
    mp->is_model = 0;
    mp->value_len = 0;
    mp->value_total = 0;
}

/* The part header block, up to and including its empty line. */
static int scan_headers(struct gw_mp *mp, struct mp_out *o, const char *buf, size_t len,
                        size_t *pos)
{
    size_t i = *pos, start = *pos;
    int end = 0;

    if (!out_room(o, GW_MP_PASS))
        return GW_AGAIN;
    while (i < len && !end) {
        char c = buf[i];
        char prev = mp->hdr_len > 0 ? mp->hdr[mp->hdr_len - 1] : '\0';

        if (mp->hdr_len == GW_MP_HEADERS_MAX)
            return fail(mp, "invalid_multipart", NULL, "part headers too large");
        if ((prev == '\r') != (c == '\n'))
            return fail(mp, "invalid_multipart", NULL,
                        "multipart part header lines must end with CRLF");
        mp->hdr[mp->hdr_len++] = c;
        i++;
        if (c == '\n') {
            end = mp->hdr_len - mp->line_start == 2;
            mp->line_start = mp->hdr_len;
        }
    }
    mp->scanned += i - start;
    out_op(mp, o, GW_MP_PASS, i - start, NULL);
    *pos = i;
    return end ? begin_part(mp) : GW_OK;
}

/* One byte after a delimiter: "--" closes, padding + CRLF opens the next part. */
static int scan_after_delim(struct gw_mp *mp, struct mp_out *o, char c)
{
    int next;

    switch (mp->state) {
    case MP_CLOSE_DASH:
        if (c != '-')
            goto bad;
        if (!out_room(o, GW_MP_PASS))
            return GW_AGAIN;
        mp->scanned++;
        /* before classifying: an error here keeps the close delimiter from upstream */
        if (mp->hooks != NULL && mp->hooks->on_end != NULL &&
            hook_result(mp, mp->hooks->on_end(mp->arg, &mp->err)) != GW_OK)
            return GW_ERR;
        out_op(mp, o, GW_MP_PASS, (size_t)pending(mp), NULL);
        mp->state = MP_EPILOGUE;
        return GW_OK;
    case MP_DELIM_END:
        if (c == '-') {
            mp->scanned++;
            mp->state = MP_CLOSE_DASH;
            return GW_OK;
        }
        /* anything else after a delimiter is transport padding */
        __attribute__((fallthrough));
    case MP_PADDING:
        if (c == ' ' || c == '\t')
            next = MP_PADDING;
        else if (c == '\r')
            next = MP_PADDING_LF;
        else
            goto bad;
        break;
    default: /* MP_PADDING_LF */
        if (c != '\n')
            goto bad;
        next = MP_HEADERS;
        reset_part(mp);
        break;
    }
    if (!out_room(o, GW_MP_PASS))
        return GW_AGAIN;
    mp->scanned++;
    out_op(mp, o, GW_MP_PASS, (size_t)pending(mp), NULL);
    mp->state = next;
    return GW_OK;

bad:
    return fail(mp, "invalid_multipart", NULL,
                "malformed multipart boundary line: expected \"--\" or CRLF after the boundary");
}

int gw_mp_boundary(struct gw_str content_type, struct gw_str *boundary, struct gw_error *err)
{
    const char *p = content_type.p, *end = content_type.p + content_type.len, *t;
    struct gw_str b = { NULL, 0 };

    if (p == NULL)
        goto bad;
    p = skip_ows(p, end);
    t = p;
    p = skip_token(p, end);
    if (p == end || *p != '/' || !str_ieq(t, (size_t)(p - t), "multipart"))
        goto not_form;
    t = ++p;
    p = skip_token(p, end);
    if (!str_ieq(t, (size_t)(p - t), "form-data"))
        goto not_form;
    for (;;) {
        p = skip_ows(p, end);
        if (p == end)
            break;
        if (*p != ';')
            goto bad;
        p = skip_ows(p + 1, end);
        if (p == end)
            break;
        t = p;
        p = skip_token(p, end);
        if (p == t)
            goto bad;
        int is_boundary = str_ieq(t, (size_t)(p - t), "boundary");
        p = skip_ows(p, end);
        if (p == end || *p != '=')
            goto bad;
        p = skip_ows(p + 1, end);
        if (is_boundary && b.p != NULL)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                                "Content-Type has two boundary parameters");
        int escaped = 0;
        if (p < end && *p == '"') {
            t = ++p;
            for (; p < end && *p != '"'; p++) {
                if (*p == '\\') {
                    escaped = 1;
                    if (++p == end)
                        break;
                }
            }
            if (p == end)
                goto bad;
            if (is_boundary)
                b = (struct gw_str){ t, (size_t)(p - t) };
            p++;
        } else {
            /* lenient: clients leave bchars such as '=' or '/' unquoted */
            t = p;
            while (p < end && *p != ';' && *p != ' ' && *p != '\t' && *p != '"')
                p++;
            if (p == t)
                goto bad;
            if (is_boundary)
                b = (struct gw_str){ t, (size_t)(p - t) };
        }
        /* a boundary never needs an escape (bchars has no '"' or '\\'): refuse one
         * rather than hand out a view that differs from the unescaped value */
        if (is_boundary && escaped)
            goto bad_boundary;
    }
    if (b.p == NULL)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                            "multipart/form-data Content-Type has no boundary parameter");
    if (b.len == 0 || b.len > GW_MP_BOUNDARY_MAX)
        goto bad_boundary;
    for (size_t i = 0; i < b.len; i++) {
        unsigned char c = (unsigned char)b.p[i];
        if (c < 0x20 || c > 0x7e)
            goto bad_boundary;
    }
    *boundary = b;
    return GW_OK;

bad_boundary:
    return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                        "the multipart boundary must be 1 to %d printable characters",
                        GW_MP_BOUNDARY_MAX);
not_form:
    return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                        "Content-Type is not multipart/form-data");
bad:
    return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                        "malformed multipart/form-data Content-Type");
}

int gw_mp_init(struct gw_mp *mp, struct gw_str boundary, const struct gw_mp_hooks *hooks,
               void *arg)
{
    memset(mp, 0, sizeof(*mp));
    mp->hooks = hooks;
    mp->arg = arg;
    mp->state = MP_PREAMBLE;
    if (boundary.p == NULL || boundary.len == 0 || boundary.len > GW_MP_BOUNDARY_MAX ||
        memchr(boundary.p, '\r', boundary.len) != NULL ||
        memchr(boundary.p, '\n', boundary.len) != NULL) {
        mp->failed = 1;
        return gw_error_set(&mp->err, 400, "invalid_request_error", "invalid_multipart", NULL,
                            "the multipart boundary must be 1 to %d characters without CR or LF",
                            GW_MP_BOUNDARY_MAX);
    }
    memcpy(mp->delim, "\r\n--", 4);
    memcpy(mp->delim + 4, boundary.p, boundary.len);
    mp->delim_len = boundary.len + 4;
    return GW_OK;
}

ssize_t gw_mp_execute(struct gw_mp *mp, const char *buf, size_t len, struct gw_mp_op *ops,
                      size_t *nops, size_t cap)
{
    struct mp_out o = { .ops = ops, .nops = nops, .cap = cap, .first = *nops };
    size_t i = 0;
    int rc = GW_OK;

    if (mp->failed)
        return GW_ERR;
    while (i < len && rc == GW_OK) {
        switch (mp->state) {
        case MP_PREAMBLE:
        case MP_DATA:
            rc = scan_data(mp, &o, buf, len, &i);
            break;
        case MP_HEADERS:
            rc = scan_headers(mp, &o, buf, len, &i);
            break;
        case MP_EPILOGUE:
            if (!out_room(&o, GW_MP_PASS)) {
                rc = GW_AGAIN;
                break;
            }
            mp->scanned += len - i;
            out_op(mp, &o, GW_MP_PASS, len - i, NULL);
            i = len;
            break;
        default: /* after a delimiter */
            rc = scan_after_delim(mp, &o, buf[i]);
            if (rc == GW_OK)
                i++;
            break;
        }
    }
    if (rc == GW_ERR)
        return GW_ERR;
    /* rc == GW_OK (all scanned) or GW_AGAIN (ops full) */
    return (ssize_t)i;
}

int gw_mp_finish(struct gw_mp *mp, struct gw_mp_op *ops, size_t *nops, size_t cap)
{
    if (mp->failed)
        return GW_ERR;
    /* every byte is classified as soon as the close delimiter is: nothing to emit */
    if (mp->state == MP_EPILOGUE)
        return GW_OK;
    return fail(mp, "invalid_multipart", NULL, "multipart body ended before its closing boundary");
}
