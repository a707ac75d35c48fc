/*
 * chunked.h - incremental decoder of a chunked request body (RFC 9112 §7.1). Pure.
 *
 * The gateway decodes chunked bodies itself instead of trusting libevhtp's
 * parser, whose chunk sizes wrap around at 2^64 and whose trailers become
 * request headers (issue 5). What the gateway decides here is the only framing:
 * the data slices found are handed on in canonical chunks, and the decoder never
 * consumes a byte past the end of the message, so a pipelined request that
 * follows is left untouched.
 *
 * Accepted: chunk-size = 1*HEXDIG (leading zeros allowed, value at most
 * GW_CHUNK_SIZE_MAX), chunk extensions exactly as RFC 9112 7.1.1 writes them
 * (*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )) read and
 * dropped - an empty name or whitespace before CR is refused - trailer fields
 * read and dropped, however many (bounded by max_trailer bytes). Every line ends
 * in CRLF.
 * Refused (GW_ERR, err 400 invalid_request): no hex digit, a size over the
 * maximum, bare CR or LF, a control character in an extension or a trailer, data
 * not followed by CRLF, a size line longer than GW_CHUNK_LINE_MAX, trailers
 * longer than max_trailer, a trailer line that is not "name: value".
 */
#ifndef GW_CHUNKED_H
#define GW_CHUNKED_H

#include <sys/types.h>

#include "gw.h"

#define GW_CHUNK_LINE_MAX 4096             /* chunk-size line, extensions included */
#define GW_CHUNK_SIZE_MAX ((1ULL << 62) - 1) /* any body is refused long before this */

enum gw_chunked_state {
    GW_CK_SIZE = 0,   /* hex digits of a chunk size */
    GW_CK_SIZE_BWS,   /* whitespace after the size (only before ';') */
    GW_CK_EXT,        /* after ';': BWS, then an extension name */
    GW_CK_EXT_NAME,
    GW_CK_EXT_NAME_BWS, /* BWS after a name: ';' or '=' must follow */
    GW_CK_EXT_EQ,     /* after '=': BWS, then a token or a quoted string */
    GW_CK_EXT_TOKEN,
    GW_CK_EXT_QUOTED, /* inside a quoted extension value */
    GW_CK_EXT_ESCAPE, /* after a backslash inside it */
    GW_CK_EXT_VALUE_END, /* after a value: ';', CR, or BWS then ';' */
    GW_CK_EXT_VALUE_BWS,
    GW_CK_SIZE_LF,    /* CR seen, LF expected (states up to here count as the line) */
    GW_CK_DATA,       /* chunk data: `left` bytes to go */
    GW_CK_DATA_CR,    /* CRLF after the data */
    GW_CK_DATA_LF,
    GW_CK_TRAILER,    /* start of a trailer line (or of the final CRLF) */
    GW_CK_TRAILER_NAME,
    GW_CK_TRAILER_VALUE,
    GW_CK_TRAILER_LF, /* CR of a trailer line seen */
    GW_CK_END_LF,     /* CR of the final empty line seen */
    GW_CK_DONE,       /* the whole body is read */
    GW_CK_ERROR,
};

struct gw_chunked {
    enum gw_chunked_state state;
    uint64_t size;        /* the chunk size being read */
    uint64_t left;        /* data bytes of the current chunk still to come */
    unsigned digits;      /* hex digits of the current size */
    size_t line;          /* bytes of the current size line */
    size_t trailer;       /* bytes of the trailer section so far */
    size_t max_trailer;
    struct gw_error err;
};

void gw_chunked_init(struct gw_chunked *ck, size_t max_trailer);

/*
 * Decode from buf. Consumes framing bytes and at most one slice of chunk data,
 * and stops there, at the end of the body (state GW_CK_DONE) or at the end of
 * buf. Returns the bytes consumed, with *data set to the data slice among them
 * (borrowed from buf; len 0 when none), or GW_ERR with ck->err set; every later
 * call returns GW_ERR too. Never consumes past the end of the body.
 */
ssize_t gw_chunked_execute(struct gw_chunked *ck, const char *buf, size_t len,
                           struct gw_str *data);

static inline int gw_chunked_done(const struct gw_chunked *ck)
{
    return ck->state == GW_CK_DONE;
}

#endif
