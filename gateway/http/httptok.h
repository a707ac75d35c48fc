/*
 * httptok.h - comma-separated lists in HTTP field values (RFC 9110 §5.6.1):
 * the token lists of Connection, Transfer-Encoding, Upgrade, TE. Pure and
 * header-only (static inline), so that both sides of the proxy can use it
 * without a new library source: no I/O header, no allocation, borrowed slices.
 *
 *   struct gw_str rest = value, el;
 *   while (gw_httptok_next(&rest, &el))
 *       ... el is one element, OWS trimmed ...
 *
 * Elements are split at every comma: quoted strings are not understood (the
 * lists above carry tokens; a transfer-coding's parameters stay attached to
 * their element, "gzip;q=1"). Empty elements ("a,,b", " , a") are skipped, as
 * recipients must accept them.
 */
#ifndef GW_HTTPTOK_H
#define GW_HTTPTOK_H

#include <stddef.h>
#include <strings.h>

#include "gw.h"

static inline int gw_httptok_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* The next non-empty element of *rest, OWS trimmed, into *el; *rest moves past
 * it. Returns 1, or 0 (el empty) when no element is left. */
static inline int gw_httptok_next(struct gw_str *rest, struct gw_str *el)
{
    const char *p = rest->p, *end, *s, *e;

    if (p == NULL) { /* an absent field: {NULL, 0} */
        el->p = NULL;
        el->len = 0;
        return 0;
    }
    end = p + rest->len;
    while (p < end && (*p == ',' || gw_httptok_ows(*p)))
        p++;
    s = p;
    while (p < end && *p != ',')
        p++;
    e = p; /* > s unless nothing is left: s is neither a comma nor OWS */
    while (e > s && gw_httptok_ows(e[-1]))
        e--;
    rest->p = p;
    rest->len = (size_t)(end - p);
    el->p = s;
    el->len = (size_t)(e - s);
    return e > s;
}

/* Whether the list `value` has an element equal to name[0..len), ignoring
 * case (field names and the tokens of these lists are case-insensitive). */
static inline int gw_httptok_has(struct gw_str value, const char *name, size_t len)
{
    struct gw_str el;

    while (gw_httptok_next(&value, &el))
        if (el.len == len && strncasecmp(el.p, name, len) == 0)
            return 1;
    return 0;
}

#endif
