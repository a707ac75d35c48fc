/*
 * multipart.c - incremental multipart/form-data scanner and `model` rewriter.
 *
 * How it finds delimiters without look-ahead: the delimiter is "\r\n--" boundary
 * and a boundary never contains CR or LF, so a delimiter can only start at a CR
 * and CR occurs in it only at offset 0. A failed partial match therefore never
 * hides the start of another one: the matched bytes (a known prefix of the
 * delimiter) are plain data, and only the byte that broke the match needs a
 * second look. That keeps the state to one counter (`match`) and lets the body of
 * a part be skipped quickly to the next CR (find_stop(), which also stops at a LF
 * followed by '-', see below). A stop matters only when "--boundary" follows its
 * line break, so with a long boundary next_stop() first looks for "--boundary"
 * itself (memmem skips ahead by about its length) and runs find_stop() only
 * just before an occurrence, and over a slice's last bytes.
 *
 * Classification lags scanning only by the bytes of a possible delimiter: while a
 * match is in progress, and after a complete delimiter until the next byte or two
 * tell whether it closes the body (on_end must run before the close delimiter is
 * classified). Those bytes are always delim[match - pending .. match) or the whole
 * delimiter plus one '-', so they never need to be stored: at most
 * GW_MP_BOUNDARY_MAX + 5 bytes pending.
 *
 * Strict on purpose. The upstream parses the same body with its own parser, and
 * wherever two parsers can read a body differently, a part the gateway checked can
 * be a different part upstream (request smuggling at the multipart level). So every
 * construct that a common parser (busboy, python-multipart, Werkzeug, Python's
 * email, Go's mime/multipart) reads otherwise is refused, not interpreted:
 *   - "--boundary" right after a bare CR or LF, or at the very start of a part's
 *     data: Werkzeug and Python's email accept any line break before a delimiter,
 *     and Go and Werkzeug end a part that starts with "--boundary" (the blank line
 *     after the headers doubling as the delimiter's CRLF). A second counter, `alt`,
 *     follows "--boundary" after such a line break; the bytes stay data (PASS) and a
 *     full match is an error, so it never holds bytes back.
 *   - transport padding after a delimiter (python-multipart takes "--b \r\n" for
 *     data, busboy for a delimiter followed by data), and a preamble other than
 *     blank lines (Werkzeug finds "--boundary" anywhere in it, python-multipart at
 *     its first '-').
 *   - in Content-Disposition: RFC 2231/5987 parameters (name*, filename*, name*0:
 *     Go and Werkzeug decode them and let them override name/filename, busboy
 *     prefers filename*, python-multipart ignores them), a backslash in a quoted
 *     string (unescaped differently by each parser), a parameter given twice (first
 *     wins in busboy, last in python-multipart, an error in Go), space around '=',
 *     an empty parameter or a trailing ';' (busboy then skips the part), control
 *     characters, non-ASCII bytes outside quotes, a type other than form-data.
 *   - a repeated Content-Type or Content-Transfer-Encoding, and a
 *     Content-Transfer-Encoding other than 7bit, 8bit or binary (Go decodes
 *     quoted-printable, python-multipart base64 too).
 *   - in the request's Content-Type (gw_mp_boundary): an unquoted boundary that is
 *     not a token (Werkzeug reads "a/b" as "a"), a boundary of other than RFC 2046
 *     bchars, boundary* (Go and Werkzeug let it override boundary), a backslash in
 *     any quoted parameter (python's parameter splitting then miscounts quotes).
 */
#define _GNU_SOURCE /* memmem */
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "multipart.h"

enum mp_state {
    MP_PREAMBLE = 0, /* before the first delimiter: PASS */
    MP_DELIM_END,    /* a whole delimiter scanned, still pending: close or next part? */
    MP_CLOSE_DASH,   /* delimiter + "-" scanned, pending */
    MP_DELIM_LF,     /* CR after a delimiter, LF expected */
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

/* Two keys, case-insensitively (parameter names are case-insensitive everywhere). */
static int str_ieq_str(struct gw_str a, struct gw_str b)
{
    if (a.len != b.len)
        return 0;
    for (size_t i = 0; i < a.len; i++) {
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return 0;
    }
    return 1;
}

/*
 * The error param for a part: its name when that is a field of the Videos API
 * (returned as a static string, as struct gw_error wants), else NULL.
 */
static const char *part_param(struct gw_str name)
{
    static const char *const fields[] = { "model", "prompt", "seconds", "size",
                                          "input_reference", "video", "name" };

    for (size_t i = 0; i < GW_ARRAY_LEN(fields); i++) {
        if (gw_str_eq(name, fields[i]))
            return fields[i];
    }
    if (gw_str_eq(name, "video[id]"))
        return "video";
    return gw_str_eq(name, "input_reference[]") ? "input_reference" : NULL;
}

static const char msg_malformed_cd[] = "malformed Content-Disposition in a multipart part";

/* One parameter of a Content-Disposition value: views into mp->hdr. */
struct mp_param {
    struct gw_str key;
    struct gw_str value; /* a quoted string without its quotes */
};

/*
 * Lex a Content-Disposition value p..end (trimmed of OWS at both ends):
 *     type *( OWS ";" OWS key "=" ( token / quoted-string ) )
 * into *type and params[0..*n). Stricter than RFC 9110 wherever parsers differ: no
 * space around '=' and no empty parameter (";;", a trailing ';'), which busboy
 * refuses (and then skips the whole part); token values of tchar only (Go and busboy
 * stop at a non-ASCII byte); quoted strings of qdtext only: no control character and
 * no quoted-pair at all, since "mo\del" is "model" for the RFC and python's email
 * module, "mo\del" for busboy, Go and python-multipart, and python's parameter
 * splitting miscounts the quotes after a "\\". Returns NULL, or why it refuses.
 */
static const char *lex_disposition(const char *p, const char *end, struct gw_str *type,
                                   struct mp_param *params, size_t *n)
{
    const char *t = p;

    p = skip_token(p, end);
    *type = (struct gw_str){ t, (size_t)(p - t) };
    *n = 0;
    for (;;) {
        struct mp_param pm;

        p = skip_ows(p, end);
        if (p == end)
            return NULL;
        if (*p != ';')
            return msg_malformed_cd;
        p = skip_ows(p + 1, end);
        t = p;
        p = skip_token(p, end);
        if (p == t || p == end || *p != '=')
            return msg_malformed_cd;
        if (*n == GW_MP_PARAMS_MAX)
            return "too many Content-Disposition parameters in a multipart part";
        pm.key = (struct gw_str){ t, (size_t)(p - t) };
        p++;
        if (p < end && *p == '"') {
            for (t = ++p; p < end && *p != '"'; p++) {
                unsigned char c = (unsigned char)*p;

                if (c == '\\')
                    return "a backslash in a quoted Content-Disposition parameter: parsers "
                           "unescape it differently";
                if ((c < 0x20 && c != '\t') || c == 0x7f)
                    return "a control character in a Content-Disposition parameter";
            }
            if (p == end)
                return "unterminated quoted string in Content-Disposition";
            pm.value = (struct gw_str){ t, (size_t)(p - t) };
            p++;
        } else {
            t = p;
            p = skip_token(p, end);
            if (p == t)
                return msg_malformed_cd;
            pm.value = (struct gw_str){ t, (size_t)(p - t) };
        }
        params[(*n)++] = pm;
    }
}

/*
 * Parse a Content-Disposition value: form-data with a name and maybe a filename, each
 * at most once, and no other reading possible (see lex_disposition). Any other
 * parameter is allowed once, except RFC 2231/5987 ones (a '*' in the key: name*,
 * filename*, name*0...), which RFC 7578 4.2 forbids and parsers treat differently: Go
 * and Werkzeug decode them and let them override name/filename, busboy prefers
 * filename* to filename, python-multipart ignores them; a `model` part with only
 * filename* is a text field for the last, a file for the others.
 */
static int parse_disposition(struct gw_mp *mp, struct gw_str cd)
{
    struct mp_param params[GW_MP_PARAMS_MAX];
    struct gw_str type, name = { NULL, 0 };
    const char *why;
    size_t n, i, j;
    int has_filename = 0;

    why = lex_disposition(cd.p, cd.p + cd.len, &type, params, &n);
    /* the name, if it was lexed, names the part in the error */
    for (i = 0; i < n && name.p == NULL; i++) {
        if (str_ieq(params[i].key.p, params[i].key.len, "name"))
            name = params[i].value;
    }
    if (why == NULL && !str_ieq(type.p, type.len, "form-data"))
        why = "a multipart part's Content-Disposition is not form-data";
    for (i = 0; why == NULL && i < n; i++) {
        struct gw_str key = params[i].key;

        if (memchr(key.p, '*', key.len) != NULL) {
            why = "RFC 2231 parameters such as filename* are not allowed in multipart/form-data";
            break;
        }
        for (j = 0; j < i; j++) {
            if (str_ieq_str(params[j].key, key)) {
                why = str_ieq(key.p, key.len, "name")
                          ? "a multipart part has two name parameters"
                          : "a multipart part has a Content-Disposition parameter twice";
                break;
            }
        }
        if (str_ieq(key.p, key.len, "filename"))
            has_filename = 1;
    }
    if (why != NULL)
        return fail(mp, "invalid_multipart", part_param(name), why);
    if (name.len > GW_MP_NAME_MAX) {
        mp->failed = 1;
        return gw_error_set(&mp->err, 400, "invalid_request_error", "invalid_multipart", NULL,
                            "a multipart part name is longer than %d bytes", GW_MP_NAME_MAX);
    }
    if (name.p != NULL) {
        memcpy(mp->name, name.p, name.len);
        mp->name_len = name.len;
        mp->has_name = 1;
    }
    mp->name[mp->name_len] = '\0';
    mp->has_filename = has_filename;
    return GW_OK;
}

/* The Content-Transfer-Encodings that leave the bytes as they are. */
static int identity_encoding(struct gw_str cte)
{
    return str_ieq(cte.p, cte.len, "7bit") || str_ieq(cte.p, cte.len, "8bit") ||
           str_ieq(cte.p, cte.len, "binary");
}

/*
 * Parse the header block in hdr (every line ends in CRLF, the last one is empty:
 * the scanner checked) and announce the part.
 */
static int begin_part(struct gw_mp *mp)
{
    const char *p = mp->hdr, *end = mp->hdr + mp->hdr_len - 2;
    struct gw_str cd = { NULL, 0 }, ctype = { NULL, 0 }, cte = { NULL, 0 };
    const char *twice = NULL, *param;

    while (p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        const char *colon = skip_token(p, eol);
        struct gw_str *slot = NULL;

        /* a field name is a token followed at once by ':'; this also refuses folded
         * lines, which start with whitespace */
        if (colon == p || colon == eol || *colon != ':')
            return fail(mp, "invalid_multipart", NULL, "malformed multipart part header line");
        const char *v = skip_ows(colon + 1, eol), *ve = eol;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        /* the headers that decide how the part is read: once each, since parsers
         * differ on which copy counts (busboy and Go the first, python-multipart the
         * last); any other header is only passed on */
        if (str_ieq(p, (size_t)(colon - p), "content-disposition"))
            slot = &cd;
        else if (str_ieq(p, (size_t)(colon - p), "content-type"))
            slot = &ctype;
        else if (str_ieq(p, (size_t)(colon - p), "content-transfer-encoding"))
            slot = &cte;
        if (slot != NULL && slot->p != NULL && twice == NULL)
            twice = slot == &cd      ? "a multipart part has two Content-Disposition headers"
                    : slot == &ctype ? "a multipart part has two Content-Type headers"
                                     : "a multipart part has two Content-Transfer-Encoding "
                                       "headers";
        else if (slot != NULL && slot->p == NULL)
            *slot = (struct gw_str){ v, (size_t)(ve - v) };
        p = eol + 2;
    }
    if (cd.p == NULL)
        return fail(mp, "invalid_multipart", NULL,
                    "a multipart part has no name: it has no Content-Disposition");
    if (parse_disposition(mp, cd) != GW_OK)
        return GW_ERR;
    param = part_param((struct gw_str){ mp->name, mp->name_len });
    if (twice != NULL)
        return fail(mp, "invalid_multipart", param, twice);
    /* RFC 7578 4.7 deprecates it; Go decodes quoted-printable, python-multipart base64
     * too, busboy and Werkzeug pass the bytes on as they are */
    if (cte.p != NULL && !identity_encoding(cte))
        return fail(mp, "invalid_multipart", param,
                    "a multipart part has a Content-Transfer-Encoding other than 7bit, 8bit "
                    "or binary");
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
    /* the blank line that ends the headers counts as a line break: Go and Werkzeug
     * end a part whose data starts with "--boundary" */
    mp->alt = 1;
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
 * The first CR followed by LF or '-' or ending the slice, or LF followed by '-' or
 * ending the slice, in [p, end); or end: where a delimiter, or "--boundary" after a
 * bare line break, may start. A CR followed by anything else cannot start either
 * (scan_data would take it and the next byte as data at once), so it does not stop
 * the run: in binary data (a PNG, a video) a CR comes every 256 bytes, a CRLF or
 * "\r-" every 32 KiB. Part data is most of a body, so this reads it once, 16 bytes
 * a step where SSE2 is there.
 */
static int stops(const char *p, const char *end)
{
    return (*p == '\r' || *p == '\n') &&
           (p + 1 == end || p[1] == '-' || (*p == '\r' && p[1] == '\n'));
}

static const char *find_stop(const char *p, const char *end)
{
#if defined(__SSE2__)
    const __m128i cr = _mm_set1_epi8('\r'), lf = _mm_set1_epi8('\n'), dash = _mm_set1_epi8('-');

    for (; end - p > 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i next = _mm_loadu_si128((const __m128i *)(const void *)(p + 1));
        __m128i brk = _mm_or_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(v, lf));
        __m128i m = _mm_and_si128(brk, _mm_cmpeq_epi8(next, dash));
        int bits;

        m = _mm_or_si128(m, _mm_and_si128(_mm_cmpeq_epi8(v, cr), _mm_cmpeq_epi8(next, lf)));
        bits = _mm_movemask_epi8(m);
        if (bits != 0)
            return p + __builtin_ctz((unsigned)bits);
    }
#endif
    for (; p < end; p++) {
        if (stops(p, end))
            return p;
    }
    return end;
}

/* "--boundary" at least this long: memmem, which skips about that many bytes a
 * step, beats find_stop's 16 a step (3.5x on random data, a 46-byte one; curl's is
 * 42, the SDKs' 30 to 50); RFC 2046 allows boundaries of one byte. */
#define SKIP_MIN 16

/*
 * find_stop()'s answer for the stops that can matter: a stop is where a delimiter
 * or a "--boundary" after a bare line break may start, i.e. it is data unless
 * "--boundary" (dash, dash_len bytes) follows its line break. So no stop before
 * the first occurrence of dash that lies whole in [p, end) matters, except one or
 * two bytes before it; without one, only the last bytes, where an occurrence may
 * be cut by the slice's end, are looked at. A stop find_stop() would have made
 * earlier ends its run as data all the same: the runs are longer, the bytes and
 * their classification the same.
 */
static const char *next_stop(const char *p, const char *end, const char *dash, size_t dash_len)
{
    if (dash_len < SKIP_MIN)
        return find_stop(p, end);
    for (;;) {
        size_t len = (size_t)(end - p);
        const char *q = memmem(p, len, dash, dash_len);
        const char *from, *x;

        if (q == NULL) {
            from = len > dash_len + 2 ? end - (dash_len + 2) : p;
            return find_stop(from, end);
        }
        from = q - p >= 2 ? q - 2 : p;
        /* up to q: a line break right before it stops as at a slice's end */
        if ((x = find_stop(from, q)) < q)
            return x;
        p = q + 1; /* no line break before this one: data, look further */
    }
}

static const char msg_preamble[] =
    "a multipart body must start with its boundary (only blank lines may precede it)";

/*
 * Preamble and part bodies. Returns GW_OK when it stopped at a state change or the
 * end of buf, GW_AGAIN when ops are full, GW_ERR.
 *
 * Part data is PASSed (DROPped for the model) in runs that end at a CR (a possible
 * delimiter, followed by `match`). "--boundary" after a bare LF is looked for in the
 * run; after a bare CR, at the start of the data, or when a slice ends right after a
 * bare LF, `alt` follows it byte by byte. The preamble may only hold CRLFs.
 */
static int scan_data(struct gw_mp *mp, struct mp_out *o, const char *buf, size_t len, size_t *pos)
{
    enum gw_mp_op_kind kind = mp->is_model ? GW_MP_DROP : GW_MP_PASS;
    int preamble = mp->state == MP_PREAMBLE;
    size_t i = *pos;
    int rc = GW_OK;

    while (i < len) {
        if (mp->match == 0) {
            if (preamble && mp->scanned == 0 && buf[i] == '-') {
                /* the first delimiter may lack its CRLF: act as if it was there */
                mp->match = 3;
                mp->scanned++;
                i++;
                continue;
            }
            if (buf[i] == '\r') {
                /* a CR ends a "--boundary" after a bare line break, and may start a
                 * delimiter */
                mp->match = 1;
                mp->alt = 0;
                mp->scanned++;
                i++;
                continue;
            }
            if (preamble) {
                rc = fail(mp, "invalid_multipart", NULL, msg_preamble);
                break;
            }
            size_t n, alt = mp->alt;
            int hit = 0;
            if (alt == 0) {
                /* a run up to the next CR; a LF in it is bare (not after a CR): look
                 * at what follows one in place, and follow it byte by byte only when
                 * the slice ends before that can be told */
                const char *s = buf + i, *x = s, *end = buf + len;
                const char *dash = mp->delim + 2; /* "--boundary", no CR in it */
                size_t dash_len = mp->delim_len - 2;

                while ((x = next_stop(x, end, dash, dash_len)) < end && *x == '\n') {
                    size_t room = (size_t)(end - ++x);

                    if (room >= dash_len) {
                        if ((hit = memcmp(x, dash, dash_len) == 0)) {
                            x += dash_len - 1; /* up to the byte that completes it */
                            break;
                        }
                    } else if (memcmp(x, dash, room) == 0) {
                        alt = 1;
                        break;
                    }
                }
                n = (size_t)(x - s);
            } else {
                /* alt - 1 bytes of "--boundary" (delim + 2) seen since the line break */
                for (n = 0; i + n < len && alt > 0 && buf[i + n] != '\r'; n++) {
                    char c = buf[i + n];

                    if (c == '\n')
                        alt = 1;
                    else if (c == mp->delim[alt + 1])
                        alt++;
                    else
                        alt = 0;
                    if ((hit = alt + 1 == mp->delim_len))
                        break;
                }
            }
            if (hit) {
                /* the bytes before the one that completes "--boundary" are data as
                 * far as the scan could tell (followed byte by byte when a slice ends
                 * inside it): count them first, so that the error is the same however
                 * the body was sliced (a model value over its limit before them wins) */
                if (capture(mp, buf + i, n) != GW_OK) {
                    rc = GW_ERR;
                    break;
                }
                rc = fail(mp, "invalid_multipart",
                          part_param((struct gw_str){ mp->name, mp->name_len }),
                          "a multipart boundary after a bare CR or LF, or at the start of a "
                          "part, is a delimiter for some parsers and data for others");
                break;
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
            mp->alt = alt;
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
        if (preamble && (mp->match != 2 || buf[i] != '\r')) {
            /* before the first delimiter, only a CRLF followed by a CR is fine */
            rc = fail(mp, "invalid_multipart", NULL, msg_preamble);
            break;
        }
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
        /* a CR that no LF follows is a bare line break: follow a "--boundary" after it
         * (buf[i] is looked at again, as the first byte of it) */
        mp->alt = mp->match == 1 && buf[i] == '-';
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
    mp->alt = 0;
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

/*
 * One byte after a delimiter: "--" closes, CRLF opens the next part. No transport
 * padding: python-multipart takes "--boundary \r\n" for data, busboy for a delimiter
 * followed by data, Go and Werkzeug for a delimiter line.
 */
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
        if (c != '\r')
            goto bad;
        next = MP_DELIM_LF;
        break;
    default: /* MP_DELIM_LF */
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
                "malformed multipart boundary line: expected \"--\" or CRLF right after the "
                "boundary");
}

/* RFC 2046 bchars. A boundary of anything else may be read otherwise upstream:
 * Werkzeug, for one, turns "%22" into a quote. */
static int is_bchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c != '\0' && strchr("'()+_,-./:=? ", c) != NULL;
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
        /* RFC 2231 parameters (boundary*=, boundary*0=): Go and Werkzeug decode them
         * and let them override boundary=, python-multipart ignores them */
        if (memchr(t, '*', (size_t)(p - t)) != NULL)
            goto bad;
        int is_boundary = str_ieq(t, (size_t)(p - t), "boundary");
        p = skip_ows(p, end);
        if (p == end || *p != '=')
            goto bad;
        p = skip_ows(p + 1, end);
        if (is_boundary && b.p != NULL)
            return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                                "Content-Type has two boundary parameters");
        if (p < end && *p == '"') {
            /* no quoted-pair in any parameter: python's parameter splitting miscounts
             * the quotes after a "\\", and may then find another boundary */
            t = ++p;
            while (p < end && *p != '"' && *p != '\\')
                p++;
            if (p == end || *p == '\\')
                goto bad;
            if (is_boundary)
                b = (struct gw_str){ t, (size_t)(p - t) };
            p++;
        } else {
            /* a token, as every parser reads one: Werkzeug stops an unquoted value at
             * the first byte that is not a tchar ("a/b" is "a" there), so bchars such
             * as '/' or '=' need quotes */
            t = p;
            p = skip_token(p, end);
            if (p == t)
                goto bad;
            if (is_boundary)
                b = (struct gw_str){ t, (size_t)(p - t) };
        }
    }
    if (b.p == NULL)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                            "multipart/form-data Content-Type has no boundary parameter");
    /* RFC 2046: 1 to 70 bchars, the last not a space */
    if (b.len == 0 || b.len > GW_MP_BOUNDARY_MAX || b.p[b.len - 1] == ' ')
        goto bad_boundary;
    for (size_t i = 0; i < b.len; i++) {
        if (!is_bchar((unsigned char)b.p[i]))
            goto bad_boundary;
    }
    *boundary = b;
    return GW_OK;

bad_boundary:
    return gw_error_set(err, 400, "invalid_request_error", "invalid_multipart", NULL,
                        "the multipart boundary must be 1 to %d characters among letters, "
                        "digits and '()+_,-./:=? (not ending in a space)", GW_MP_BOUNDARY_MAX);
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
