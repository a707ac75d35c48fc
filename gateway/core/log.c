/*
 * log.c - error log lines on stderr: "2026-11-25T10:32:11.123Z warn message".
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

int gw_log_level = GW_LOG_INFO;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void gw_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    struct timeval tv;
    struct tm tm;
    va_list ap;
    size_t off;
    int n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    off = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line + off, sizeof(line) - off, ".%03dZ %s ", (int)(tv.tv_usec / 1000),
                 level_names[level < 0 ? 0 : level > GW_LOG_DEBUG ? GW_LOG_DEBUG : level]);
    off += (size_t)n;
    va_start(ap, fmt);
    n = vsnprintf(line + off, sizeof(line) - off - 1, fmt, ap);
    va_end(ap);
    off = n < 0 ? off : off + (size_t)n >= sizeof(line) - 1 ? sizeof(line) - 2 : off + (size_t)n;
    line[off++] = '\n';
    (void)!write(STDERR_FILENO, line, off);
}
