/*
 * keytab.c - the store's team keys as an immutable, refcounted table (keytab.h).
 */
#include <stdlib.h>
#include <string.h>

#include "keytab.h"

void gw_keytab_names_free(struct gw_names *n)
{
    for (unsigned i = 0; i < n->n; i++)
        free(n->v[i]);
    free(n->v);
    n->v = NULL;
    n->n = 0;
}

int gw_keytab_models(const struct gw_config *cfg, const char *list, struct gw_names *out,
                     char *unknown_buf, size_t unknown_cap, int *unknown)
{
    const char *p = list;

    out->v = NULL;
    out->n = 0;
    if (unknown != NULL)
        *unknown = 0;
    while (p != NULL && *p != '\0') {
        const char *end = strchr(p, ','), *a = p, *b;
        b = end != NULL ? end : p + strlen(p);
        p = end != NULL ? end + 1 : NULL;
        while (a < b && *a == ' ')
            a++;
        while (b > a && b[-1] == ' ')
            b--;
        if (a == b)
            continue;
        struct gw_resolved r;
        struct gw_error err;
        struct gw_str name = { a, (size_t)(b - a) };
        int rc = gw_catalog_resolve(&cfg->catalog, name, &r, &err);
        if (rc != GW_OK && unknown != NULL && !*unknown) {
            *unknown = 1;
            size_t len = name.len < unknown_cap - 1 ? name.len : unknown_cap - 1;
            memcpy(unknown_buf, a, len);
            unknown_buf[len] = '\0';
        }
        if (rc == GW_OK && r.model != NULL)
            name = (struct gw_str){ r.model->name, strlen(r.model->name) };
        char **v = realloc(out->v, (out->n + 1) * sizeof(*v));
        if (v == NULL)
            goto oom;
        out->v = v;
        if ((v[out->n] = strndup(name.p, name.len)) == NULL)
            goto oom;
        out->n++;
    }
    return GW_OK;

oom:
    gw_keytab_names_free(out);
    return GW_ERR;
}

static void table_free(struct gw_keytab *t)
{
    for (unsigned i = 0; i < t->nkeys; i++) {
        free(t->keys[i].name);
        gw_keytab_names_free(&t->keys[i].models);
    }
    free(t->keys);
    free(t);
}

static int in_config(const struct gw_config *cfg, const char *name)
{
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        if (strcmp(cfg->keys[i].name, name) == 0)
            return 1;
    }
    return 0;
}

/* -1 in the store: the config's default, as a [key] stanza that leaves it out */
static int limit_or(int64_t v, int dflt)
{
    return v < 0 ? dflt : v > 100000000 ? 100000000 : (int)v;
}

static int by_sha256(const void *a, const void *b)
{
    return memcmp(((const struct gw_team_key *)a)->sha256, ((const struct gw_team_key *)b)->sha256,
                  sizeof(((const struct gw_team_key *)a)->sha256));
}

const struct gw_team_key *gw_keytab_lookup(const struct gw_keytab *t,
                                           const unsigned char sha256[32])
{
    size_t lo = 0, hi = t != NULL ? t->nkeys : 0;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(sha256, t->keys[mid].sha256, 32);
        if (c == 0)
            return &t->keys[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

struct gw_keytab *gw_keytab_build(const struct gw_config *cfg, const struct gw_store_key *rows,
                                  size_t n, uint64_t version)
{
    struct gw_keytab *t = calloc(1, sizeof(*t));

    if (t == NULL || (t->keys = calloc(n > 0 ? n : 1, sizeof(*t->keys))) == NULL) {
        free(t);
        return NULL;
    }
    t->refs = 1;
    t->version = version;
    for (size_t i = 0; i < n; i++) {
        const struct gw_store_key *r = &rows[i];
        if (r->revoked_at != 0)
            continue;
        if (in_config(cfg, r->name)) {
            t->skipped++;
            continue;
        }
        struct gw_team_key *k = &t->keys[t->nkeys];
        if ((k->name = strdup(r->name)) == NULL ||
            gw_keytab_models(cfg, r->models, &k->models, NULL, 0, NULL) != GW_OK) {
            free(k->name);
            table_free(t);
            return NULL;
        }
        t->nkeys++;
        memcpy(k->sha256, r->sha256, sizeof(k->sha256));
        k->limits.rpm = limit_or(r->rpm, cfg->limits.rpm);
        k->limits.burst = limit_or(r->burst, cfg->limits.burst);
        k->limits.concurrency = limit_or(r->concurrency, cfg->limits.concurrency);
        k->limits.daily_seconds = limit_or(r->daily_seconds, cfg->limits.daily_seconds);
        k->expires_ms = r->expires_at * 1000;
        k->admin = 0;
    }
    qsort(t->keys, t->nkeys, sizeof(t->keys[0]), by_sha256);
    return t;
}

void gw_keytab_hold(const struct gw_keytab *t)
{
    if (t != NULL)
        __atomic_add_fetch(&((struct gw_keytab *)t)->refs, 1, __ATOMIC_RELAXED);
}

void gw_keytab_release(const struct gw_keytab *t)
{
    if (t != NULL && __atomic_sub_fetch(&((struct gw_keytab *)t)->refs, 1, __ATOMIC_ACQ_REL) == 0)
        table_free((struct gw_keytab *)t);
}

const struct gw_team_key *gw_keytab_find(const struct gw_config *cfg, const struct gw_keytab *t,
                                         const char *name)
{
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        if (strcmp(cfg->keys[i].name, name) == 0)
            return &cfg->keys[i];
    }
    for (unsigned i = 0; t != NULL && i < t->nkeys; i++) {
        if (strcmp(t->keys[i].name, name) == 0)
            return &t->keys[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------ values */

static const char *const limit_names[] = { "rpm", "burst", "concurrency", "daily_seconds" };
static const int64_t limit_max[] = { 100000, 1000000, 1000000, 100000000 }; /* config.c's */

const char *gw_keytab_limit_name(enum gw_key_limit which)
{
    return (unsigned)which < 4 ? limit_names[which] : "?";
}

int gw_keytab_check_limit(enum gw_key_limit which, int64_t v, struct gw_error *err)
{
    if ((unsigned)which >= 4)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", NULL,
                            "unknown limit");
    if (v < -1 || v > limit_max[which])
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value",
                            limit_names[which],
                            "Invalid '%s': expected an integer 0..%lld (0: unlimited), or "
                            "null for the [limits] default",
                            limit_names[which], (long long)limit_max[which]);
    return GW_OK;
}

/* Days since 1970-01-01 of a civil date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static int digits(const char *s, int n, int *out)
{
    *out = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        *out = *out * 10 + (s[i] - '0');
    }
    return 1;
}

int gw_keytab_parse_expires(const char *s, int64_t now, int64_t *out, struct gw_error *err)
{
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    size_t len = s != NULL ? strlen(s) : 0;
    int y, mo, d, h = 0, mi = 0, se = 0;

    if (!((len == 10 || (len == 20 && s[10] == 'T' && s[13] == ':' && s[16] == ':' &&
                         s[19] == 'Z')) &&
          s[4] == '-' && s[7] == '-' && digits(s, 4, &y) && digits(s + 5, 2, &mo) &&
          digits(s + 8, 2, &d) &&
          (len == 10 || (digits(s + 11, 2, &h) && digits(s + 14, 2, &mi) &&
                         digits(s + 17, 2, &se)))) ||
        mo < 1 || mo > 12 || d < 1 ||
        d > mdays[mo - 1] + (mo == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) ||
        h > 23 || mi > 59 || se > 59)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "expires",
                            "Invalid 'expires': expected a date YYYY-MM-DD (00:00 UTC) or "
                            "YYYY-MM-DDTHH:MM:SSZ, or null for never");
    *out = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
    if (*out <= now)
        return gw_error_set(err, 400, "invalid_request_error", "invalid_value", "expires",
                            "Invalid 'expires': it is in the past (a key that expires now "
                            "would be refused at once; revoke it instead)");
    return GW_OK;
}
