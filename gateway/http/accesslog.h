/*
 * accesslog.h - one JSON line per request: who (key name, never the key), what
 * (route, model asked and sent), how it ended, how big, how long. No prompt text.
 */
#ifndef GW_ACCESSLOG_H
#define GW_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

struct gw_access {
    const char *rid;
    const char *trace;        /* W3C traceparent's trace-id (32 hex digits), or NULL */
    const char *key;          /* key name or NULL */
    const char *method;
    const char *route;        /* router name or NULL */
    int status;               /* sent to the client (0: none) */
    int upstream_status;      /* 0: no upstream response */
    uint64_t bytes_in;        /* request body bytes */
    uint64_t bytes_out;       /* response body bytes */
    double ms;                /* from head to fini */
    const char *model;        /* as asked (client text, escaped on output) */
    const char *model_sent;   /* not NUL-terminated: model_sent_len bytes */
    size_t model_sent_len;
    const char *error;        /* gateway error code, or NULL */
    int completed;            /* 0: connection lost before the exchange finished */
};

/* "-" = stdout, "off" = nothing, else a file opened for append. GW_ERR if it
 * cannot be opened. */
int gw_accesslog_open(const char *spec);

/* SIGUSR1 (log rotation): open the configured file again, by its path, in place
 * of the old one. No-op for "-" and "off". GW_ERR (errno set): the old file stays. */
int gw_accesslog_reopen(void);

void gw_accesslog_write(const struct gw_access *a);

#endif
