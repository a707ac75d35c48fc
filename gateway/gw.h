/*
 * gw.h - vocabulary shared by every module: return codes, borrowed strings,
 * errors as data. Pure: no libevent, libevhtp, OpenSSL or socket header here.
 */
#ifndef GW_H
#define GW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Return codes, with nginx's meanings. */
#define GW_OK    0  /* done, go on */
#define GW_ERR   -1 /* failed; details are in the struct gw_error the caller passed */
#define GW_AGAIN -2 /* not finished, call again with more input / when woken */
#define GW_DONE  -4 /* finished early; nothing more to do */

#define GW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* A borrowed view: valid only as long as the memory it points into. Never owns. */
struct gw_str {
    const char *p;
    size_t len;
};

#define GW_STR(lit) ((struct gw_str){ (lit), sizeof(lit) - 1 })

/* The value of a hex digit, or -1. */
static inline int gw_hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static inline int gw_str_eq(struct gw_str a, const char *lit)
{
    size_t n = strlen(lit);
    return a.len == n && memcmp(a.p, lit, n) == 0;
}

/*
 * An error as data. Pure modules fill it; only the proxy turns it into the
 * OpenAI error body and a log line. `type`, `code` and `param` point to static
 * strings (or NULL for a JSON null). `message` must never hold a secret.
 */
struct gw_error {
    int status;           /* HTTP status to answer with */
    const char *type;     /* "invalid_request_error", "upstream_error", ... */
    const char *code;     /* "invalid_api_key", "bad_multipart", ... */
    const char *param;    /* "model", "input_reference", ... or NULL */
    char message[256];
};

/* Fill err (printf-style message) and return GW_ERR, for `return gw_error_set(...)`. */
int gw_error_set(struct gw_error *err, int status, const char *type, const char *code,
                 const char *param, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/*
 * Write {"error":{"message":..,"type":..,"param":..,"code":..}} into buf (cap bytes,
 * NUL-terminated). Returns the length written (without NUL), truncating safely.
 */
size_t gw_error_json(const struct gw_error *err, char *buf, size_t cap);

#endif
