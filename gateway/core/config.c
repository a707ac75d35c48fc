/*
 * config.c - the configuration file, read with inih into one struct gw_config that
 * is never changed afterwards (a reload loads a new one and swaps it whole). Pure:
 * stdio and the environment only.
 *
 * Directives are a table (section, name, type, offset, default, bounds), as in
 * nginx's ngx_command_t: one generic path applies the defaults, parses values,
 * refuses duplicates and reports missing required settings. Every error is
 * reported, not only the first, one per line:
 *
 *     gateway.conf:42: server.threads: expected integer 0..64, got "ten"
 *
 * and never with a secret in it: upstream.key errors show only the env:/file:
 * reference, sha256 errors only the value's length, malformed lines are not echoed
 * (they could be a key pasted on its own line).
 *
 * inih splits "key = value" and strips inline comments. Our reader sits in front
 * of it (ini_parse_stream) and sees every raw line first, which is how we
 *   - count lines: Debian's libinih is built without INI_HANDLER_LINENO, and inih
 *     calls the reader exactly once per line, then the handler for that line;
 *   - track sections ourselves: inih cuts a section name to 49 bytes, and
 *     [key NAME] allows 64 bytes of NAME;
 *   - report every malformed line: inih would only return the first one's number;
 *   - strip leading whitespace, so an indented line is never taken for a
 *     multi-line continuation of the previous value (inih's default, which would
 *     turn "  threads = 4" into more text of the line before).
 * So inih only ever sees blank lines and well-formed "key = value" lines.
 *
 * Relative paths (include, file: secrets, tls_cert, tls_key, ca_file, spool_dir,
 * access_log) are relative to the directory of the file they are written in.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#include "config.h"

#define CONF_MAX_INCLUDE 4      /* nested include levels below the main file */
#define CONF_READ_LINE   1024   /* raw line buffer; inih's own limit is lower (num - 2) */
#define CONF_SECRET_MAX  4096   /* bytes of an upstream key */
#define CONF_QUOTE_MAX   80     /* bytes of a value echoed in an error message */
#define CONF_QUOTE_BUF   (CONF_QUOTE_MAX * 4 + 8)
#define CONF_LABEL_BUF   256
#define CONF_NAME_MAX    128    /* model and alias names */
#define CONF_KEYNAME_MAX 64     /* [key NAME] */
#define CONF_SECONDS_MAX 3600   /* largest value in a seconds list */
#define CONF_DEFAULT     "(built-in default)"

/* Enum-typed fields are written through an int. */
_Static_assert(sizeof(enum gw_fallback) == sizeof(int), "enum gw_fallback is not int-sized");
_Static_assert(sizeof(enum gw_family) == sizeof(int), "enum gw_family is not int-sized");

/* ------------------------------------------------------------------------------------------ */
/* Allocation, with the test hook that fails the n-th call                                   */

/* Plain statics: configs are loaded by one thread (at startup and on SIGHUP, in the
 * main loop), never concurrently. */
static long alloc_fail_at = -1; /* index of the allocation to fail, -1: none */
static long alloc_count;        /* allocations since the last gw_config_test_fail_alloc() */

long gw_config_test_fail_alloc(long n)
{
    long count = alloc_count;

    alloc_fail_at = n;
    alloc_count = 0;
    return count;
}

static int conf_alloc_fails(void)
{
    return alloc_count++ == alloc_fail_at;
}

static void *conf_malloc(size_t n)
{
    return conf_alloc_fails() ? NULL : malloc(n);
}

static void *conf_calloc(size_t n, size_t size)
{
    return conf_alloc_fails() ? NULL : calloc(n, size);
}

static void *conf_realloc(void *p, size_t n)
{
    return conf_alloc_fails() ? NULL : realloc(p, n);
}

static char *conf_strndup(const char *s, size_t n)
{
    char *d = conf_malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static char *conf_strdup(const char *s)
{
    return conf_strndup(s, strlen(s));
}

/* ------------------------------------------------------------------------------------------ */
/* The directive table                                                                        */

enum conf_type {
    CONF_FILE = 0,  /* char *: a readable file (path resolved) */
    CONF_DIR,       /* char *: a directory path (resolved; checked when used) */
    CONF_LOG,       /* char *: "-", "off" or a path (resolved) */
    CONF_BOOL,      /* int: 0 or 1 */
    CONF_INT,       /* int in min..max */
    CONF_SIZE,      /* size_t: bytes in min..max, k/m/g suffix */
    CONF_DURATION,  /* int: ms in min..max, ms/s/m/h suffix required */
    CONF_ENUM,      /* int: index of the value in names[] (any case) */
    CONF_LISTEN,    /* HOST:PORT into listen_host, listen_port (offset unused) */
    CONF_URL,       /* http(s)://HOST[:PORT][/BASE] into upstream_* (offset unused) */
    CONF_SECRET,    /* env:NAME | file:PATH appended to upstream_keys (offset unused) */
    CONF_SECONDS,   /* comma list of integers into gw_model.seconds (offset unused) */
    CONF_SIZES,     /* comma list of WxH into gw_model.sizes (offset unused) */
    CONF_SHA256,    /* 64 hex digits into 32 bytes */
    CONF_PATH,      /* char *: any path (resolved; created or checked when used) */
    CONF_LONG_DURATION, /* int64_t: ms in min..max, ms/s/m/h/d suffix required */
    CONF_DATE,      /* int64_t: YYYY-MM-DD as the UTC ms of its midnight */
    CONF_NAMES,     /* struct gw_names: comma list of names */
};

enum conf_section {
    SEC_TOP = 0,  /* before any [section]: only include */
    SEC_SERVER,
    SEC_UPSTREAM,
    SEC_MODELS,
    SEC_ALIASES,  /* free-form FRIENDLY = MODELNAME */
    SEC_STORE,
    SEC_JOBS,
    SEC_ADMIN,
    SEC_LIMITS,
    SEC_MODEL,    /* [model NAME]: fields of a struct gw_model */
    SEC_KEY,      /* [key NAME]: fields of a struct gw_team_key */
    SEC_SKIP,     /* after a bad section header (reported): its keys are ignored */
};

static const char *const conf_section_names[] = {
    [SEC_TOP] = "top level", [SEC_SERVER] = "server",   [SEC_UPSTREAM] = "upstream",
    [SEC_MODELS] = "models",  [SEC_ALIASES] = "aliases", [SEC_STORE] = "store",
    [SEC_JOBS] = "jobs",      [SEC_ADMIN] = "admin",     [SEC_LIMITS] = "limits",
    [SEC_MODEL] = "model",
    [SEC_KEY] = "key",        [SEC_SKIP] = "?",
};

#define CONF_REQUIRED 0x1 /* missing after the whole file: an error */
#define CONF_MULTI    0x2 /* may repeat; each value is added */

struct conf_directive {
    enum conf_section section;
    const char *name;
    enum conf_type type;
    size_t offset;            /* into gw_config, gw_model or gw_team_key, by section */
    const char *dflt;         /* parsed like a value from the file, first; NULL: none */
    long long min, max;       /* CONF_INT, CONF_SIZE (bytes), CONF_DURATION (ms) */
    const char *const *names; /* CONF_ENUM: accepted words, NULL-terminated; index = value */
    unsigned flags;
};

static const char *const fallback_names[] = { "chunked", "spool", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };
static const char *const unknown_names[] = { "reject", "pass", NULL }; /* = allow_unknown */
static const char *const family_names[] = { "first", "frames", "components", NULL };
static const char *const sync_names[] = { "normal", "full", NULL }; /* = store_sync_full */
static const int family_images[] = { 1, 2, 3 }; /* max input_reference images per family */

#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)
#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define LIMIT_MAX 1000000 /* burst, concurrency */
#define RPM_MAX 100000    /* = GW_GCRA_RPM_MAX: what the limiter can count */

#define CFG(f) offsetof(struct gw_config, f)
#define KEY(f) offsetof(struct gw_team_key, f)

static const struct conf_directive conf_directives[] = {
    /* section, name, type, offset, default, min, max, names, flags */
    { SEC_SERVER, "listen", CONF_LISTEN, CFG(listen), "127.0.0.1:8080", 0, 0, NULL, 0 },
    { SEC_SERVER, "threads", CONF_INT, CFG(threads), "0", 0, 64, NULL, 0 },
    { SEC_SERVER, "tls_cert", CONF_FILE, CFG(tls_cert), NULL, 0, 0, NULL, 0 },
    { SEC_SERVER, "tls_key", CONF_FILE, CFG(tls_key), NULL, 0, 0, NULL, 0 },
    { SEC_SERVER, "max_body", CONF_SIZE, CFG(max_body), "2g", KIB, 1024 * GIB, NULL, 0 },
    { SEC_SERVER, "max_json_body", CONF_SIZE, CFG(max_json_body), "1m", KIB, 64 * MIB, NULL,
      0 },
    { SEC_SERVER, "max_header_bytes", CONF_SIZE, CFG(max_header_bytes), "32k", KIB, MIB, NULL,
      0 },
    { SEC_SERVER, "lookahead", CONF_SIZE, CFG(lookahead), "256k", 0, 64 * MIB, NULL, 0 },
    { SEC_SERVER, "fallback", CONF_ENUM, CFG(fallback), "chunked", 0, 0, fallback_names, 0 },
    { SEC_SERVER, "spool_dir", CONF_DIR, CFG(spool_dir), "/tmp", 0, 0, NULL, 0 },
    { SEC_SERVER, "client_timeout", CONF_DURATION, CFG(client_timeout_ms), "60s", SEC, HOUR,
      NULL, 0 },
    { SEC_SERVER, "header_timeout", CONF_DURATION, CFG(header_timeout_ms), "10s", 100, HOUR,
      NULL, 0 },
    { SEC_SERVER, "access_log", CONF_LOG, CFG(access_log), "-", 0, 0, NULL, 0 },
    { SEC_SERVER, "log_level", CONF_ENUM, CFG(log_level), "info", 0, 0, level_names, 0 },

    { SEC_UPSTREAM, "url", CONF_URL, 0, NULL, 0, 0, NULL, CONF_REQUIRED },
    { SEC_UPSTREAM, "ca_file", CONF_FILE, CFG(ca_file), NULL, 0, 0, NULL, 0 },
    { SEC_UPSTREAM, "tls_verify", CONF_BOOL, CFG(tls_verify), "on", 0, 0, NULL, 0 },
    { SEC_UPSTREAM, "connect_timeout", CONF_DURATION, CFG(connect_timeout_ms), "5s", 100,
      5 * MIN, NULL, 0 },
    { SEC_UPSTREAM, "response_timeout", CONF_DURATION, CFG(response_timeout_ms), "120s", SEC,
      HOUR, NULL, 0 },
    { SEC_UPSTREAM, "idle_timeout", CONF_DURATION, CFG(idle_timeout_ms), "30s", SEC, HOUR,
      NULL, 0 },
    { SEC_UPSTREAM, "pool_size", CONF_INT, CFG(pool_size), "16", 0, 1024, NULL, 0 },
    { SEC_UPSTREAM, "key", CONF_SECRET, 0, NULL, 0, 0, NULL, CONF_REQUIRED | CONF_MULTI },

    { SEC_MODELS, "unknown", CONF_ENUM, CFG(catalog.allow_unknown), "reject", 0, 0,
      unknown_names, 0 },

    { SEC_MODEL, "family", CONF_ENUM, offsetof(struct gw_model, family), NULL, 0, 0,
      family_names, CONF_REQUIRED },
    { SEC_MODEL, "seconds", CONF_SECONDS, 0, NULL, 1, CONF_SECONDS_MAX, NULL, 0 },
    { SEC_MODEL, "sizes", CONF_SIZES, 0, NULL, 0, 0, NULL, 0 },

    { SEC_STORE, "path", CONF_PATH, CFG(store_path), NULL, 0, 0, NULL, 0 },
    { SEC_STORE, "synchronous", CONF_ENUM, CFG(store_sync_full), "normal", 0, 0, sync_names,
      0 },

    { SEC_JOBS, "refresh", CONF_DURATION, CFG(jobs_refresh_ms), "30s", SEC, DAY, NULL, 0 },
    { SEC_JOBS, "retention", CONF_LONG_DURATION, CFG(jobs_retention_ms), "30d", HOUR,
      3650 * DAY, NULL, 0 },

    { SEC_ADMIN, "listen", CONF_LISTEN, CFG(admin), NULL, 0, 0, NULL, 0 },

    { SEC_LIMITS, "rpm", CONF_INT, CFG(limits.rpm), "0", 0, RPM_MAX, NULL, 0 },
    { SEC_LIMITS, "burst", CONF_INT, CFG(limits.burst), "0", 0, LIMIT_MAX, NULL, 0 },
    { SEC_LIMITS, "concurrency", CONF_INT, CFG(limits.concurrency), "0", 0, LIMIT_MAX, NULL,
      0 },
    { SEC_LIMITS, "daily_seconds", CONF_INT, CFG(limits.daily_seconds), "0", 0, 100000000,
      NULL, 0 },
    { SEC_LIMITS, "upstream_rpm", CONF_INT, CFG(upstream_rpm), "0", 0, RPM_MAX, NULL, 0 },
    { SEC_LIMITS, "upstream_queue", CONF_DURATION, CFG(upstream_queue_ms), "10s", 0, 10 * MIN,
      NULL, 0 },

    { SEC_KEY, "sha256", CONF_SHA256, KEY(sha256), NULL, 0, 0, NULL, CONF_REQUIRED },
    { SEC_KEY, "rpm", CONF_INT, KEY(limits.rpm), NULL, 0, RPM_MAX, NULL, 0 },
    { SEC_KEY, "burst", CONF_INT, KEY(limits.burst), NULL, 0, LIMIT_MAX, NULL, 0 },
    { SEC_KEY, "concurrency", CONF_INT, KEY(limits.concurrency), NULL, 0, LIMIT_MAX, NULL, 0 },
    { SEC_KEY, "daily_seconds", CONF_INT, KEY(limits.daily_seconds), NULL, 0, 100000000, NULL,
      0 },
    { SEC_KEY, "models", CONF_NAMES, KEY(models), NULL, 0, 0, NULL, 0 },
    { SEC_KEY, "expires", CONF_DATE, KEY(expires_ms), NULL, 0, 0, NULL, 0 },
    { SEC_KEY, "admin", CONF_BOOL, KEY(admin), NULL, 0, 0, NULL, 0 },
};

#define CONF_NDIRECTIVES GW_ARRAY_LEN(conf_directives)
_Static_assert(CONF_NDIRECTIVES <= 64, "the seen masks are 64-bit");

/* ------------------------------------------------------------------------------------------ */
/* Loading state                                                                              */

struct conf_loc {
    const char *file; /* borrowed from conf_loader.files (or CONF_DEFAULT) */
    int line;         /* 0: no line (a built-in default, or a whole-file check) */
};

/* What was set, and where, in one instance: the config, one model or one key. */
struct conf_inst {
    struct conf_loc at;                      /* its [section] header */
    uint64_t seen;                           /* bit i: conf_directives[i] was set */
    struct conf_loc set_at[CONF_NDIRECTIVES];
};

struct conf_alias {
    char *from;
    char *to;
    struct conf_loc at;
};

struct conf_loader {
    struct gw_config *cfg;
    FILE *errs;                  /* may be NULL */
    unsigned nerrors;
    int oom;                     /* "out of memory" was reported */
    char **files;                /* every file read: what conf_loc.file points into */
    unsigned nfiles, files_cap;
    struct conf_inst top;        /* [server], [upstream], [models] */
    struct conf_loc section_at[SEC_SKIP]; /* first header of each plain section */
    struct conf_inst *minst;     /* parallel to cfg->catalog.models */
    unsigned minst_cap, models_cap;
    struct conf_inst *kinst;     /* parallel to cfg->keys */
    unsigned kinst_cap, keys_cap;
    int no_secrets;              /* gw_config_load_refs: references checked, not resolved */
    struct conf_alias *aliases;  /* checked once every model is known */
    unsigned naliases, aliases_cap;
    unsigned upkeys_cap;
};

/* One file being read; include nests these on the C stack. */
struct conf_file {
    struct conf_loader *ld;
    const char *path;       /* borrowed from ld->files */
    FILE *fp;
    int line;               /* of the line inih is processing */
    int depth;              /* 0: the main file */
    enum conf_section sec;  /* of the line being processed */
    unsigned idx;           /* SEC_MODEL / SEC_KEY: index into models / keys */
};

/* ------------------------------------------------------------------------------------------ */
/* Error reporting                                                                            */

static void conf_error(struct conf_loader *ld, struct conf_loc at, const char *label,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void conf_error(struct conf_loader *ld, struct conf_loc at, const char *label,
                       const char *fmt, ...)
{
    va_list ap;

    ld->nerrors++;
    if (ld->errs == NULL)
        return;
    if (at.line > 0)
        fprintf(ld->errs, "%s:%d: ", at.file, at.line);
    else
        fprintf(ld->errs, "%s: ", at.file);
    if (label != NULL)
        fprintf(ld->errs, "%s: ", label);
    va_start(ap, fmt);
    vfprintf(ld->errs, fmt, ap);
    va_end(ap);
    fputc('\n', ld->errs);
}

/* Reported once; later allocation failures only count. */
static void conf_oom(struct conf_loader *ld, struct conf_loc at)
{
    if (ld->oom) {
        ld->nerrors++;
        return;
    }
    ld->oom = 1;
    conf_error(ld, at, NULL, "out of memory");
}

/*
 * v as "..." for an error message: at most CONF_QUOTE_MAX bytes of it, "..." when
 * cut, quotes and backslashes escaped, bytes outside printable ASCII as \xNN.
 * buf must hold CONF_QUOTE_BUF bytes. Never call it on a secret.
 */
static const char *conf_quote(char *buf, const char *v)
{
    size_t o = 0, i;

    buf[o++] = '"';
    for (i = 0; v[i] != '\0' && i < CONF_QUOTE_MAX; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c > 0x7e) {
            o += (size_t)snprintf(buf + o, CONF_QUOTE_BUF - o, "\\x%02x", c);
        } else {
            buf[o++] = (char)c;
        }
    }
    if (v[i] != '\0') {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

/* "server.threads", "model veo3.family", "include" (top level), or the section alone. */
static const char *conf_label(const struct conf_file *fc, const char *key, char *buf,
                              size_t cap)
{
    const struct gw_config *cfg = fc->ld->cfg;
    const char *sec = conf_section_names[fc->sec];
    const char *arg = NULL;

    if (fc->sec == SEC_MODEL)
        arg = cfg->catalog.models[fc->idx].name;
    else if (fc->sec == SEC_KEY)
        arg = cfg->keys[fc->idx].name;

    if (fc->sec == SEC_TOP && key != NULL)
        snprintf(buf, cap, "%s", key);
    else if (arg != NULL)
        snprintf(buf, cap, "%s %s%s%s", sec, arg, key ? "." : "", key ? key : "");
    else
        snprintf(buf, cap, "%s%s%s", sec, key ? "." : "", key ? key : "");
    return buf;
}

static void conf_label_directive(const struct conf_directive *d, const char *arg, char *buf,
                                 size_t cap)
{
    if (arg != NULL)
        snprintf(buf, cap, "%s %s.%s", conf_section_names[d->section], arg, d->name);
    else
        snprintf(buf, cap, "%s.%s", conf_section_names[d->section], d->name);
}

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
static const char *conf_expect(const struct conf_directive *d, char *buf, size_t cap)
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
    }
    return "?";
}

/* A secret and a key hash are never echoed: they might be the key itself. */
static int conf_hidden(const struct conf_directive *d)
{
    return d->type == CONF_SECRET || d->type == CONF_SHA256;
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
static int conf_valid_name(const char *s, size_t len, size_t max, const char *extra)
{
    if (len == 0 || len > max)
        return 0;
    for (size_t i = 0; i < len; i++) {
        if (!isalnum((unsigned char)s[i]) && (s[i] == '\0' || strchr(extra, s[i]) == NULL))
            return 0;
    }
    return 1;
}

#define CONF_MODEL_CHARS "._:/+-" /* besides letters and digits */
#define CONF_ALIAS_CHARS "._/+-"  /* ':' cannot be in a key name (inih splits on it) */
#define CONF_KEY_CHARS   "._-"

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
static char *conf_path(const char *file, const char *p)
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
 * upstream.key = env:NAME | file:PATH. The value is appended to upstream_keys.
 * Errors name the reference only. A key must be one line of visible ASCII: it
 * goes into an Authorization header, where a CR or LF would inject headers.
 */
static void conf_set_secret(struct conf_loader *ld, struct conf_loc at, const char *label,
                            struct gw_config *cfg, const char *v)
{
    static const char shape[] = "env:NAME or file:PATH";
    char buf[CONF_SECRET_MAX + 2];
    char q[CONF_QUOTE_BUF];
    char *path = NULL, *secret = NULL, *labelled = NULL, **keys;
    const char *ref, *env;
    FILE *fp = NULL;
    size_t n = 0;

    if (strncmp(v, "env:", 4) == 0) {
        ref = v;
        if (!conf_valid_name(v + 4, strlen(v + 4), 128, "_") || isdigit((unsigned char)v[4])) {
            conf_error(ld, at, label, "expected %s with NAME of A-Za-z0-9_, got %s", shape,
                       conf_quote(q, v));
            goto out;
        }
        if (ld->no_secrets) {
            buf[0] = '-'; /* a placeholder: the secret is never read in this mode */
            n = 1;
            goto store;
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
        snprintf(buf, sizeof(buf), "file:%s", path);
        conf_quote(q, buf);
        if (ld->no_secrets) {
            buf[0] = '-';
            n = 1;
            goto store;
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
store:
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
    if (fp != NULL)
        fclose(fp);
    free(path);
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
static int conf_set_list(struct conf_loader *ld, struct conf_loc at, enum conf_type type,
                         struct gw_model *m, const char *v)
{
    char *tmp[GW_CATALOG_MAX_LIST];
    char **list = type == CONF_SECONDS ? m->seconds : m->sizes;
    unsigned *count = type == CONF_SECONDS ? &m->nseconds : &m->nsizes;
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
static void conf_set(struct conf_loader *ld, struct conf_loc at, const char *label,
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
        if (conf_set_list(ld, at, d->type, base, v) == GW_OK)
            return;
        break;
    case CONF_SHA256:
        if (conf_set_sha256((unsigned char *)field, v) == GW_OK)
            return;
        break;
    }
    conf_bad(ld, at, label, d, v);
}

/* ------------------------------------------------------------------------------------------ */
/* Sections                                                                                   */

static int conf_reserve(struct conf_loader *ld, struct conf_loc at, void **arr, unsigned *cap,
                        unsigned n, size_t size)
{
    unsigned newcap;
    void *p;

    if (n < *cap)
        return GW_OK;
    newcap = *cap ? *cap * 2 : 16;
    p = conf_realloc(*arr, newcap * size);
    if (p == NULL) {
        conf_oom(ld, at);
        return GW_ERR;
    }
    memset((char *)p + *cap * size, 0, (newcap - *cap) * size);
    *arr = p;
    *cap = newcap;
    return GW_OK;
}

static void conf_open_model(struct conf_file *fc, struct conf_loc at, const char *name)
{
    struct conf_loader *ld = fc->ld;
    struct gw_catalog *cat = &ld->cfg->catalog;
    char q[CONF_QUOTE_BUF];
    const struct gw_model *dup;
    struct gw_model *m;
    unsigned i = cat->nmodels;

    if (!conf_valid_name(name, strlen(name), CONF_NAME_MAX, CONF_MODEL_CHARS)) {
        conf_error(ld, at, "model", "expected a name of 1..%d characters A-Za-z0-9%s, got %s",
                   CONF_NAME_MAX, CONF_MODEL_CHARS, conf_quote(q, name));
        return;
    }
    dup = gw_catalog_find(cat, (struct gw_str){ name, strlen(name) });
    if (dup != NULL) {
        struct conf_loc first = ld->minst[dup - cat->models].at;

        conf_error(ld, at, "model", "expected a name not declared before (first at %s:%d), "
                   "got %s", first.file, first.line, conf_quote(q, name));
        return;
    }
    if (conf_reserve(ld, at, (void **)&cat->models, &ld->models_cap, i, sizeof(*m)) ||
        conf_reserve(ld, at, (void **)&ld->minst, &ld->minst_cap, i, sizeof(*ld->minst)))
        return;
    m = &cat->models[i];
    memset(m, 0, sizeof(*m));
    m->name = conf_strdup(name);
    if (m->name == NULL) {
        conf_oom(ld, at);
        return;
    }
    memset(&ld->minst[i], 0, sizeof(ld->minst[i]));
    ld->minst[i].at = at;
    cat->nmodels++;
    fc->sec = SEC_MODEL;
    fc->idx = i;
}

static void conf_open_key(struct conf_file *fc, struct conf_loc at, const char *name)
{
    struct conf_loader *ld = fc->ld;
    struct gw_config *cfg = ld->cfg;
    char q[CONF_QUOTE_BUF];
    unsigned i = cfg->nkeys;

    if (!conf_valid_name(name, strlen(name), CONF_KEYNAME_MAX, CONF_KEY_CHARS)) {
        conf_error(ld, at, "key", "expected a name of 1..%d characters A-Za-z0-9%s, got %s",
                   CONF_KEYNAME_MAX, CONF_KEY_CHARS, conf_quote(q, name));
        return;
    }
    for (unsigned j = 0; j < cfg->nkeys; j++) {
        if (strcmp(cfg->keys[j].name, name) == 0) {
            conf_error(ld, at, "key", "expected a name not declared before (first at %s:%d), "
                       "got %s", ld->kinst[j].at.file, ld->kinst[j].at.line,
                       conf_quote(q, name));
            return;
        }
    }
    if (conf_reserve(ld, at, (void **)&cfg->keys, &ld->keys_cap, i, sizeof(*cfg->keys)) ||
        conf_reserve(ld, at, (void **)&ld->kinst, &ld->kinst_cap, i, sizeof(*ld->kinst)))
        return;
    memset(&cfg->keys[i], 0, sizeof(cfg->keys[i]));
    cfg->keys[i].name = conf_strdup(name);
    if (cfg->keys[i].name == NULL) {
        conf_oom(ld, at);
        return;
    }
    memset(&ld->kinst[i], 0, sizeof(ld->kinst[i]));
    ld->kinst[i].at = at;
    cfg->nkeys++;
    fc->sec = SEC_KEY;
    fc->idx = i;
}

/* text: the trimmed inside of a [...] header. On any error the section is SEC_SKIP. */
static void conf_open_section(struct conf_file *fc, char *text)
{
    static const enum conf_section plain[] = { SEC_SERVER, SEC_UPSTREAM, SEC_MODELS,
                                               SEC_ALIASES, SEC_STORE, SEC_JOBS,
                                               SEC_ADMIN, SEC_LIMITS };
    struct conf_loader *ld = fc->ld;
    struct conf_loc at = { fc->path, fc->line };
    char q[CONF_QUOTE_BUF];
    size_t kindlen = strcspn(text, " \t");
    char *arg = text + kindlen;

    while (isspace((unsigned char)*arg))
        arg++;
    fc->sec = SEC_SKIP;
    for (unsigned i = 0; i < GW_ARRAY_LEN(plain); i++) {
        const char *name = conf_section_names[plain[i]];

        if (*arg == '\0' && strlen(name) == kindlen && memcmp(text, name, kindlen) == 0) {
            fc->sec = plain[i];
            if (ld->section_at[plain[i]].line == 0)
                ld->section_at[plain[i]] = at;
            return;
        }
    }
    if (*arg != '\0' && kindlen == 5 && memcmp(text, "model", 5) == 0) {
        conf_open_model(fc, at, arg);
        return;
    }
    if (*arg != '\0' && kindlen == 3 && memcmp(text, "key", 3) == 0) {
        conf_open_key(fc, at, arg);
        return;
    }
    conf_error(ld, at, "section", "expected server|upstream|models|aliases|store|jobs|admin|"
               "limits|model NAME|key NAME, got %s", conf_quote(q, text));
}

/* ------------------------------------------------------------------------------------------ */
/* The reader in front of inih, and the handler behind it                                    */

/* The '=' or ':' inih will split on, or NULL (inline comments: ';' after whitespace). */
static const char *conf_separator(const char *s)
{
    int was_space = 0;

    for (; *s != '\0'; s++) {
        if (*s == '=' || *s == ':')
            return s;
        if (was_space && *s == ';')
            return NULL;
        was_space = isspace((unsigned char)*s);
    }
    return NULL;
}

static void conf_read_section(struct conf_file *fc, char *s)
{
    char q[CONF_QUOTE_BUF];
    char *close = strchr(s + 1, ']');
    char *rest, *text, *end;

    rest = close ? close + 1 : NULL;
    while (rest != NULL && isspace((unsigned char)*rest))
        rest++;
    if (close == NULL || (*rest != '\0' && *rest != ';' && *rest != '#')) {
        conf_error(fc->ld, (struct conf_loc){ fc->path, fc->line }, "section",
                   "expected a [SECTION] header alone on its line, got %s", conf_quote(q, s));
        fc->sec = SEC_SKIP;
        return;
    }
    text = s + 1;
    end = close;
    while (isspace((unsigned char)*text))
        text++;
    while (end > text && isspace((unsigned char)end[-1]))
        end--;
    *end = '\0';
    conf_open_section(fc, text);
}

/*
 * The ini_reader: read one raw line, deal with it, and give inih either a blank
 * line or a well-formed "key = value" line of at most num - 2 bytes. inih calls
 * this once per line and then the handler for that line, so fc->line and fc->sec
 * are right when the handler runs.
 */
static char *conf_reader(char *str, int num, void *stream)
{
    struct conf_file *fc = stream;
    struct conf_loc at;
    char raw[CONF_READ_LINE];
    char label[CONF_LABEL_BUF];
    char *s, *e;
    size_t len;
    int c;

    if (num < 2 || fgets(raw, sizeof(raw), fc->fp) == NULL)
        return NULL;
    fc->line++;
    at = (struct conf_loc){ fc->path, fc->line };
    str[0] = '\n';
    str[1] = '\0';
    len = strlen(raw);
    if (len == sizeof(raw) - 1 && raw[len - 1] != '\n') {
        while ((c = getc(fc->fp)) != EOF && c != '\n')
            ;
        conf_error(fc->ld, at, conf_label(fc, NULL, label, sizeof(label)),
                   "expected a line of at most %d bytes, got a longer one (not shown)", num - 2);
        return str;
    }
    s = raw;
    if (fc->line == 1 && strncmp(s, "\xef\xbb\xbf", 3) == 0) /* UTF-8 BOM */
        s += 3;
    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    *e = '\0';
    if (*s == '\0' || *s == ';' || *s == '#')
        return str;
    if (*s == '[') {
        conf_read_section(fc, s);
        return str;
    }
    if (fc->sec == SEC_SKIP)
        return str;
    if (conf_separator(s) == NULL) {
        conf_error(fc->ld, at, conf_label(fc, NULL, label, sizeof(label)),
                   "expected KEY = VALUE, a [SECTION] header or a comment, got a line "
                   "without '=' (not shown)");
        return str;
    }
    if ((size_t)(e - s) + 2 > (size_t)num) {
        conf_error(fc->ld, at, conf_label(fc, NULL, label, sizeof(label)),
                   "expected a line of at most %d bytes, got a longer one (not shown)", num - 2);
        return str;
    }
    memcpy(str, s, (size_t)(e - s));
    str[e - s] = '\n';
    str[e - s + 1] = '\0';
    return str;
}

static const struct conf_directive *conf_find(enum conf_section sec, const char *name,
                                              unsigned *index)
{
    for (unsigned i = 0; i < CONF_NDIRECTIVES; i++) {
        if (conf_directives[i].section == sec && strcmp(conf_directives[i].name, name) == 0) {
            *index = i;
            return &conf_directives[i];
        }
    }
    return NULL;
}

static void conf_unknown_key(struct conf_file *fc, struct conf_loc at, const char *label,
                             const char *name)
{
    char keys[512], q[CONF_QUOTE_BUF];
    size_t off = (size_t)snprintf(keys, sizeof(keys), "include");

    for (unsigned i = 0; i < CONF_NDIRECTIVES && off < sizeof(keys); i++) {
        if (conf_directives[i].section == fc->sec)
            off += (size_t)snprintf(keys + off, sizeof(keys) - off, "|%s",
                                    conf_directives[i].name);
    }
    conf_error(fc->ld, at, label, "expected one of %s, got %s", keys, conf_quote(q, name));
}

static void conf_apply(struct conf_file *fc, struct conf_loc at, const char *label,
                       const struct conf_directive *d, unsigned index, const char *value)
{
    struct conf_loader *ld = fc->ld;
    struct conf_inst *inst = &ld->top;
    void *base = ld->cfg;
    uint64_t bit = (uint64_t)1 << index;
    char q[CONF_QUOTE_BUF];

    if (fc->sec == SEC_MODEL) {
        inst = &ld->minst[fc->idx];
        base = &ld->cfg->catalog.models[fc->idx];
    } else if (fc->sec == SEC_KEY) {
        inst = &ld->kinst[fc->idx];
        base = &ld->cfg->keys[fc->idx];
    }
    if ((inst->seen & bit) && !(d->flags & CONF_MULTI)) {
        struct conf_loc first = inst->set_at[index];

        if (conf_hidden(d))
            conf_error(ld, at, label, "expected a single value (first set at %s:%d), got "
                       "another (not shown)", first.file, first.line);
        else
            conf_error(ld, at, label, "expected a single value (first set at %s:%d), got %s",
                       first.file, first.line, conf_quote(q, value));
        return;
    }
    if (!(inst->seen & bit))
        inst->set_at[index] = at;
    inst->seen |= bit;
    conf_set(ld, at, label, d, base, value);
}

static void conf_add_alias(struct conf_file *fc, struct conf_loc at, const char *label,
                           const char *from, const char *to)
{
    struct conf_loader *ld = fc->ld;
    char q[CONF_QUOTE_BUF];
    struct conf_alias *a;

    if (!conf_valid_name(from, strlen(from), CONF_NAME_MAX, CONF_ALIAS_CHARS)) {
        conf_error(ld, at, label, "expected an alias name of 1..%d characters A-Za-z0-9%s, "
                   "got %s", CONF_NAME_MAX, CONF_ALIAS_CHARS, conf_quote(q, from));
        return;
    }
    if (!conf_valid_name(to, strlen(to), CONF_NAME_MAX, CONF_MODEL_CHARS)) {
        conf_error(ld, at, label, "expected a model name of 1..%d characters A-Za-z0-9%s, "
                   "got %s", CONF_NAME_MAX, CONF_MODEL_CHARS, conf_quote(q, to));
        return;
    }
    for (unsigned i = 0; i < ld->naliases; i++) {
        if (strcmp(ld->aliases[i].from, from) == 0) {
            conf_error(ld, at, label, "expected a single value (first set at %s:%d), got %s",
                       ld->aliases[i].at.file, ld->aliases[i].at.line, conf_quote(q, to));
            return;
        }
    }
    if (conf_reserve(ld, at, (void **)&ld->aliases, &ld->aliases_cap, ld->naliases,
                     sizeof(*ld->aliases)))
        return;
    a = &ld->aliases[ld->naliases];
    a->from = conf_strdup(from);
    a->to = conf_strdup(to);
    a->at = at;
    if (a->from == NULL || a->to == NULL) {
        free(a->from);
        free(a->to);
        a->from = a->to = NULL;
        conf_oom(ld, at);
        return;
    }
    ld->naliases++;
}

static int conf_parse_file(struct conf_loader *ld, const char *path, int depth,
                           enum conf_section sec, unsigned idx, const struct conf_loc *from,
                           const char *label);

/* include = PATH: read PATH here, starting in the current section. */
static void conf_include(struct conf_file *fc, struct conf_loc at, const char *label,
                         const char *value)
{
    struct conf_loader *ld = fc->ld;
    char q[CONF_QUOTE_BUF];
    char *path;

    if (*value == '\0') {
        conf_error(ld, at, label, "expected a file path, got \"\"");
        return;
    }
    if (fc->depth >= CONF_MAX_INCLUDE) {
        conf_error(ld, at, label, "expected at most %d nested includes, got %s",
                   CONF_MAX_INCLUDE, conf_quote(q, value));
        return;
    }
    path = conf_path(fc->path, value);
    if (path == NULL ||
        conf_reserve(ld, at, (void **)&ld->files, &ld->files_cap, ld->nfiles,
                     sizeof(*ld->files))) {
        free(path);
        if (path == NULL)
            conf_oom(ld, at);
        return;
    }
    ld->files[ld->nfiles++] = path;
    conf_parse_file(ld, path, fc->depth + 1, fc->sec, fc->idx, &at, label);
}

/* inih's handler: always returns 1 ("go on"); errors are recorded, not returned. */
static int conf_handler(void *user, const char *section, const char *name, const char *value)
{
    struct conf_file *fc = user;
    struct conf_loc at = { fc->path, fc->line };
    char label[CONF_LABEL_BUF], q[CONF_QUOTE_BUF];
    const struct conf_directive *d;
    unsigned index;

    (void)section; /* inih's copy is cut at 49 bytes; the reader tracks the section */
    if (fc->sec == SEC_SKIP)
        return 1;
    conf_label(fc, name, label, sizeof(label));
    if (strcmp(name, "include") == 0) {
        conf_include(fc, at, label, value);
        return 1;
    }
    if (fc->sec == SEC_TOP) {
        conf_error(fc->ld, at, label, "expected a [SECTION] header before it (only include "
                   "may come first), got %s", conf_quote(q, name));
        return 1;
    }
    if (fc->sec == SEC_ALIASES) {
        conf_add_alias(fc, at, label, name, value);
        return 1;
    }
    d = conf_find(fc->sec, name, &index);
    if (d == NULL)
        conf_unknown_key(fc, at, label, name);
    else
        conf_apply(fc, at, label, d, index, value);
    return 1;
}

/* Read one file. `from` is where it was included (NULL for the main file). Returns
 * GW_ERR if the file could not be opened (reported), GW_OK otherwise, errors or not. */
static int conf_parse_file(struct conf_loader *ld, const char *path, int depth,
                           enum conf_section sec, unsigned idx, const struct conf_loc *from,
                           const char *label)
{
    struct conf_file fc = { .ld = ld, .path = path, .depth = depth, .sec = sec, .idx = idx };
    char q[CONF_QUOTE_BUF];
    int rc;

    fc.fp = fopen(path, "r");
    if (fc.fp == NULL) {
        if (from != NULL)
            conf_error(ld, *from, label, "expected a readable file, got %s (%s)",
                       conf_quote(q, path), strerror(errno));
        else
            conf_error(ld, (struct conf_loc){ path, 0 }, NULL,
                       "expected a readable configuration file (%s)", strerror(errno));
        return GW_ERR;
    }
    rc = ini_parse_stream(conf_reader, &fc, conf_handler, &fc);
    if (ferror(fc.fp))
        conf_error(ld, (struct conf_loc){ path, fc.line }, NULL,
                   "expected a readable configuration file (%s)", strerror(errno));
    else if (rc == -2)
        conf_oom(ld, (struct conf_loc){ path, fc.line });
    else if (rc != 0) /* cannot happen: inih only sees lines it accepts */
        conf_error(ld, (struct conf_loc){ path, rc }, NULL,
                   "expected KEY = VALUE, a [SECTION] header or a comment");
    fclose(fc.fp);
    return GW_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Defaults, whole-config checks, load and free                                               */

static void conf_defaults(struct conf_loader *ld)
{
    char label[CONF_LABEL_BUF];

    for (unsigned i = 0; i < CONF_NDIRECTIVES; i++) {
        const struct conf_directive *d = &conf_directives[i];

        if (d->dflt == NULL || d->section == SEC_MODEL || d->section == SEC_KEY)
            continue;
        conf_label_directive(d, NULL, label, sizeof(label));
        conf_set(ld, (struct conf_loc){ CONF_DEFAULT, 0 }, label, d, ld->cfg, d->dflt);
    }
}

static void conf_missing(struct conf_loader *ld, struct conf_loc at, const char *arg,
                         const struct conf_directive *d)
{
    char label[CONF_LABEL_BUF], exp[160];

    conf_label_directive(d, arg, label, sizeof(label));
    conf_error(ld, at, label, "expected %s, got nothing", conf_expect(d, exp, sizeof(exp)));
}

static void conf_check_required(struct conf_loader *ld)
{
    struct gw_config *cfg = ld->cfg;
    struct conf_loc main_at = { ld->files[0], 0 };

    for (unsigned k = 0; k < CONF_NDIRECTIVES; k++) {
        const struct conf_directive *d = &conf_directives[k];
        uint64_t bit = (uint64_t)1 << k;

        if (!(d->flags & CONF_REQUIRED))
            continue;
        if (d->section == SEC_MODEL) {
            for (unsigned i = 0; i < cfg->catalog.nmodels; i++) {
                if (!(ld->minst[i].seen & bit))
                    conf_missing(ld, ld->minst[i].at, cfg->catalog.models[i].name, d);
            }
        } else if (d->section == SEC_KEY) {
            for (unsigned i = 0; i < cfg->nkeys; i++) {
                if (!(ld->kinst[i].seen & bit))
                    conf_missing(ld, ld->kinst[i].at, cfg->keys[i].name, d);
            }
        } else if (!(ld->top.seen & bit)) {
            struct conf_loc at = ld->section_at[d->section];

            conf_missing(ld, at.line > 0 ? at : main_at, NULL, d);
        }
    }
}

static void conf_check_tls(struct conf_loader *ld)
{
    unsigned cert = 0, key = 0;
    uint64_t cbit, kbit;
    char label[CONF_LABEL_BUF];

    conf_find(SEC_SERVER, "tls_cert", &cert);
    conf_find(SEC_SERVER, "tls_key", &key);
    cbit = ld->top.seen & ((uint64_t)1 << cert);
    kbit = ld->top.seen & ((uint64_t)1 << key);
    if (!cbit == !kbit)
        return;
    conf_label_directive(&conf_directives[cbit ? key : cert], NULL, label, sizeof(label));
    conf_error(ld, ld->top.set_at[cbit ? cert : key], label,
               "expected a file path (tls_cert and tls_key go together), got nothing");
}

/* Aliases point at models; checked once the whole config is read. */
static void conf_link_aliases(struct conf_loader *ld)
{
    struct gw_catalog *cat = &ld->cfg->catalog;
    char label[CONF_LABEL_BUF], q[CONF_QUOTE_BUF];

    if (ld->naliases == 0)
        return;
    cat->aliases = conf_calloc(ld->naliases, sizeof(*cat->aliases));
    if (cat->aliases == NULL) {
        conf_oom(ld, ld->aliases[0].at);
        return;
    }
    for (unsigned i = 0; i < ld->naliases; i++) {
        struct conf_alias *a = &ld->aliases[i];
        const struct gw_model *m = gw_catalog_find(cat, (struct gw_str){ a->to, strlen(a->to) });

        if (m == NULL) {
            snprintf(label, sizeof(label), "aliases.%s", a->from);
            conf_error(ld, a->at, label, "expected a model declared with [model NAME], got %s",
                       conf_quote(q, a->to));
            continue;
        }
        cat->aliases[cat->naliases].from = a->from;
        cat->aliases[cat->naliases].to = m;
        cat->naliases++;
        a->from = NULL;
    }
}

/* A key's limits not set in its [key NAME] section are [limits]' values. */
static void conf_inherit_limits(struct conf_loader *ld)
{
    static const char *const names[] = { "rpm", "burst", "concurrency", "daily_seconds" };
    struct gw_config *cfg = ld->cfg;

    for (unsigned k = 0; k < GW_ARRAY_LEN(names); k++) {
        unsigned idx = 0;
        const struct conf_directive *d = conf_find(SEC_KEY, names[k], &idx);
        size_t off = d->offset - offsetof(struct gw_team_key, limits);

        for (unsigned i = 0; i < cfg->nkeys; i++) {
            if (!(ld->kinst[i].seen & ((uint64_t)1 << idx)))
                memcpy((char *)&cfg->keys[i].limits + off, (char *)&cfg->limits + off,
                       sizeof(int));
        }
    }
}

/* A key's model allowlist names aliases or models; kept as the names sent upstream,
 * which is what a request resolves to. */
static void conf_resolve_key_models(struct conf_loader *ld)
{
    struct gw_config *cfg = ld->cfg;
    char label[CONF_LABEL_BUF], q[CONF_QUOTE_BUF];
    unsigned idx = 0;

    conf_find(SEC_KEY, "models", &idx);
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        struct gw_names *m = &cfg->keys[i].models;
        for (unsigned j = 0; j < m->n; j++) {
            struct gw_resolved r;
            struct gw_error err;
            if (gw_catalog_resolve(&cfg->catalog, (struct gw_str){ m->v[j], strlen(m->v[j]) },
                                   &r, &err) != GW_OK || r.model == NULL) {
                if (r.model == NULL && cfg->catalog.allow_unknown)
                    continue; /* [models] unknown = pass: names outside the catalog too */
                snprintf(label, sizeof(label), "key %s.models", cfg->keys[i].name);
                conf_error(ld, ld->kinst[i].set_at[idx], label,
                           "expected models or aliases of the catalog, got %s",
                           conf_quote(q, m->v[j]));
                continue;
            }
            if (strcmp(m->v[j], r.model->name) != 0) {
                char *canon = conf_strdup(r.model->name);
                if (canon == NULL) {
                    conf_oom(ld, ld->kinst[i].set_at[idx]);
                    continue;
                }
                free(m->v[j]);
                m->v[j] = canon;
            }
        }
    }
}

static void conf_finish(struct conf_loader *ld)
{
    struct gw_catalog *cat = &ld->cfg->catalog;

    conf_check_required(ld);
    conf_check_tls(ld);
    for (unsigned i = 0; i < cat->nmodels; i++)
        cat->models[i].max_images = family_images[cat->models[i].family];
    conf_link_aliases(ld);
    conf_inherit_limits(ld);
    conf_resolve_key_models(ld);
}

static void conf_loader_free(struct conf_loader *ld)
{
    for (unsigned i = 0; i < ld->nfiles; i++)
        free(ld->files[i]);
    free(ld->files);
    free(ld->minst);
    free(ld->kinst);
    for (unsigned i = 0; i < ld->naliases; i++) {
        free(ld->aliases[i].from);
        free(ld->aliases[i].to);
    }
    free(ld->aliases);
}

static struct gw_config *conf_load(const char *path, FILE *errs, int no_secrets)
{
    struct conf_loader ld = { .errs = errs, .no_secrets = no_secrets };
    struct gw_config *cfg = NULL, *ret = NULL;
    char *file = NULL;

    cfg = conf_calloc(1, sizeof(*cfg));
    file = conf_strdup(path);
    if (cfg == NULL || file == NULL ||
        conf_reserve(&ld, (struct conf_loc){ path, 0 }, (void **)&ld.files, &ld.files_cap, 0,
                     sizeof(*ld.files))) {
        conf_oom(&ld, (struct conf_loc){ path, 0 });
        free(file);
        goto out;
    }
    ld.files[ld.nfiles++] = file;
    ld.cfg = cfg;
    cfg->path = conf_strdup(path);
    if (cfg->path == NULL) {
        conf_oom(&ld, (struct conf_loc){ path, 0 });
        goto out;
    }
    conf_defaults(&ld);
    /* No whole-config checks for a file that is not there: they would only add noise. */
    if (conf_parse_file(&ld, file, 0, SEC_TOP, 0, NULL, NULL) == GW_OK)
        conf_finish(&ld);
    if (ld.nerrors == 0) {
        ret = cfg;
        ret->refs = 1;
        cfg = NULL;
    }
out:
    gw_config_free(cfg);
    conf_loader_free(&ld);
    return ret;
}

struct gw_config *gw_config_load(const char *path, FILE *errs)
{
    return conf_load(path, errs, 0);
}

struct gw_config *gw_config_load_refs(const char *path, FILE *errs)
{
    return conf_load(path, errs, 1);
}

void gw_config_free(struct gw_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->path);
    free(cfg->listen.host);
    free(cfg->admin.host);
    free(cfg->store_path);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->spool_dir);
    free(cfg->access_log);
    free(cfg->upstream_url);
    free(cfg->upstream_host);
    free(cfg->upstream_base);
    free(cfg->ca_file);
    for (unsigned i = 0; i < cfg->nupstream_keys; i++) {
        explicit_bzero(cfg->upstream_keys[i], strlen(cfg->upstream_keys[i]));
        free(cfg->upstream_keys[i]);
        free(cfg->upstream_key_labels[i]);
    }
    free(cfg->upstream_keys);
    free(cfg->upstream_key_labels);
    gw_catalog_free(&cfg->catalog);
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        free(cfg->keys[i].name);
        for (unsigned j = 0; j < cfg->keys[i].models.n; j++)
            free(cfg->keys[i].models.v[j]);
        free(cfg->keys[i].models.v);
    }
    free(cfg->keys);
    free(cfg);
}

void gw_config_hold(const struct gw_config *cfg)
{
    __atomic_add_fetch(&((struct gw_config *)cfg)->refs, 1, __ATOMIC_RELAXED);
}

void gw_config_release(const struct gw_config *cfg)
{
    if (cfg != NULL &&
        __atomic_sub_fetch(&((struct gw_config *)cfg)->refs, 1, __ATOMIC_ACQ_REL) == 0)
        gw_config_free((struct gw_config *)cfg);
}

static int conf_str_differ(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a != NULL && strcmp(a, b) != 0);
}

const char *gw_config_restart_needed(const struct gw_config *o, const struct gw_config *n)
{
    if (conf_str_differ(o->listen.host, n->listen.host) || o->listen.port != n->listen.port)
        return "server.listen";
    if (o->threads != n->threads)
        return "server.threads";
    if (conf_str_differ(o->tls_cert, n->tls_cert) || conf_str_differ(o->tls_key, n->tls_key))
        return "server.tls_cert";
    if (conf_str_differ(o->access_log, n->access_log))
        return "server.access_log";
    if (o->max_header_bytes != n->max_header_bytes || o->header_timeout_ms !=
                                                          n->header_timeout_ms)
        return "server.max_header_bytes";
    if (conf_str_differ(o->upstream_url, n->upstream_url) ||
        conf_str_differ(o->ca_file, n->ca_file) || o->tls_verify != n->tls_verify ||
        o->connect_timeout_ms != n->connect_timeout_ms ||
        o->response_timeout_ms != n->response_timeout_ms ||
        o->idle_timeout_ms != n->idle_timeout_ms || o->pool_size != n->pool_size)
        return "upstream";
    if (o->nupstream_keys != n->nupstream_keys)
        return "upstream.key";
    for (unsigned i = 0; i < o->nupstream_keys; i++) {
        if (strcmp(o->upstream_keys[i], n->upstream_keys[i]) != 0 ||
            strcmp(o->upstream_key_labels[i], n->upstream_key_labels[i]) != 0)
            return "upstream.key";
    }
    if (conf_str_differ(o->store_path, n->store_path) || o->store_sync_full != n->store_sync_full)
        return "store";
    if (conf_str_differ(o->admin.host, n->admin.host) || o->admin.port != n->admin.port)
        return "admin.listen";
    if (o->jobs_refresh_ms != n->jobs_refresh_ms)
        return "jobs.refresh";
    return NULL;
}

int gw_config_upstream_key(const struct gw_config *cfg, const char *label)
{
    for (unsigned i = 0; i < cfg->nupstream_keys; i++) {
        if (strcmp(cfg->upstream_key_labels[i], label) == 0)
            return (int)i;
    }
    return -1;
}
