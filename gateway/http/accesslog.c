/*
 * accesslog.c - JSON access log lines, each written with one write(2) on an
 * O_APPEND descriptor so lines from several threads never interleave.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "accesslog.h"
#include "gw.h"

static int log_fd = STDOUT_FILENO;
static char log_path[4096]; /* "" for stdout or off: nothing to reopen */

int gw_accesslog_open(const char *spec)
{
    log_path[0] = '\0';
    if (spec == NULL || strcmp(spec, "-") == 0) {
        log_fd = STDOUT_FILENO;
        return GW_OK;
    }
    if (strcmp(spec, "off") == 0) {
        log_fd = -1;
        return GW_OK;
    }
    log_fd = open(spec, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (log_fd >= 0 && strlen(spec) < sizeof(log_path))
        memcpy(log_path, spec, strlen(spec) + 1);
    return log_fd < 0 ? GW_ERR : GW_OK;
}

/*
 * The new file takes the old one's descriptor number with dup2(), which swaps
 * it in one step: a loop writing a line at that moment writes it whole to the
 * old file or the new one, never to a closed descriptor, so no line is lost.
 */
int gw_accesslog_reopen(void)
{
    int fd;

    if (log_path[0] == '\0')
        return GW_OK;
    fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return GW_ERR;
    if (dup2(fd, log_fd) < 0) {
        close(fd);
        return GW_ERR;
    }
    close(fd);
    fcntl(log_fd, F_SETFD, FD_CLOEXEC);
    return GW_OK;
}

struct line {
    char buf[1024];
    size_t len;
};

static void put(struct line *l, const char *s, size_t n)
{
    if (n > sizeof(l->buf) - 2 - l->len)
        n = sizeof(l->buf) - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *key, const char *s, size_t n)
{
    char tmp[8];

    put(l, ",\"", 2);
    put(l, key, strlen(key));
    put(l, "\":", 2);
    if (s == NULL) {
        put(l, "null", 4);
        return;
    }
    put(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)c;
            put(l, tmp, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            put(l, tmp, 6);
        } else {
            put(l, (const char *)&c, 1);
        }
    }
    put(l, "\"", 1);
}

void gw_accesslog_write(const struct gw_access *a)
{
    struct line l = { .len = 0 };
    struct timeval tv;
    struct tm tm;
    char num[160];
    int n;

    if (log_fd < 0)
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = (int)strftime(num, sizeof(num), "{\"ts\":\"%Y-%m-%dT%H:%M:%S", &tm);
    n += snprintf(num + n, sizeof(num) - (size_t)n, ".%03dZ\"", (int)(tv.tv_usec / 1000));
    put(&l, num, (size_t)n);
    put_str(&l, "rid", a->rid, strlen(a->rid));
    /* the trace-id part of a traceparent ("00-<trace-id>-<parent-id>-<flags>") */
    put_str(&l, "trace", a->trace ? a->trace + 3 : NULL, a->trace ? 32 : 0);
    put_str(&l, "key", a->key, a->key ? strlen(a->key) : 0);
    put_str(&l, "method", a->method, a->method ? strlen(a->method) : 0);
    put_str(&l, "route", a->route, a->route ? strlen(a->route) : 0);
    n = snprintf(num, sizeof(num),
                 ",\"status\":%d,\"upstream_status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                 "\"ms\":%.3f,\"completed\":%s",
                 a->status, a->upstream_status, (unsigned long long)a->bytes_in,
                 (unsigned long long)a->bytes_out, a->ms, a->completed ? "true" : "false");
    put(&l, num, (size_t)n);
    put_str(&l, "model", a->model, a->model ? strlen(a->model) : 0);
    put_str(&l, "model_sent", a->model_sent, a->model_sent_len);
    put_str(&l, "error", a->error, a->error ? strlen(a->error) : 0);
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    (void)!write(log_fd, l.buf, l.len);
}
