/*
 * expo.h - the Prometheus text exposition format (version 0.0.4), written into
 * a growable buffer with a ceiling. Pure: no I/O; the caller sends the text.
 *
 *   struct gw_expo e;
 *   gw_expo_init(&e, 4 << 20);
 *   gw_expo_family(&e, "videogw_requests_total", "counter", "Requests answered.");
 *   gw_expo_sample(&e, "videogw_requests_total", labels, 2, 17.0);
 *   ... e.buf / e.len, then gw_expo_free(&e)
 *
 * Label values are escaped as the format asks (backslash, double quote and line
 * feed), so any key name, model name or label from the configuration is safe
 * in a value. Label names and metric names are the caller's constants.
 */
#ifndef GW_EXPO_H
#define GW_EXPO_H

#include <stddef.h>
#include <stdint.h>

struct gw_expo {
    char *buf;          /* owned; NUL-terminated while len > 0 */
    size_t len, cap;
    size_t max;         /* ceiling: past it the output stops and `full` is set */
    int full;           /* out of memory or over max: the text is cut, answer 500 */
};

struct gw_label {
    const char *name;   /* [a-zA-Z_][a-zA-Z0-9_]* */
    const char *value;  /* any bytes but NUL; escaped on output */
};

void gw_expo_init(struct gw_expo *e, size_t max);
void gw_expo_free(struct gw_expo *e);

/* "# HELP name help\n# TYPE name type\n"; help is escaped (backslash, LF). */
void gw_expo_family(struct gw_expo *e, const char *name, const char *type, const char *help);

/* name{labels} value. A value with no fraction is printed as an integer. */
void gw_expo_sample(struct gw_expo *e, const char *name, const struct gw_label *labels,
                    size_t nlabels, double value);

/* The same with an exact unsigned integer (counters past 2^53). */
void gw_expo_sample_u64(struct gw_expo *e, const char *name, const struct gw_label *labels,
                        size_t nlabels, uint64_t value);

/*
 * A histogram's series: name_bucket{labels,le="..."} cumulative counts for each of
 * the nbounds upper bounds (ascending) and +Inf, then name_sum and name_count.
 * counts[i] is the count of observations in bucket i alone (not cumulative);
 * counts[nbounds] those above the last bound.
 */
void gw_expo_histogram(struct gw_expo *e, const char *name, const struct gw_label *labels,
                       size_t nlabels, const double *bounds, size_t nbounds,
                       const uint64_t *counts, double sum);

/* Append raw text (for tests and fixed lines). */
void gw_expo_raw(struct gw_expo *e, const char *s, size_t n);

#endif
