/*
 * multipart.h - incremental multipart/form-data scanner and `model` rewriter. Pure.
 *
 * The proxy never copies body bytes: it asks this module how to *classify* the
 * input stream, and then moves evbuffer chains accordingly. gw_mp_execute() scans
 * a slice and appends operations that classify input bytes in stream order,
 * starting at the first byte not yet classified:
 *
 *   GW_MP_PASS n      the next n unclassified input bytes go upstream unchanged
 *   GW_MP_DROP n      the next n unclassified input bytes are discarded
 *   GW_MP_LITERAL p,n insert these n bytes (rewriter-owned; valid until the next
 *                     gw_mp_execute()/gw_mp_finish() call) into the output here
 *
 * A byte may be scanned before it is classified: the bytes of a possible
 * delimiter at the end of a slice ("\r\n--boun") stay unclassified until the
 * next slice tells whether they are data or a delimiter. The caller therefore
 * keeps unclassified bytes at the front of its buffer, and passes the *next*
 * slice starting after the scanned ones. At any time
 *     scanned - classified <= GW_MP_MAX_PENDING.
 *
 * What is rewritten: only the value of the part named `model` (form field, no
 * filename). Its value is held (DROPped from input and kept in the struct, at
 * most GW_MP_VALUE_MAX bytes: longer is a 400) and, once its closing delimiter is
 * seen, hooks->on_model() gives the replacement, emitted as a LITERAL. Everything
 * else - preamble, part headers, file bytes, other fields, delimiters, epilogue,
 * part order - is PASSed byte for byte.
 *
 * What is observed (for validation and admission, never altered):
 *   - on_part: every part once its headers are parsed (name, whether it has a
 *     filename). Counting `input_reference` / `input_reference[]` happens here.
 *   - on_field: every part *without* filename, once complete, with its value
 *     (the first GW_MP_VALUE_MAX bytes; `total_len` is the real length).
 *     Called for `model` too (with the original value), before on_model.
 *   - on_end: when the close delimiter "--boundary--" has been recognised,
 *     *before* it is classified: returning GW_ERR here means the upstream never
 *     receives a complete body (the proxy aborts it), so no job is created.
 * Any hook returning GW_ERR (err filled) stops the scan: gw_mp_execute returns GW_ERR
 * and every later call returns GW_ERR too.
 *
 * Grammar accepted (RFC 2046 5.1.1, RFC 7578), strictly: boundary 1..70 chars, no
 * CR/LF; the first delimiter may lack its leading CRLF; only blank lines (CRLFs)
 * before it; epilogue ignored; CRLF right after a delimiter (no transport padding);
 * part headers are "Name: value" lines, at most GW_MP_HEADERS_MAX bytes per part
 * (else 400 "part headers too large"); Content-Disposition once, form-data with a
 * name, parameters `key=token` or `key="qdtext"` separated by ";" (OWS around ";"
 * only). Errors set err->status 400, type "invalid_request_error", code
 * "invalid_multipart" (or what a hook set), param the part's name when the error is
 * in a part and that name is a field of the Videos API ("model", "prompt",
 * "seconds", "size", "input_reference"; "video" and "name" of edits, extensions and
 * characters, video[id] as "video"), else NULL.
 *
 * Refused although some servers accept them, because a gateway that reads a body
 * differently from the upstream can be bypassed (multipart.c says which parser reads
 * what): a second `model` part (param "model"), a part with an empty or missing
 * name or without Content-Disposition, header lines not ended by CRLF, folded header
 * lines, a repeated Content-Disposition, Content-Type or Content-Transfer-Encoding, a
 * Content-Transfer-Encoding other than 7bit/8bit/binary, anything but "--" or CRLF
 * right after a delimiter, a preamble that is not blank lines, "--boundary" after a
 * bare CR or LF or at the start of a part's data; in Content-Disposition: a type
 * other than form-data, any RFC 2231 parameter (name*, filename*, name*0...), a
 * parameter given twice, a backslash or a control character in a quoted string,
 * space around '=', an empty parameter or a trailing ';', a non-tchar byte in an
 * unquoted value, more than GW_MP_PARAMS_MAX parameters, an unterminated quote.
 */
#ifndef GW_MULTIPART_H
#define GW_MULTIPART_H

#include <sys/types.h>

#include "gw.h"

#define GW_MP_BOUNDARY_MAX 70
#define GW_MP_VALUE_MAX    1024  /* captured bytes of a text field */
#define GW_MP_NAME_MAX     128   /* longest part name we keep; longer -> 400 */
#define GW_MP_HEADERS_MAX  8192  /* bytes of one part's header block */
#define GW_MP_PARAMS_MAX   8     /* parameters of one Content-Disposition; more -> 400 */
#define GW_MP_MAX_PENDING  (GW_MP_BOUNDARY_MAX + 8)

enum gw_mp_op_kind {
    GW_MP_PASS = 0,
    GW_MP_DROP,
    GW_MP_LITERAL,
};

struct gw_mp_op {
    enum gw_mp_op_kind kind;
    size_t len;
    const char *p; /* GW_MP_LITERAL only */
};

struct gw_mp_part {
    struct gw_str name;     /* borrowed, valid during the hook */
    int has_filename;       /* a file part (filename= present, even empty) */
    struct gw_str content_type; /* the part's Content-Type, or {NULL,0} */
    unsigned index;         /* 0-based position of the part in the body */
};

struct gw_mp_field {
    struct gw_str name;     /* borrowed */
    struct gw_str value;    /* borrowed: first min(total_len, GW_MP_VALUE_MAX) bytes */
    size_t total_len;       /* the value's real length */
};

struct gw_mp_hooks {
    int (*on_part)(void *arg, const struct gw_mp_part *part, struct gw_error *err);
    int (*on_field)(void *arg, const struct gw_mp_field *field, struct gw_error *err);
    /* Give the replacement for the model value (may equal it). *out must stay valid
     * until the next gw_mp_execute()/gw_mp_finish() call. */
    int (*on_model)(void *arg, struct gw_str value, struct gw_str *out, struct gw_error *err);
    int (*on_end)(void *arg, struct gw_error *err);
};

/* Opaque in spirit; in the header so the proxy can embed it (no allocation). */
struct gw_mp {
    /* private: filled by multipart.c; callers read only the public fields below */
    int state;                          /* enum mp_state in multipart.c */
    int failed;                         /* sticky: every later call returns GW_ERR */
    const struct gw_mp_hooks *hooks;
    void *arg;
    char delim[GW_MP_BOUNDARY_MAX + 4]; /* "\r\n--" boundary */
    size_t delim_len;
    size_t match;                       /* bytes of delim matched so far */
    size_t alt;                         /* in part data: 0, or 1 + bytes of "--boundary"
                                         * matched since a bare CR or LF (refused) */
    unsigned nparts;                    /* parts whose headers were parsed */
    char hdr[GW_MP_HEADERS_MAX];        /* current part's header block, CRLFs included */
    size_t hdr_len;
    size_t line_start;                  /* offset in hdr of the current header line */
    int in_part;                        /* between a part's headers and its end */
    char name[GW_MP_NAME_MAX + 1];      /* current part's name, NUL-terminated */
    size_t name_len;
    int has_name;
    int has_filename;
    int is_model;                       /* current part is the `model` field */
    char value[GW_MP_VALUE_MAX];        /* captured value of the current text field */
    size_t value_len;                   /* captured bytes */
    size_t value_total;                 /* real length */
    char model[GW_MP_VALUE_MAX];        /* the original model value: stays put after its
                                         * part, as the LITERAL when on_model is NULL */
    int model_part_seen;                /* a second `model` part is refused */
    /* public, read-only: */
    uint64_t classified;                /* input bytes classified so far (PASS+DROP) */
    uint64_t scanned;                   /* input bytes scanned so far */
    int64_t delta;                      /* output length minus input length so far */
    int seen_model;                     /* the model part has been rewritten */
    struct gw_error err;                /* set when GW_ERR is returned */
};

/*
 * Parse the boundary out of a Content-Type header value
 * ("multipart/form-data; boundary=...", case-insensitive parameter name). The
 * boundary must be RFC 2046 bchars, quoted, or unquoted if it is a token; no
 * parameter may be an RFC 2231 one or hold a backslash in quotes. Returns GW_OK and
 * a view into ct, or GW_ERR with err set (400 invalid_multipart, param NULL).
 */
int gw_mp_boundary(struct gw_str content_type, struct gw_str *boundary, struct gw_error *err);

/* Prepare mp for a new body. Never fails for a boundary gw_mp_boundary() accepted;
 * returns GW_ERR for a bad one. hooks may have NULL members. */
int gw_mp_init(struct gw_mp *mp, struct gw_str boundary, const struct gw_mp_hooks *hooks,
               void *arg);

/*
 * Scan buf[0..len) - the bytes that follow everything scanned before - and append
 * operations to ops[*nops .. cap). Stops early when ops is full (it always leaves
 * room to finish what it started). Returns the number of bytes scanned (0..len;
 * less than len only when ops filled up: call again with the rest), or GW_ERR
 * (mp->err filled). After the close delimiter, the epilogue is PASSed.
 *
 * Each step needs at most one new op, and consecutive PASS (or DROP) ops appended
 * by the same call are merged, so a file part costs about one op per slice; any
 * cap > *nops makes progress (a call may classify without scanning: a return of 0
 * with new ops). Ops appended by earlier calls are never modified. On GW_ERR the
 * ops appended so far classify bytes correctly, but the body must be abandoned.
 */
ssize_t gw_mp_execute(struct gw_mp *mp, const char *buf, size_t len, struct gw_mp_op *ops,
                      size_t *nops, size_t cap);

/* End of input. GW_OK when the close delimiter was seen (ops may receive the final
 * classification), else GW_ERR "multipart body ended before its closing boundary". */
int gw_mp_finish(struct gw_mp *mp, struct gw_mp_op *ops, size_t *nops, size_t cap);

#endif
