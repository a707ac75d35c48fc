/*
 * errors.c - errors as data, and the one place that renders the OpenAI error body.
 */
#include <stdarg.h>
#include <stdio.h>

#include "gw.h"

int gw_error_set(struct gw_error *err, int status, const char *type, const char *code,
                 const char *param, const char *fmt, ...)
{
    va_list ap;

    err->status = status;
    err->type = type;
    err->code = code;
    err->param = param;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return GW_ERR;
}

/* Append s as a JSON string (or null) at buf[*off], never past cap - 1. */
static void put_json_string(char *buf, size_t cap, size_t *off, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = *off;

#define PUT(c)                  \
    do {                        \
        if (o + 1 < cap)        \
            buf[o++] = (c);     \
    } while (0)

    if (s == NULL) {
        for (const char *n = "null"; *n; n++)
            PUT(*n);
        *off = o;
        return;
    }
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            PUT('\\');
            PUT((char)*p);
        } else if (*p < 0x20) {
            PUT('\\');
            PUT('u');
            PUT('0');
            PUT('0');
            PUT(hex[*p >> 4]);
            PUT(hex[*p & 0xf]);
        } else {
            PUT((char)*p);
        }
    }
    PUT('"');
#undef PUT
    *off = o;
}

static void put_raw(char *buf, size_t cap, size_t *off, const char *s)
{
    while (*s && *off + 1 < cap)
        buf[(*off)++] = *s++;
}

size_t gw_error_json(const struct gw_error *err, char *buf, size_t cap)
{
    size_t off = 0;

    if (cap == 0)
        return 0;
    put_raw(buf, cap, &off, "{\"error\":{\"message\":");
    put_json_string(buf, cap, &off, err->message);
    put_raw(buf, cap, &off, ",\"type\":");
    put_json_string(buf, cap, &off, err->type);
    put_raw(buf, cap, &off, ",\"param\":");
    put_json_string(buf, cap, &off, err->param);
    put_raw(buf, cap, &off, ",\"code\":");
    put_json_string(buf, cap, &off, err->code);
    put_raw(buf, cap, &off, "}}\n");
    buf[off] = '\0';
    return off;
}
