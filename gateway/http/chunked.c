/*
 * chunked.c - incremental chunked body decoder (see chunked.h for the contract).
 */
#include "chunked.h"

static int is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";

    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    for (const char *e = extra; *e; e++) {
        if (c == (unsigned char)*e)
            return 1;
    }
    return 0;
}

/* a field-value or quoted-string byte: anything but controls (HTAB allowed) */
static int is_text(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

void gw_chunked_init(struct gw_chunked *ck, size_t max_trailer)
{
    memset(ck, 0, sizeof(*ck));
    ck->state = GW_CK_SIZE;
    ck->max_trailer = max_trailer;
}

static ssize_t fail(struct gw_chunked *ck, const char *msg)
{
    ck->state = GW_CK_ERROR;
    gw_error_set(&ck->err, 400, "invalid_request_error", "invalid_request", NULL,
                 "Malformed chunked request body: %s", msg);
    return GW_ERR;
}

ssize_t gw_chunked_execute(struct gw_chunked *ck, const char *buf, size_t len,
                           struct gw_str *data)
{
    size_t i = 0;

    data->p = buf;
    data->len = 0;
    if (ck->state == GW_CK_ERROR)
        return GW_ERR;
    while (i < len && ck->state != GW_CK_DONE) {
        unsigned char c = (unsigned char)buf[i];
        int h;

        if (ck->state <= GW_CK_SIZE_LF && ++ck->line > GW_CHUNK_LINE_MAX)
            return fail(ck, "chunk-size line too long");
        if (ck->state >= GW_CK_TRAILER && ck->state <= GW_CK_END_LF &&
            ++ck->trailer > ck->max_trailer)
            return fail(ck, "trailer section too large");

        switch (ck->state) {
        case GW_CK_SIZE:
            if ((h = gw_hexval(c)) >= 0) {
                if (ck->size > (GW_CHUNK_SIZE_MAX - (uint64_t)h) / 16)
                    return fail(ck, "chunk size too large");
                ck->size = ck->size * 16 + (uint64_t)h;
                ck->digits++;
                break;
            }
            if (ck->digits == 0)
                return fail(ck, "chunk size expected");
            if (c == ';')
                ck->state = GW_CK_EXT;
            else if (c == ' ' || c == '\t')
                ck->state = GW_CK_SIZE_BWS;
            else if (c == '\r')
                ck->state = GW_CK_SIZE_LF;
            else
                return fail(ck, "invalid character in chunk size");
            break;
        case GW_CK_SIZE_BWS: /* whitespace after a size is only allowed before ';' */
            if (c == ';')
                ck->state = GW_CK_EXT;
            else if (c != ' ' && c != '\t')
                return fail(ck, "invalid character after chunk size");
            break;
        case GW_CK_EXT:
            if (is_tchar(c))
                ck->state = GW_CK_EXT_NAME;
            else if (c != ' ' && c != '\t')
                return fail(ck, "chunk extension name expected");
            break;
        case GW_CK_EXT_NAME:
        case GW_CK_EXT_NAME_BWS:
            if (c == ';')
                ck->state = GW_CK_EXT;
            else if (c == '=')
                ck->state = GW_CK_EXT_EQ;
            else if (c == ' ' || c == '\t')
                ck->state = GW_CK_EXT_NAME_BWS;
            else if (c == '\r' && ck->state == GW_CK_EXT_NAME)
                ck->state = GW_CK_SIZE_LF;
            else if (!is_tchar(c) || ck->state != GW_CK_EXT_NAME)
                return fail(ck, "invalid character in chunk extension");
            break;
        case GW_CK_EXT_EQ:
            if (c == '"')
                ck->state = GW_CK_EXT_QUOTED;
            else if (is_tchar(c))
                ck->state = GW_CK_EXT_TOKEN;
            else if (c != ' ' && c != '\t')
                return fail(ck, "chunk extension value expected");
            break;
        case GW_CK_EXT_TOKEN:
            if (is_tchar(c))
                break;
            __attribute__((fallthrough)); /* the token has ended */
        case GW_CK_EXT_VALUE_END:
        case GW_CK_EXT_VALUE_BWS:
            if (c == ';')
                ck->state = GW_CK_EXT;
            else if (c == ' ' || c == '\t')
                ck->state = GW_CK_EXT_VALUE_BWS;
            else if (c == '\r' && ck->state != GW_CK_EXT_VALUE_BWS)
                ck->state = GW_CK_SIZE_LF;
            else
                return fail(ck, "invalid character in chunk extension");
            break;
        case GW_CK_EXT_QUOTED:
            if (c == '"')
                ck->state = GW_CK_EXT_VALUE_END;
            else if (c == '\\')
                ck->state = GW_CK_EXT_ESCAPE;
            else if (!is_text(c))
                return fail(ck, "invalid character in chunk extension");
            break;
        case GW_CK_EXT_ESCAPE:
            if (!is_text(c))
                return fail(ck, "invalid character in chunk extension");
            ck->state = GW_CK_EXT_QUOTED;
            break;
        case GW_CK_SIZE_LF:
            if (c != '\n')
                return fail(ck, "chunk-size line not ended by CRLF");
            ck->line = 0;
            ck->digits = 0;
            ck->left = ck->size;
            ck->size = 0;
            ck->state = ck->left == 0 ? GW_CK_TRAILER : GW_CK_DATA;
            break;
        case GW_CK_DATA: {
            size_t n = len - i < ck->left ? len - i : (size_t)ck->left;
            data->p = buf + i;
            data->len = n;
            ck->left -= n;
            if (ck->left == 0)
                ck->state = GW_CK_DATA_CR;
            return (ssize_t)(i + n); /* one data slice per call */
        }
        case GW_CK_DATA_CR:
            if (c != '\r')
                return fail(ck, "chunk data not followed by CRLF");
            ck->state = GW_CK_DATA_LF;
            break;
        case GW_CK_DATA_LF:
            if (c != '\n')
                return fail(ck, "chunk data not followed by CRLF");
            ck->state = GW_CK_SIZE;
            break;
        case GW_CK_TRAILER:
            if (c == '\r')
                ck->state = GW_CK_END_LF;
            else if (is_tchar(c))
                ck->state = GW_CK_TRAILER_NAME;
            else
                return fail(ck, "malformed trailer field");
            break;
        case GW_CK_TRAILER_NAME:
            if (c == ':')
                ck->state = GW_CK_TRAILER_VALUE;
            else if (!is_tchar(c))
                return fail(ck, "malformed trailer field");
            break;
        case GW_CK_TRAILER_VALUE:
            if (c == '\r')
                ck->state = GW_CK_TRAILER_LF;
            else if (!is_text(c))
                return fail(ck, "invalid character in a trailer field");
            break;
        case GW_CK_TRAILER_LF:
            if (c != '\n')
                return fail(ck, "trailer field not ended by CRLF");
            ck->state = GW_CK_TRAILER;
            break;
        case GW_CK_END_LF:
            if (c != '\n')
                return fail(ck, "body not ended by CRLF");
            ck->state = GW_CK_DONE;
            break;
        case GW_CK_DONE:
        case GW_CK_ERROR:
            break;
        }
        i++;
    }
    return (ssize_t)i;
}
