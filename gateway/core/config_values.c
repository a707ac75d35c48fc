/*
 * config_values.c - one value of the configuration file: its parser, its setter
 * and what it must look like. Pure: stdio and the environment only.
 *
 * conf_set() takes the text of one value for one directive (config.c's table) and
 * either stores it in the instance being read (a gw_config, gw_model or
 * gw_team_key) or reports "expected ..., got ..." with the directive's shape
 * (conf_expect). The parsers below it return GW_OK or GW_ERR and say nothing; the
 * setters that can fail in more than one way (a URL, a secret, a file) report
 * their own errors. Secrets and key hashes are never echoed.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_int.h"

#define CONF_SECRET_MAX  4096   /* bytes of an upstream key */

/* Enum-typed fields are written through an int. */
_Static_assert(sizeof(enum gw_fallback) == sizeof(int), "enum gw_fallback is not int-sized");
_Static_assert(sizeof(enum gw_family) == sizeof(int), "enum gw_family is not int-sized");
_Static_assert(sizeof(enum gw_store_backend) == sizeof(int), "enum gw_store_backend is not int-sized");
_Static_assert(sizeof(enum gw_store_failure) == sizeof(int), "enum gw_store_failure is not int-sized");

/* ------------------------------------------------------------------------------------------ */
/* What a value must look like: the "expected ..." of its errors                              */

/* Bounds in the units people write: "1k", "64m", "100ms", "1h". */
struct conf_unit {
    long long factor;
    const char *suffix;
};

/* n in the largest unit that divides it exactly (units largest first, the last
 * one of factor 1). */
static const char *conf_fmt_units(char *buf, size_t cap, long long n, const struct conf_unit *u)
{
    while (u->factor > 1 && (n == 0 || n % u->factor != 0))
        u++;
    snprintf(buf, cap, "%lld%s", n / u->factor, u->suffix);
    return buf;
}

static const char *conf_fmt_size(char *buf, size_t cap, long long n)
{
    static const struct conf_unit units[] = { { GIB, "g" }, { MIB, "m" }, { KIB, "k" }, { 1, "" } };
    return conf_fmt_units(buf, cap, n, units);
}

static const char *conf_fmt_ms(char *buf, size_t cap, long long ms)
{
    static const struct conf_unit units[] = {
        { DAY, "d" }, { HOUR, "h" }, { MIN, "m" }, { SEC, "s" }, { 1, "ms" },
    };
    return conf_fmt_units(buf, cap, ms, units);
}

/* What a directive accepts, as the "expected ..." part of its errors. */
const char *conf_expect(const struct conf_directive *d, char *buf, size_t cap)
{
    char lo[32], hi[32];
    size_t off;

    switch (d->type) {
    case CONF_FILE:
        return "a readable file";
    case CONF_DIR:
        return "a directory path";
    case CONF_LOG:
        return "-, off or a file path";
    case CONF_BOOL:
        return "on|off|true|false|yes|no|1|0";
    case CONF_INT:
        snprintf(buf, cap, "integer %lld..%lld", d->min, d->max);
        return buf;
    case CONF_SIZE:
        snprintf(buf, cap, "size %s..%s (bytes, or with a k/m/g suffix)",
                 conf_fmt_size(lo, sizeof(lo), d->min), conf_fmt_size(hi, sizeof(hi), d->max));
        return buf;
    case CONF_DURATION:
        snprintf(buf, cap, "duration %s..%s (with a ms/s/m/h suffix)",
                 conf_fmt_ms(lo, sizeof(lo), d->min), conf_fmt_ms(hi, sizeof(hi), d->max));
        return buf;
    case CONF_ENUM:
        off = (size_t)snprintf(buf, cap, "one of ");
        for (unsigned i = 0; d->names[i] != NULL && off < cap; i++)
            off += (size_t)snprintf(buf + off, cap - off, "%s%s", i ? "|" : "", d->names[i]);
        return buf;
    case CONF_LISTEN:
        return "HOST:PORT with PORT 1..65535 (IPv6 as [ADDR]:PORT)";
    case CONF_URL:
        return "http(s)://HOST[:PORT][/BASE]";
    case CONF_SECRET:
        return "env:NAME or file:PATH";
    case CONF_SECONDS:
        snprintf(buf, cap, "a comma list of at most %d integers %lld..%lld",
                 GW_CATALOG_MAX_LIST, d->min, d->max);
        return buf;
    case CONF_SIZES:
        snprintf(buf, cap, "a comma list of at most %d WIDTHxHEIGHT sizes", GW_CATALOG_MAX_LIST);
        return buf;
    case CONF_PATH:
        return "a file path";
    case CONF_LONG_DURATION:
        snprintf(buf, cap, "duration %s..%s (with a ms/s/m/h/d suffix)",
                 conf_fmt_ms(lo, sizeof(lo), d->min), conf_fmt_ms(hi, sizeof(hi), d->max));
        return buf;
    case CONF_DATE:
        return "a date YYYY-MM-DD (UTC)";
    case CONF_NAMES:
        return "a comma-separated list of model names";
    case CONF_SHA256:
        return "64 hex digits (the SHA-256 of the key, never the key)";
    case CONF_REDIS:
        return "HOST:PORT (IPv6 as [ADDR]:PORT) or unix:PATH";
    case CONF_PASSWORD:
        return "env:NAME or file:PATH";
    case CONF_PREFIX:
        return "1..64 characters of A-Za-z0-9 and :_.-{}";
    }
    return "?";
}

/* A secret and a key hash are never echoed: they might be the key itself. */
int conf_hidden(const struct conf_directive *d)
{
    return d->type == CONF_SECRET || d->type == CONF_SHA256 || d->type == CONF_PASSWORD;
}

static void conf_bad(struct conf_loader *ld, struct conf_loc at, const char *label,
                     const struct conf_directive *d, const char *v)
{
    char exp[160], q[CONF_QUOTE_BUF];

    if (conf_hidden(d))
        conf_error(ld, at, label, "expected %s, got %zu characters (not shown)",
                   conf_expect(d, exp, sizeof(exp)), strlen(v));
    else
        conf_error(ld, at, label, "expected %s, got %s", conf_expect(d, exp, sizeof(exp)),
                   conf_quote(q, v));
}

/* ------------------------------------------------------------------------------------------ */
/* Value parsers: GW_OK or GW_ERR, no messages (the caller knows what was expected)          */

static int conf_digits(const char **pp, unsigned long long *out)
{
    const char *p = *pp;
    unsigned long long n = 0;

    if (!isdigit((unsigned char)*p))
        return GW_ERR;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');

        if (n > (ULLONG_MAX - d) / 10)
            return GW_ERR;
        n = n * 10 + d;
    }
    *pp = p;
    *out = n;
    return GW_OK;
}

static int conf_parse_int(const char *v, long long *out)
{
    unsigned long long n;
    int neg = *v == '-';

    if (neg)
        v++;
    if (conf_digits(&v, &n) != GW_OK || *v != '\0' || n > (unsigned long long)LLONG_MAX)
        return GW_ERR;
    *out = neg ? -(long long)n : (long long)n;
    return GW_OK;
}

/* "1048576", "256k", "2g" (k/m/g are powers of 1024, either case). */
static int conf_parse_size(const char *v, unsigned long long *out)
{
    unsigned long long n, mult = 1;

    if (conf_digits(&v, &n) != GW_OK)
        return GW_ERR;
    switch (*v) {
    case '\0':
        break;
    case 'k': case 'K':
        mult = KIB;
        break;
    case 'm': case 'M':
        mult = MIB;
        break;
    case 'g': case 'G':
        mult = GIB;
        break;
    default:
        return GW_ERR;
    }
    if (*v != '\0' && v[1] != '\0')
        return GW_ERR;
    if (n > ULLONG_MAX / mult)
        return GW_ERR;
    *out = n * mult;
    return GW_OK;
}

/* "250ms", "5s", "2m", "1h" into ms; the unit is required (a bare 60 is ambiguous). */
static int conf_parse_duration(const char *v, long long *ms)
{
    unsigned long long n, mult;

    if (conf_digits(&v, &n) != GW_OK)
        return GW_ERR;
    if (strcmp(v, "ms") == 0)
        mult = 1;
    else if (strcmp(v, "s") == 0)
        mult = SEC;
    else if (strcmp(v, "m") == 0)
        mult = MIN;
    else if (strcmp(v, "h") == 0)
        mult = HOUR;
    else if (strcmp(v, "d") == 0)
        mult = DAY;
    else
        return GW_ERR;
    if (n > (unsigned long long)LLONG_MAX / mult)
        return GW_ERR;
    *ms = (long long)(n * mult);
    return GW_OK;
}

static int conf_parse_bool(const char *v, int *out)
{
    static const char *const yes[] = { "on", "true", "yes", "1" };
    static const char *const no[] = { "off", "false", "no", "0" };

    for (unsigned i = 0; i < GW_ARRAY_LEN(yes); i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = 1;
            return GW_OK;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = 0;
            return GW_OK;
        }
    }
    return GW_ERR;
}

/* 1..max bytes of [A-Za-z0-9] and the characters of `extra`. */
int conf_valid_name(const char *s, size_t len, size_t max, const char *extra)
{
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && (s[i] == '\0' || strchr(extra, s[i]) == NULL))
            return 0;
    }
    return 1;
}

static int conf_parse_port(const char *s, size_t len, int *port)
{
    int n = 0;

    if (len == 0 || len > 5)
        return GW_ERR;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return GW_ERR;
        n = n * 10 + (s[i] - '0');
    }
    if (n < 1 || n > 65535)
        return GW_ERR;
    *port = n;
    return GW_OK;
}

struct conf_hostport {
    const char *host; /* without brackets; borrowed from the parsed string */
    size_t hostlen;
    int port;         /* -1 when absent */
};

/* An IPv6 literal, optionally with a %zone: hex digits, ':' and '.' (IPv4 tail). */
static int conf_valid_ipv6(const char *s, size_t len)
{
    const char *zone = memchr(s, '%', len);
    size_t addrlen = zone ? (size_t)(zone - s) : len;

    if (addrlen < 2 || addrlen > 45 || memchr(s, ':', addrlen) == NULL)
        return 0;
    for (size_t i = 0; i < addrlen; i++) {
        if (!isxdigit((unsigned char)s[i]) && s[i] != ':' && s[i] != '.')
            return 0;
    }
    return zone == NULL || conf_valid_name(zone + 1, len - addrlen - 1, 64, "._-");
}

/* HOST[:PORT] or [IPV6][:PORT] in s[0..len). GW_ERR when malformed. */
static int conf_parse_hostport(const char *s, size_t len, struct conf_hostport *hp)
{
    const char *end = s + len;
    const char *p;

    hp->port = -1;
    if (len > 0 && s[0] == '[') {
        p = memchr(s, ']', len);
        if (p == NULL)
            return GW_ERR;
        hp->host = s + 1;
        hp->hostlen = (size_t)(p - s - 1);
        if (!conf_valid_ipv6(hp->host, hp->hostlen))
            return GW_ERR;
        p++;
    } else {
        p = memchr(s, ':', len);
        if (p == NULL)
            p = end;
        hp->host = s;
        hp->hostlen = (size_t)(p - s);
        if (!conf_valid_name(hp->host, hp->hostlen, 253, "._-"))
            return GW_ERR;
    }
    if (p == end)
        return GW_OK;
    if (*p != ':')
        return GW_ERR;
    p++;
    return conf_parse_port(p, (size_t)(end - p), &hp->port);
}

/* ------------------------------------------------------------------------------------------ */
/* Setters                                                                                    */

/* A path written in `file`: absolute as is, relative to file's directory. */
char *conf_path(const char *file, const char *p)
{
    const char *slash = strrchr(file, '/');
    size_t dirlen, plen;
    char *r;

    if (p[0] == '/' || slash == NULL)
        return conf_strdup(p);
    dirlen = (size_t)(slash - file) + 1;
    plen = strlen(p);
    r = conf_malloc(dirlen + plen + 1);
    if (r != NULL) {
        memcpy(r, file, dirlen);
        memcpy(r + dirlen, p, plen + 1);
    }
    return r;
}

static void conf_replace(char **field, char *v)
{
    free(*field);
    *field = v;
}

/* CONF_FILE, CONF_DIR, CONF_LOG. */
static void conf_set_path(struct conf_loader *ld, struct conf_loc at, const char *label,
                          const struct conf_directive *d, char **field, const char *v)
{
    char q[CONF_QUOTE_BUF];
    char *path;
    FILE *fp;

    if (*v == '\0') {
        conf_bad(ld, at, label, d, v);
        return;
    }
    if (d->type == CONF_LOG && (strcmp(v, "-") == 0 || strcmp(v, "off") == 0))
        path = conf_strdup(v);
    else
        path = conf_path(at.file, v);
    if (path == NULL) {
        conf_oom(ld, at);
        return;
    }
    if (d->type == CONF_FILE) {
        /* Checked now so that `gateway -t` finds it, not the first TLS handshake. */
        fp = fopen(path, "r");
        if (fp == NULL) {
            conf_error(ld, at, label, "expected a readable file, got %s (%s)",
                       conf_quote(q, path), strerror(errno));
            free(path);
            return;
        }
        fclose(fp);
    }
    conf_replace(field, path);
}

static int conf_set_listen(struct conf_loader *ld, struct conf_loc at, struct gw_listen *l,
                           const char *v)
{
    struct conf_hostport hp;
    char *host;

    if (conf_parse_hostport(v, strlen(v), &hp) != GW_OK || hp.port < 0)
        return GW_ERR;
    host = conf_strndup(hp.host, hp.hostlen);
    if (host == NULL) {
        conf_oom(ld, at);
        return GW_OK;
    }
    conf_replace(&l->host, host);
    l->port = hp.port;
    return GW_OK;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm). */
static long long conf_days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

/* YYYY-MM-DD, a real calendar date from 1970 to 9999 -> UTC ms of its midnight. */
static int conf_parse_date(const char *v, int64_t *ms)
{
    static const unsigned mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    unsigned y, m, d;

    if (strlen(v) != 10 || v[4] != '-' || v[7] != '-')
        return GW_ERR;
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !isdigit((unsigned char)v[i]))
            return GW_ERR;
    }
    y = (unsigned)atoi(v);
    m = (unsigned)atoi(v + 5);
    d = (unsigned)atoi(v + 8);
    if (y < 1970 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return GW_ERR;
    if (m == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
        return GW_ERR;
    *ms = (int64_t)conf_days_from_civil(y, m, d) * DAY;
    return GW_OK;
}

/* A comma list of model names (checked against the catalog once it is complete). */
static int conf_set_names(struct conf_loader *ld, struct conf_loc at, struct gw_names *out,
                          const char *v)
{
    struct gw_names n = { NULL, 0 };
    const char *p = v;

    for (;;) {
        const char *e = p + strcspn(p, ",");
        const char *a = p, *b = e;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if (a == b || !conf_valid_name(a, (size_t)(b - a), CONF_NAME_MAX, "._-"))
            goto bad;
        char **vv = conf_realloc(n.v, (n.n + 1) * sizeof(*n.v));
        if (vv == NULL || (vv[n.n] = conf_strndup(a, (size_t)(b - a))) == NULL) {
            if (vv != NULL)
                n.v = vv;
            conf_oom(ld, at);
            goto free_out;
        }
        n.v = vv;
        n.n++;
        if (*e == '\0')
            break;
        p = e + 1;
    }
    for (unsigned i = 0; i < out->n; i++)
        free(out->v[i]);
    free(out->v);
    *out = n;
    return GW_OK;
bad:
    for (unsigned i = 0; i < n.n; i++)
        free(n.v[i]);
    free(n.v);
    return GW_ERR;
free_out:
    for (unsigned i = 0; i < n.n; i++)
        free(n.v[i]);
    free(n.v);
    return GW_OK; /* reported as out of memory */
}

static void conf_set_url(struct conf_loader *ld, struct conf_loc at, const char *label,
                         struct gw_config *cfg, const char *v)
{
    static const char shape[] = "http(s)://HOST[:PORT][/BASE]";
    struct conf_hostport hp;
    char q[CONF_QUOTE_BUF];
    const char *p = v, *base;
    size_t alen, blen;
    char *url = NULL, *host = NULL, *basecopy = NULL;
    int tls;

    if (strncasecmp(p, "http://", 7) == 0) {
        tls = 0;
        p += 7;
    } else if (strncasecmp(p, "https://", 8) == 0) {
        tls = 1;
        p += 8;
    } else {
        conf_error(ld, at, label, "expected %s (scheme http or https), got %s", shape,
                   conf_quote(q, v));
        goto out;
    }
    alen = strcspn(p, "/");
    if (strpbrk(p, "?#") != NULL || memchr(p, '@', alen) != NULL) {
        conf_error(ld, at, label, "expected %s (no user info, query or fragment), got %s",
                   shape, conf_quote(q, v));
        goto out;
    }
    if (conf_parse_hostport(p, alen, &hp) != GW_OK) {
        conf_error(ld, at, label, "expected %s (a host name, IPv4 or [IPv6] address, "
                   "PORT 1..65535), got %s", shape, conf_quote(q, v));
        goto out;
    }
    base = p + alen;
    blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    for (size_t i = 0; i < blen; i++) {
        if ((unsigned char)base[i] <= 0x20 || (unsigned char)base[i] >= 0x7f) {
            conf_error(ld, at, label, "expected %s (BASE without spaces or control "
                       "characters), got %s", shape, conf_quote(q, v));
            goto out;
        }
    }
    url = conf_strdup(v);
    host = conf_strndup(hp.host, hp.hostlen);
    basecopy = conf_strndup(base, blen);
    if (url == NULL || host == NULL || basecopy == NULL) {
        conf_oom(ld, at);
        goto out;
    }
    conf_replace(&cfg->upstream_url, url);
    conf_replace(&cfg->upstream_host, host);
    conf_replace(&cfg->upstream_base, basecopy);
    url = host = basecopy = NULL;
    cfg->upstream_tls = tls;
    cfg->upstream_port = hp.port > 0 ? hp.port : tls ? 443 : 80;
out:
    free(url);
    free(host);
    free(basecopy);
}

/*
 * Resolve a secret reference v (env:NAME | file:PATH) into buf (cap bytes: at
 * least CONF_SECRET_MAX + 2), *np its length, trailing white space removed.
 * *pathp: the resolved path of a file: reference (caller frees), else NULL.
 * With placeholder, nothing is read: buf holds "-" (gateway usage's refs mode).
 * Errors, reported here, name the reference only. A secret must be one line of
 * visible ASCII: an upstream key goes into an Authorization header, where a CR
 * or LF would inject headers, and a Redis password into a command.
 */
static int conf_read_secret(struct conf_loader *ld, struct conf_loc at, const char *label,
                            const char *v, int placeholder, char *buf, size_t *np,
                            char **pathp)
{
    static const char shape[] = "env:NAME or file:PATH";
    char q[CONF_QUOTE_BUF];
    char *path = NULL;
    const char *ref, *env;
    FILE *fp = NULL;
    size_t n = 0;
    int rc = GW_ERR;

    *pathp = NULL;
    if (strncmp(v, "env:", 4) == 0) {
        ref = v;
        if (!conf_valid_name(v + 4, strlen(v + 4), 128, "_") || isdigit((unsigned char)v[4])) {
            conf_error(ld, at, label, "expected %s with NAME of A-Za-z0-9_, got %s", shape,
                       conf_quote(q, v));
            goto out;
        }
        if (placeholder) {
            buf[0] = '-'; /* a placeholder: the secret is never read in this mode */
            n = 1;
            rc = GW_OK;
            goto out;
        }
        env = getenv(v + 4);
        if (env == NULL) {
            conf_error(ld, at, label, "expected %s naming a set environment variable, "
                       "got %s (not set)", shape, conf_quote(q, ref));
            goto out;
        }
        n = strlen(env);
        if (n > CONF_SECRET_MAX) {
            conf_error(ld, at, label, "expected %s holding at most %d bytes, got %s "
                       "(longer)", shape, CONF_SECRET_MAX, conf_quote(q, ref));
            goto out;
        }
        memcpy(buf, env, n);
    } else if (strncmp(v, "file:", 5) == 0) {
        path = conf_path(at.file, v + 5);
        if (path == NULL) {
            conf_oom(ld, at);
            goto out;
        }
        /* Show the path that was tried, still only a reference. */
        snprintf(buf, CONF_SECRET_MAX + 2, "file:%s", path);
        conf_quote(q, buf);
        if (placeholder) {
            buf[0] = '-';
            n = 1;
            rc = GW_OK;
            goto out;
        }
        if (v[5] == '\0' || (fp = fopen(path, "r")) == NULL) {
            conf_error(ld, at, label, "expected %s naming a readable file, got %s (%s)", shape,
                       q, v[5] == '\0' ? "empty path" : strerror(errno));
            goto out;
        }
        n = fread(buf, 1, CONF_SECRET_MAX + 1, fp);
        if (ferror(fp)) {
            conf_error(ld, at, label, "expected %s naming a readable file, got %s (%s)", shape,
                       q, strerror(errno));
            goto out;
        }
        if (n > CONF_SECRET_MAX) {
            conf_error(ld, at, label, "expected %s holding at most %d bytes, got %s "
                       "(longer)", shape, CONF_SECRET_MAX, q);
            goto out;
        }
        ref = q;
    } else {
        conf_error(ld, at, label, "expected %s (the key itself never goes in the config), "
                   "got %zu characters of neither form (not shown)", shape, strlen(v));
        goto out;
    }
    if (ref == v)
        conf_quote(q, v);
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    if (n == 0) {
        conf_error(ld, at, label, "expected %s holding a key, got %s (empty)", shape, q);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f) {
            conf_error(ld, at, label, "expected %s holding a key of visible ASCII on one line, "
                       "got %s (spaces or control characters)", shape, q);
            goto out;
        }
    }
    rc = GW_OK;
out:
    if (fp != NULL)
        fclose(fp);
    if (rc == GW_OK)
        *pathp = path;
    else
        free(path);
    *np = n;
    return rc;
}

/* upstream.key = env:NAME | file:PATH, appended to upstream_keys (with its label). */
static void conf_set_secret(struct conf_loader *ld, struct conf_loc at, const char *label,
                            struct gw_config *cfg, const char *v)
{
    char buf[CONF_SECRET_MAX + 2];
    char *path = NULL, *secret = NULL, *labelled = NULL, **keys;
    size_t n = 0;

    if (conf_read_secret(ld, at, label, v, ld->no_secrets, buf, &n, &path) != GW_OK)
        goto out;
    if (cfg->nupstream_keys == ld->upkeys_cap) {
        unsigned cap = ld->upkeys_cap ? ld->upkeys_cap * 2 : 4;

        keys = conf_realloc(cfg->upstream_keys, cap * sizeof(*keys));
        if (keys == NULL) {
            conf_oom(ld, at);
            goto out;
        }
        cfg->upstream_keys = keys;
        keys = conf_realloc(cfg->upstream_key_labels, cap * sizeof(*keys));
        if (keys == NULL) {
            conf_oom(ld, at);
            goto out;
        }
        cfg->upstream_key_labels = keys;
        ld->upkeys_cap = cap;
    }
    secret = conf_strndup(buf, n);
    /* the label: the reference, as written for env:, resolved for file: */
    if (path == NULL) {
        labelled = conf_strdup(v);
    } else if ((labelled = conf_malloc(strlen(path) + 6)) != NULL) {
        snprintf(labelled, strlen(path) + 6, "file:%s", path);
    }
    if (secret == NULL || labelled == NULL) {
        if (secret != NULL)
            explicit_bzero(secret, n);
        free(secret);
        free(labelled);
        conf_oom(ld, at);
        goto out;
    }
    cfg->upstream_key_labels[cfg->nupstream_keys] = labelled;
    cfg->upstream_keys[cfg->nupstream_keys++] = secret;
out:
    explicit_bzero(buf, sizeof(buf));
    free(path);
}

/* store.password = env:NAME | file:PATH into *field. Resolved even for gateway
 * usage (refs mode): the tool connects to Redis with it. */
static void conf_set_password(struct conf_loader *ld, struct conf_loc at, const char *label,
                              char **field, const char *v)
{
    char buf[CONF_SECRET_MAX + 2];
    char *path = NULL, *secret;
    size_t n = 0;

    if (conf_read_secret(ld, at, label, v, 0, buf, &n, &path) == GW_OK) {
        if ((secret = conf_strndup(buf, n)) == NULL) {
            conf_oom(ld, at);
        } else {
            if (*field != NULL)
                explicit_bzero(*field, strlen(*field));
            conf_replace(field, secret);
        }
    }
    explicit_bzero(buf, sizeof(buf));
    free(path);
}

/* store.redis = HOST:PORT | [IPV6]:PORT | unix:PATH (PATH relative to the file). */
static int conf_set_redis(struct conf_loader *ld, struct conf_loc at, struct gw_config *cfg,
                          const char *v)
{
    struct conf_hostport hp;
    char *host = NULL, *sock = NULL;

    if (strncmp(v, "unix:", 5) == 0) {
        if (v[5] == '\0' || strlen(v + 5) > 100) /* sun_path holds 108 bytes */
            return GW_ERR;
        if ((sock = conf_path(at.file, v + 5)) == NULL) {
            conf_oom(ld, at);
            return GW_OK;
        }
        conf_replace(&cfg->redis_unix, sock);
        conf_replace(&cfg->redis_host, NULL);
        cfg->redis_port = 0;
        return GW_OK;
    }
    if (conf_parse_hostport(v, strlen(v), &hp) != GW_OK || hp.port < 0)
        return GW_ERR;
    if ((host = conf_strndup(hp.host, hp.hostlen)) == NULL) {
        conf_oom(ld, at);
        return GW_OK;
    }
    conf_replace(&cfg->redis_host, host);
    conf_replace(&cfg->redis_unix, NULL);
    cfg->redis_port = hp.port;
    return GW_OK;
}

/* store.prefix: what every key the gateway writes starts with; no space, no
 * glob character (SCAN MATCH patterns are built from it). */
static int conf_set_prefix(struct conf_loader *ld, struct conf_loc at, char **field,
                           const char *v)
{
    size_t len = strlen(v);
    char *p;

    if (len < 1 || len > 64 || !conf_valid_name(v, len, 64, ":_.-{}"))
        return GW_ERR;
    if ((p = conf_strdup(v)) == NULL)
        conf_oom(ld, at);
    else
        conf_replace(field, p);
    return GW_OK;
}

static int conf_valid_list_item(enum conf_type type, const char *s, size_t len)
{
    const char *x;

    if (type == CONF_SECONDS) {
        /* 1..CONF_SECONDS_MAX, no leading zero: clients' values are matched as strings */
        if (len == 0 || len > 4 || s[0] == '0')
            return 0;
        for (size_t i = 0; i < len; i++) {
            if (!isdigit((unsigned char)s[i]))
                return 0;
        }
        return atoi(s) <= CONF_SECONDS_MAX; /* s is followed by ',' or NUL */
    }
    /* WIDTHxHEIGHT, each 1..5 digits without a leading zero */
    x = memchr(s, 'x', len);
    if (x == NULL)
        return 0;
    for (int side = 0; side < 2; side++) {
        const char *p = side ? x + 1 : s;
        size_t n = side ? len - (size_t)(x - s) - 1 : (size_t)(x - s);

        if (n == 0 || n > 5 || p[0] == '0')
            return 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)p[i]))
                return 0;
        }
    }
    return 1;
}

/* seconds / sizes: a comma list, spaces around items allowed. GW_ERR when invalid. */
static int conf_set_list(struct conf_loader *ld, struct conf_loc at,
                         const struct conf_directive *d, struct gw_model *m, const char *v)
{
    enum conf_type type = d->type;
    int ext = d->offset == offsetof(struct gw_model, extend_seconds) && type == CONF_SECONDS;
    char *tmp[GW_CATALOG_MAX_LIST];
    char **list = ext ? m->extend_seconds : type == CONF_SECONDS ? m->seconds : m->sizes;
    unsigned *count = ext ? &m->nextend_seconds
                      : type == CONF_SECONDS ? &m->nseconds : &m->nsizes;
    unsigned n = 0;
    int rc = GW_ERR;

    for (const char *p = v;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);

        while (len > 0 && isspace((unsigned char)*p)) {
            p++;
            len--;
        }
        while (len > 0 && isspace((unsigned char)p[len - 1]))
            len--;
        if (n == GW_CATALOG_MAX_LIST || !conf_valid_list_item(type, p, len))
            goto out;
        tmp[n] = conf_strndup(p, len);
        if (tmp[n] == NULL) {
            conf_oom(ld, at);
            rc = GW_OK;
            goto out;
        }
        n++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    for (unsigned i = 0; i < *count; i++)
        free(list[i]);
    memcpy(list, tmp, n * sizeof(*tmp));
    *count = n;
    n = 0;
    rc = GW_OK;
out:
    for (unsigned i = 0; i < n; i++)
        free(tmp[i]);
    return rc;
}

static int conf_set_sha256(unsigned char *out, const char *v)
{
    unsigned char tmp[32];

    if (strlen(v) != 64)
        return GW_ERR;
    for (unsigned i = 0; i < 32; i++) {
        int hi = gw_hexval((unsigned char)v[2 * i]), lo = gw_hexval((unsigned char)v[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return GW_ERR;
        tmp[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(out, tmp, sizeof(tmp));
    return GW_OK;
}

/* Parse v for d into the instance at base (gw_config, gw_model or gw_team_key). */
void conf_set(struct conf_loader *ld, struct conf_loc at, const char *label,
              const struct conf_directive *d, void *base, const char *v)
{
    char *field = (char *)base + d->offset;
    unsigned long long u;
    long long n;
    int b;

    switch (d->type) {
    case CONF_FILE:
    case CONF_DIR:
    case CONF_LOG:
        conf_set_path(ld, at, label, d, (char **)(void *)field, v);
        return;
    case CONF_BOOL:
        if (conf_parse_bool(v, &b) != GW_OK)
            break;
        *(int *)(void *)field = b;
        return;
    case CONF_INT:
        if (conf_parse_int(v, &n) != GW_OK || n < d->min || n > d->max)
            break;
        *(int *)(void *)field = (int)n;
        return;
    case CONF_SIZE:
        if (conf_parse_size(v, &u) != GW_OK || u < (unsigned long long)d->min ||
            u > (unsigned long long)d->max)
            break;
        *(size_t *)(void *)field = (size_t)u;
        return;
    case CONF_DURATION:
        if (conf_parse_duration(v, &n) != GW_OK || n < d->min || n > d->max)
            break;
        *(int *)(void *)field = (int)n;
        return;
    case CONF_ENUM:
        for (int i = 0; d->names[i] != NULL; i++) {
            if (strcasecmp(v, d->names[i]) == 0) {
                *(int *)(void *)field = i;
                return;
            }
        }
        break;
    case CONF_LISTEN:
        if (conf_set_listen(ld, at, (struct gw_listen *)(void *)field, v) == GW_OK)
            return;
        break;
    case CONF_PATH:
        if (*v == '\0')
            break;
        conf_set_path(ld, at, label, d, (char **)(void *)field, v);
        return;
    case CONF_LONG_DURATION:
        if (conf_parse_duration(v, &n) != GW_OK || n < d->min || n > d->max)
            break;
        *(int64_t *)(void *)field = (int64_t)n;
        return;
    case CONF_DATE:
        if (conf_parse_date(v, (int64_t *)(void *)field) == GW_OK)
            return;
        break;
    case CONF_NAMES:
        if (conf_set_names(ld, at, (struct gw_names *)(void *)field, v) == GW_OK)
            return;
        break;
    case CONF_URL:
        conf_set_url(ld, at, label, base, v);
        return;
    case CONF_SECRET:
        conf_set_secret(ld, at, label, base, v);
        return;
    case CONF_SECONDS:
    case CONF_SIZES:
        if (conf_set_list(ld, at, d, base, v) == GW_OK)
            return;
        break;
    case CONF_SHA256:
        if (conf_set_sha256((unsigned char *)field, v) == GW_OK)
            return;
        break;
    case CONF_REDIS:
        if (conf_set_redis(ld, at, base, v) == GW_OK)
            return;
        break;
    case CONF_PASSWORD:
        conf_set_password(ld, at, label, (char **)(void *)field, v);
        return;
    case CONF_PREFIX:
        if (conf_set_prefix(ld, at, (char **)(void *)field, v) == GW_OK)
            return;
        break;
    }
    conf_bad(ld, at, label, d, v);
}
