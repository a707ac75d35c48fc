/*
 * expo.c - the Prometheus text exposition writer (see expo.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expo.h"

void gw_expo_init(struct gw_expo *e, size_t max)
{
    memset(e, 0, sizeof(*e));
    e->max = max;
}

void gw_expo_free(struct gw_expo *e)
{
    free(e->buf);
    memset(e, 0, sizeof(*e));
}

static int reserve(struct gw_expo *e, size_t n)
{
    size_t want;
    char *p;

    if (e->full)
        return 0;
    if (e->len + n + 1 <= e->cap)
        return 1;
    if (e->len + n + 1 > e->max) {
        e->full = 1;
        return 0;
    }
    want = e->cap ? e->cap : 4096;
    while (want < e->len + n + 1)
        want *= 2;
    if (want > e->max)
        want = e->max;
    p = realloc(e->buf, want);
    if (p == NULL) {
        e->full = 1;
        return 0;
    }
    e->buf = p;
    e->cap = want;
    return 1;
}

void gw_expo_raw(struct gw_expo *e, const char *s, size_t n)
{
    if (!reserve(e, n))
        return;
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = '\0';
}

static void put(struct gw_expo *e, const char *s)
{
    gw_expo_raw(e, s, strlen(s));
}

/* Escape for a HELP text (quotes allowed) or a label value (quotes escaped). */
static void put_escaped(struct gw_expo *e, const char *s, int quote)
{
    const char *run = s;

    for (; *s; s++) {
        const char *rep = *s == '\\' ? "\\\\" : *s == '\n' ? "\\n"
                          : (quote && *s == '"') ? "\\\""
                                                 : NULL;
        if (rep == NULL)
            continue;
        gw_expo_raw(e, run, (size_t)(s - run));
        put(e, rep);
        run = s + 1;
    }
    gw_expo_raw(e, run, (size_t)(s - run));
}

void gw_expo_family(struct gw_expo *e, const char *name, const char *type, const char *help)
{
    put(e, "# HELP ");
    put(e, name);
    put(e, " ");
    put_escaped(e, help, 0);
    put(e, "\n# TYPE ");
    put(e, name);
    put(e, " ");
    put(e, type);
    put(e, "\n");
}

static void series(struct gw_expo *e, const char *name, const char *suffix,
                   const struct gw_label *labels, size_t nlabels, const char *le)
{
    put(e, name);
    put(e, suffix);
    if (nlabels == 0 && le == NULL)
        return;
    put(e, "{");
    for (size_t i = 0; i < nlabels; i++) {
        if (i > 0)
            put(e, ",");
        put(e, labels[i].name);
        put(e, "=\"");
        put_escaped(e, labels[i].value ? labels[i].value : "", 1);
        put(e, "\"");
    }
    if (le != NULL) {
        put(e, nlabels ? ",le=\"" : "le=\"");
        put(e, le);
        put(e, "\"");
    }
    put(e, "}");
}

/* A float as the format takes it: integers without a fraction, NaN and infinities
 * by name, others with enough digits to round-trip. */
static void put_value(struct gw_expo *e, double v)
{
    char num[40];

    if (isnan(v))
        snprintf(num, sizeof(num), " NaN\n");
    else if (isinf(v))
        snprintf(num, sizeof(num), " %s\n", v > 0 ? "+Inf" : "-Inf");
    else if (v == floor(v) && fabs(v) < 1e15)
        snprintf(num, sizeof(num), " %.0f\n", v);
    else
        snprintf(num, sizeof(num), " %.17g\n", v);
    put(e, num);
}

static void put_u64(struct gw_expo *e, uint64_t v)
{
    char num[32];

    snprintf(num, sizeof(num), " %llu\n", (unsigned long long)v);
    put(e, num);
}

void gw_expo_sample(struct gw_expo *e, const char *name, const struct gw_label *labels,
                    size_t nlabels, double value)
{
    series(e, name, "", labels, nlabels, NULL);
    put_value(e, value);
}

void gw_expo_sample_u64(struct gw_expo *e, const char *name, const struct gw_label *labels,
                        size_t nlabels, uint64_t value)
{
    series(e, name, "", labels, nlabels, NULL);
    put_u64(e, value);
}

void gw_expo_histogram(struct gw_expo *e, const char *name, const struct gw_label *labels,
                       size_t nlabels, const double *bounds, size_t nbounds,
                       const uint64_t *counts, double sum)
{
    uint64_t cum = 0;
    char le[32];

    for (size_t i = 0; i <= nbounds; i++) {
        cum += counts[i];
        if (i < nbounds)
            snprintf(le, sizeof(le), "%g", bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        series(e, name, "_bucket", labels, nlabels, le);
        put_u64(e, cum);
    }
    series(e, name, "_sum", labels, nlabels, NULL);
    put_value(e, sum);
    series(e, name, "_count", labels, nlabels, NULL);
    put_u64(e, cum);
}
