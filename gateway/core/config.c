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
 *
 * Three files, one concern each, sharing config_int.h: this one, the loader
 * (the directive table, the reader and the handler, sections, include, defaults,
 * load, free, references and what a reload cannot change); config_values.c, one
 * value (its parser, its setter, what it must look like); config_check.c, the
 * checks of the whole configuration once every file is read.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "config_int.h"

#define CONF_MAX_INCLUDE 4      /* nested include levels below the main file */
#define CONF_READ_LINE   1024   /* raw line buffer; inih's own limit is lower (num - 2) */
#define CONF_KEYNAME_MAX 64     /* [key NAME] */
#define CONF_DEFAULT     "(built-in default)"

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

void *conf_malloc(size_t n)
{
    return conf_alloc_fails() ? NULL : malloc(n);
}

void *conf_calloc(size_t n, size_t size)
{
    return conf_alloc_fails() ? NULL : calloc(n, size);
}

void *conf_realloc(void *p, size_t n)
{
    return conf_alloc_fails() ? NULL : realloc(p, n);
}

char *conf_strndup(const char *s, size_t n)
{
    char *d = conf_malloc(n + 1);

    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *conf_strdup(const char *s)
{
    return conf_strndup(s, strlen(s));
}

/* ------------------------------------------------------------------------------------------ */
/* The directive table                                                                        */

static const char *const conf_section_names[] = {
    [SEC_TOP] = "top level", [SEC_SERVER] = "server",   [SEC_UPSTREAM] = "upstream",
    [SEC_MODELS] = "models",  [SEC_ALIASES] = "aliases", [SEC_STORE] = "store",
    [SEC_JOBS] = "jobs",      [SEC_ADMIN] = "admin",     [SEC_LIMITS] = "limits",
    [SEC_MODEL] = "model",
    [SEC_KEY] = "key",        [SEC_SKIP] = "?",
};

static const char *const fallback_names[] = { "chunked", "spool", NULL };
static const char *const level_names[] = { "error", "warn", "info", "debug", NULL };
static const char *const unknown_names[] = { "reject", "pass", NULL }; /* = allow_unknown */
static const char *const family_names[] = { "first", "frames", "components", NULL };
static const char *const sync_names[] = { "normal", "full", NULL }; /* = store_sync_full */
static const char *const backend_names[] = { "sqlite", "redis", NULL }; /* = gw_store_backend */
static const char *const failure_names[] = { "refuse", "local", NULL }; /* = gw_store_failure */

#define LIMIT_MAX 1000000 /* burst, concurrency */
#define RPM_MAX 100000    /* = GW_GCRA_RPM_MAX: what the limiter can count */

#define CFG(f) offsetof(struct gw_config, f)
#define KEY(f) offsetof(struct gw_team_key, f)

const struct conf_directive conf_directives[] = {
    /* section, name, type, offset, default, min, max, names, flags */
    { SEC_SERVER, "listen", CONF_LISTEN, CFG(listen), "127.0.0.1:8080", 0, 0, NULL, 0 },
    { SEC_SERVER, "threads", CONF_INT, CFG(threads), "0", 0, 64, NULL, 0 },
    { SEC_SERVER, "handover", CONF_BOOL, CFG(handover), "on", 0, 0, NULL, 0 },
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
    { SEC_MODELS, "characters", CONF_BOOL, CFG(catalog.characters), "on", 0, 0, NULL, 0 },

    { SEC_MODEL, "family", CONF_ENUM, offsetof(struct gw_model, family), NULL, 0, 0,
      family_names, CONF_REQUIRED },
    { SEC_MODEL, "seconds", CONF_SECONDS, 0, NULL, 1, CONF_SECONDS_MAX, NULL, 0 },
    { SEC_MODEL, "sizes", CONF_SIZES, 0, NULL, 0, 0, NULL, 0 },
    { SEC_MODEL, "edits", CONF_BOOL, offsetof(struct gw_model, edits), NULL, 0, 0, NULL, 0 },
    { SEC_MODEL, "extensions", CONF_BOOL, offsetof(struct gw_model, extensions), NULL, 0, 0,
      NULL, 0 },
    { SEC_MODEL, "extend_seconds", CONF_SECONDS, offsetof(struct gw_model, extend_seconds),
      NULL, 1, CONF_SECONDS_MAX, NULL, 0 },

    { SEC_STORE, "path", CONF_PATH, CFG(store_path), NULL, 0, 0, NULL, 0 },
    { SEC_STORE, "synchronous", CONF_ENUM, CFG(store_sync_full), "normal", 0, 0, sync_names,
      0 },
    { SEC_STORE, "backend", CONF_ENUM, CFG(store_backend), "sqlite", 0, 0, backend_names, 0 },
    { SEC_STORE, "redis", CONF_REDIS, 0, "127.0.0.1:6379", 0, 0, NULL, 0 },
    { SEC_STORE, "password", CONF_PASSWORD, CFG(redis_password), NULL, 0, 0, NULL, 0 },
    { SEC_STORE, "db", CONF_INT, CFG(redis_db), "0", 0, 100000, NULL, 0 },
    { SEC_STORE, "prefix", CONF_PREFIX, CFG(redis_prefix), "videogw:", 0, 0, NULL, 0 },
    { SEC_STORE, "timeout", CONF_DURATION, CFG(redis_timeout_ms), "250ms", 10, 60 * SEC, NULL,
      0 },
    { SEC_STORE, "on_failure", CONF_ENUM, CFG(redis_on_failure), "refuse", 0, 0, failure_names,
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

_Static_assert(GW_ARRAY_LEN(conf_directives) == CONF_NDIRECTIVES,
               "CONF_NDIRECTIVES (config_int.h) is not the table's length");
_Static_assert(CONF_NDIRECTIVES <= 64, "the seen masks are 64-bit");

/* ------------------------------------------------------------------------------------------ */
/* Loading state (the rest of it, shared, is in config_int.h)                                 */

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

void conf_error(struct conf_loader *ld, struct conf_loc at, const char *label, const char *fmt,
                ...)
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
void conf_oom(struct conf_loader *ld, struct conf_loc at)
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
const char *conf_quote(char *buf, const char *v)
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

void conf_label_directive(const struct conf_directive *d, const char *arg, char *buf,
                          size_t cap)
{
    if (arg != NULL)
        snprintf(buf, cap, "%s %s.%s", conf_section_names[d->section], arg, d->name);
    else
        snprintf(buf, cap, "%s.%s", conf_section_names[d->section], d->name);
}

/* ------------------------------------------------------------------------------------------ */
/* Sections                                                                                   */

/* What conf_valid_name() accepts in a model, an alias and a key name. */
#define CONF_MODEL_CHARS "._:/+-" /* besides letters and digits */
#define CONF_ALIAS_CHARS "._/+-"  /* ':' cannot be in a key name (inih splits on it) */
#define CONF_KEY_CHARS   "._-"

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

const struct conf_directive *conf_find(enum conf_section sec, const char *name, unsigned *index)
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
/* Defaults, load and free                                                                    */

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
    free(cfg->redis_host);
    free(cfg->redis_unix);
    if (cfg->redis_password != NULL)
        explicit_bzero(cfg->redis_password, strlen(cfg->redis_password));
    free(cfg->redis_password);
    free(cfg->redis_prefix);
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
    if (o->handover != n->handover)
        return "server.handover";
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
    if (o->store_backend != n->store_backend || conf_str_differ(o->redis_host, n->redis_host) ||
        o->redis_port != n->redis_port || conf_str_differ(o->redis_unix, n->redis_unix) ||
        conf_str_differ(o->redis_password, n->redis_password) || o->redis_db != n->redis_db ||
        conf_str_differ(o->redis_prefix, n->redis_prefix) ||
        o->redis_timeout_ms != n->redis_timeout_ms ||
        o->redis_on_failure != n->redis_on_failure)
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
