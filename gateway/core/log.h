/*
 * log.h - the error log: one macro that checks the level before formatting,
 * printf-checked, one line per call written with a single write(2) so lines
 * from several threads never interleave. Never pass a secret to it.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

enum gw_log_level {
    GW_LOG_ERROR = 0,
    GW_LOG_WARN,
    GW_LOG_INFO,
    GW_LOG_DEBUG,
};

extern int gw_log_level; /* the highest level written */

void gw_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define gw_log(level, ...)                       \
    do {                                         \
        if ((level) <= gw_log_level)             \
            gw_log_write((level), __VA_ARGS__);  \
    } while (0)

#endif
