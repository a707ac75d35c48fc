/*
 * cli_usage.c - `gateway usage`: what each team key spent, from the store's
 * usage_daily rows (one per UTC day, key and model sent), summed over the days
 * asked, printed as an aligned table (a total line per key and a grand total) or
 * as JSON.
 *
 * The configuration is read as the gateway reads it (gw_config_load_refs: the
 * same checks and file:line errors, paths relative to the file they are written
 * in) except that the upstream keys are never resolved: usage works from a shell
 * without the gateway's environment and holds no secret it has no use for.
 *
 * Never printed: a secret. A --key value is never echoed (a team key pasted there
 * by mistake has the shape of a key name); messages name options, the files and
 * dates only.
 *
 * Exit codes: 0 (also for an empty range), 1 (configuration or database
 * unreadable), 2 (bad options).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_usage.h"
#include "config.h"
#include "gw.h"
#include "server.h"
#include "store/store.h"

#define USAGE_MAX_INCLUDE 4    /* nested include levels: config.c's CONF_MAX_INCLUDE */
#define USAGE_READ_LINE   1024 /* config.c's CONF_READ_LINE */
#define USAGE_KEYNAME_MAX 64   /* config.c's CONF_KEYNAME_MAX */
#define USAGE_QUOTE_MAX   64   /* bytes of an argument echoed in a message */
#define USAGE_TOTAL       "(total)"

static const char synopsis[] =
    "usage: gateway usage [-c FILE] [--since DATE] [--until DATE] [--key NAME] [--by-day] "
    "[--by-kind] [--json]\n";

static const char help[] =
    "Video-seconds spent per team key and model, from the store named by [store] path.\n"
    "\n"
    "  -c FILE        the gateway's configuration (default gateway.conf); only its\n"
    "                 [store] path is read\n"
    "  --since DATE   from this UTC day on (YYYY-MM-DD, inclusive; default: the first)\n"
    "  --until DATE   up to this UTC day (inclusive; default: the last)\n"
    "  --key NAME     this team key only\n"
    "  --by-day       one row per UTC day too (JSON: a \"day\" member)\n"
    "  --by-kind      one row per kind of job too: create, remix, edit, extend (JSON: a\n"
    "                 \"kind\" member); days before the store knew kinds, pruned from\n"
    "                 its ledger by then, are not split\n"
    "  --json         a JSON array of {key, model, jobs, seconds, failed,\n"
    "                 refunded_seconds}, no totals\n"
    "\n"
    "model is the model sent to the provider (what it bills); seconds are the video\n"
    "seconds of the jobs created on those days, refunded_seconds those given back for\n"
    "failed jobs (counted on the job's creation day). Safe while the gateway runs.\n";

struct usage_opts {
    const char *conf;
    const char *since, *until, *key;
    int json, by_day, by_kind;
};

/* ------------------------------------------------------------------ messages */

/* v for a message: at most USAGE_QUOTE_MAX bytes, in quotes, non-printable bytes
 * as \xNN. Never called on a --key value. */
static const char *quote(char *buf, size_t cap, const char *v)
{
    size_t o = 0, i;

    buf[o++] = '"';
    for (i = 0; v[i] != '\0' && i < USAGE_QUOTE_MAX && o + 6 < cap; i++) {
        unsigned char c = (unsigned char)v[i];

        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            buf[o++] = (char)c;
        else
            o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
    }
    if (v[i] != '\0' && o + 5 < cap) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int bad_usage(const char *fmt, ...)
{
    va_list ap;

    fputs("gateway usage: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fputs(synopsis, stderr);
    return 2;
}

/* ------------------------------------------------------------------ options */

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* YYYY-MM-DD naming a day that exists (the store only checks the shape). */
static int valid_date(const char *s)
{
    static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    int y, m, d;

    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return 0;
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return 0;
    }
    y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    m = (s[5] - '0') * 10 + (s[6] - '0');
    d = (s[8] - '0') * 10 + (s[9] - '0');
    if (m < 1 || m > 12 || d < 1)
        return 0;
    return d <= mdays[m - 1] + (m == 2 && is_leap(y));
}

/* A team key's name as the config allows it: 1..64 of [A-Za-z0-9._-]. */
static int valid_key_name(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > USAGE_KEYNAME_MAX)
        return 0;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n;
}

/* 0: go on; 2: bad options (reported); -1: help printed (exit 0). */
static int parse_args(int argc, char **argv, struct usage_opts *o)
{
    char q[USAGE_QUOTE_MAX * 4 + 8], name[USAGE_QUOTE_MAX + 1];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL, *eq;
        const char **field = NULL;
        int *flag = NULL;
        size_t namelen;

        if (a[0] != '-' || a[1] == '\0')
            return bad_usage("unexpected argument %d (usage takes options only)", i);
        if (a[1] == '-') { /* --name or --name=VALUE */
            eq = strchr(a, '=');
            namelen = eq != NULL ? (size_t)(eq - a) : strlen(a);
            v = eq != NULL ? eq + 1 : NULL;
        } else {           /* -c FILE or -cFILE, as getopt reads it */
            namelen = 2;
            v = a[2] != '\0' ? a + 2 : NULL;
        }
        snprintf(name, sizeof(name), "%.*s", (int)namelen, a);
        if (strcmp(name, "-h") == 0 || strcmp(name, "--help") == 0) {
            fputs(synopsis, stdout);
            fputs(help, stdout);
            return -1;
        }
        if (strcmp(name, "-c") == 0 || strcmp(name, "--config") == 0)
            field = &o->conf;
        else if (strcmp(name, "--since") == 0)
            field = &o->since;
        else if (strcmp(name, "--until") == 0)
            field = &o->until;
        else if (strcmp(name, "--key") == 0)
            field = &o->key;
        else if (strcmp(name, "--json") == 0)
            flag = &o->json;
        else if (strcmp(name, "--by-day") == 0)
            flag = &o->by_day;
        else if (strcmp(name, "--by-kind") == 0)
            flag = &o->by_kind;
        else
            return bad_usage("unknown option %s", quote(q, sizeof(q), name));

        if (flag != NULL) {
            if (v != NULL)
                return bad_usage("%s takes no value", name);
            *flag = 1;
            continue;
        }
        if (v == NULL) {
            if (i + 1 >= argc)
                return bad_usage("%s: expected a value, got nothing", name);
            v = argv[++i];
        }
        if (*field != NULL)
            return bad_usage("%s given twice", name);
        *field = v;
    }
    if (o->conf == NULL)
        o->conf = "gateway.conf";
    if (o->conf[0] == '\0')
        return bad_usage("-c: expected a configuration file, got nothing");
    if (o->since != NULL && !valid_date(o->since))
        return bad_usage("--since: expected a date YYYY-MM-DD (UTC), got %s",
                         quote(q, sizeof(q), o->since));
    if (o->until != NULL && !valid_date(o->until))
        return bad_usage("--until: expected a date YYYY-MM-DD (UTC), got %s",
                         quote(q, sizeof(q), o->until));
    if (o->since != NULL && o->until != NULL && strcmp(o->since, o->until) > 0)
        return bad_usage("--since %s is after --until %s: an empty range", o->since, o->until);
    if (o->key != NULL && !valid_key_name(o->key))
        return bad_usage("--key: expected a key name, 1..%d characters of A-Za-z0-9._- "
                         "(the value is not shown)", USAGE_KEYNAME_MAX);
    return 0;
}

/* ------------------------------------------------------------------ output */

struct line {
    const char *day;       /* NULL: summed over days */
    const char *key;
    const char *model;
    const char *kind;      /* NULL: all kinds */
    int64_t jobs, seconds, failed, refunded_seconds;
};

static void sum(struct line *to, const struct line *x)
{
    to->jobs += x->jobs;
    to->seconds += x->seconds;
    to->failed += x->failed;
    to->refunded_seconds += x->refunded_seconds;
}

static void add(struct line *to, const struct gw_usage_row *r)
{
    to->jobs += r->jobs;
    to->seconds += r->seconds;
    to->failed += r->failed;
    to->refunded_seconds += r->refunded_seconds;
}

/* The rows (ordered by key, model, day) summed per (key, model), or kept per day:
 * lines[0..*nrows) are those, in the same order. */
static struct line *summarise(const struct gw_usage *u, int by_day, size_t *nrows)
{
    struct line *lines = calloc(u->n > 0 ? u->n : 1, sizeof(*lines));
    size_t n = 0;

    if (lines == NULL)
        return NULL;
    for (size_t i = 0; i < u->n; i++) {
        const struct gw_usage_row *r = &u->rows[i];

        if (by_day || n == 0 || strcmp(lines[n - 1].key, r->key_name) != 0 ||
            strcmp(lines[n - 1].model, r->model) != 0 ||
            (r->kind != NULL && strcmp(lines[n - 1].kind, r->kind) != 0)) {
            lines[n].key = r->key_name;
            lines[n].model = r->model;
            lines[n].kind = r->kind;
            lines[n].day = by_day ? r->day : NULL;
            n++;
        }
        add(&lines[n - 1], r);
    }
    *nrows = n;
    return lines;
}

/* A cell of the table: printable ASCII as is, other bytes (a model name passed
 * through from a client) as \xNN, so that widths are columns and no byte can
 * drive the terminal. */
static char *cell(const char *s)
{
    size_t n = strlen(s), o = 0;
    char *r = malloc(n * 4 + 1);

    if (r == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c >= 0x20 && c < 0x7f && c != '\\')
            r[o++] = (char)c;
        else
            o += (size_t)sprintf(r + o, "\\x%02x", c);
    }
    r[o] = '\0';
    return r;
}

#define NCOLS 8 /* key model kind day jobs seconds failed refunded_seconds */
#define NTEXT 4 /* the text columns, left-aligned */

/* One line of the table: its text cells, then x's numbers. */
static void fill(char *row[NCOLS], const char *key, const char *model, const char *kind,
                 const char *day, const struct line *x)
{
    const int64_t v[4] = { x->jobs, x->seconds, x->failed, x->refunded_seconds };
    char num[24];

    row[0] = cell(key);
    row[1] = cell(model);
    row[2] = cell(kind != NULL ? kind : "");
    row[3] = cell(day != NULL ? day : "");
    for (int c = 0; c < 4; c++) {
        snprintf(num, sizeof(num), "%" PRId64, v[c]);
        row[NTEXT + c] = strdup(num);
    }
}

static int print_table(const struct line *rows, size_t nrows, int by_day, int by_kind)
{
    static const char *const head[NCOLS] = { "key",  "model",   "kind",   "day",   "jobs",
                                             "seconds", "failed", "refunded_seconds" };
    size_t nkeys = 0, nlines, li = 0;
    char *(*cells)[NCOLS];
    size_t width[NCOLS] = { 0 };
    struct line key_total = { 0 }, grand = { 0 };
    int rc = GW_ERR;

    /* the header, the rows, a total line per key and the grand total */
    for (size_t i = 0; i < nrows; i++)
        nkeys += i == 0 || strcmp(rows[i].key, rows[i - 1].key) != 0;
    nlines = 1 + nrows + nkeys + (nrows > 0);
    cells = calloc(nlines, sizeof(*cells));
    if (cells == NULL)
        return GW_ERR;

    for (int c = 0; c < NCOLS; c++)
        cells[li][c] = strdup(head[c]);
    li++;
    for (size_t i = 0; i < nrows; i++) {
        fill(cells[li++], rows[i].key, rows[i].model, rows[i].kind, rows[i].day, &rows[i]);
        sum(&key_total, &rows[i]);
        if (i + 1 == nrows || strcmp(rows[i + 1].key, rows[i].key) != 0) {
            fill(cells[li++], rows[i].key, USAGE_TOTAL, NULL, NULL, &key_total);
            sum(&grand, &key_total);
            memset(&key_total, 0, sizeof(key_total));
        }
    }
    if (nrows > 0)
        fill(cells[li++], USAGE_TOTAL, "", NULL, NULL, &grand);

    for (size_t i = 0; i < li; i++) {
        for (int c = 0; c < NCOLS; c++) {
            if (cells[i][c] == NULL)
                goto out;
            if (strlen(cells[i][c]) > width[c])
                width[c] = strlen(cells[i][c]);
        }
    }
    for (size_t i = 0; i < li; i++) {
        const char *sep = "";

        for (int c = 0; c < NCOLS; c++) {
            if ((c == 2 && !by_kind) || (c == 3 && !by_day))
                continue;
            if (c < NTEXT) /* text: left-aligned */
                printf("%s%-*s", sep, (int)width[c], cells[i][c]);
            else       /* numbers: right-aligned */
                printf("%s%*s", sep, (int)width[c], cells[i][c]);
            sep = "  ";
        }
        putchar('\n');
    }
    if (nrows == 0)
        printf("no usage in this range\n");
    rc = GW_OK;
out:
    for (size_t i = 0; i < nlines; i++) {
        for (int c = 0; c < NCOLS; c++)
            free(cells[i][c]);
    }
    free(cells);
    return rc;
}

/* Length of the valid UTF-8 sequence at s, 0 if there is none (s is NUL-terminated). */
static size_t utf8_len(const unsigned char *s)
{
    unsigned lo, hi;

    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        return (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xe0 && s[0] <= 0xef) {
        lo = s[0] == 0xe0 ? 0xa0 : 0x80;
        hi = s[0] == 0xed ? 0x9f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        lo = s[0] == 0xf0 ? 0x90 : 0x80;
        hi = s[0] == 0xf4 ? 0x8f : 0xbf;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 && (s[3] & 0xc0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

/* s as a JSON string; a byte that is not UTF-8 becomes U+FFFD. */
static void json_str(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    putchar('"');
    while (*p != '\0') {
        size_t n = utf8_len(p);

        if (n == 0) {
            fputs("\\ufffd", stdout);
            p++;
        } else if (*p == '"' || *p == '\\') {
            printf("\\%c", *p++);
        } else if (*p < 0x20 || *p == 0x7f) {
            printf("\\u%04x", *p++);
        } else {
            fwrite(p, 1, n, stdout);
            p += n;
        }
    }
    putchar('"');
}

static void print_json(const struct line *rows, size_t nrows, int by_day, int by_kind)
{
    if (nrows == 0) {
        printf("[]\n");
        return;
    }
    printf("[\n");
    for (size_t i = 0; i < nrows; i++) {
        printf("  {");
        if (by_day) {
            printf("\"day\": ");
            json_str(rows[i].day);
            printf(", ");
        }
        printf("\"key\": ");
        json_str(rows[i].key);
        printf(", \"model\": ");
        json_str(rows[i].model);
        if (by_kind) {
            printf(", \"kind\": ");
            json_str(rows[i].kind);
        }
        printf(", \"jobs\": %" PRId64 ", \"seconds\": %" PRId64 ", \"failed\": %" PRId64
               ", \"refunded_seconds\": %" PRId64 "}%s\n",
               rows[i].jobs, rows[i].seconds, rows[i].failed, rows[i].refunded_seconds,
               i + 1 < nrows ? "," : "");
    }
    printf("]\n");
}

/* ------------------------------------------------------------------ command */

int gw_cli_usage(int argc, char **argv)
{
    struct usage_opts o = { 0 };
    struct gw_config *cfg = NULL;
    struct gw_store_options so = { 0 };
    struct gw_usage_query q;
    struct gw_usage *u = NULL;
    struct gw_error err = { 0 };
    struct line *rows = NULL;
    size_t nrows = 0;
    int rc;

    rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc < 0 ? 0 : rc;

    rc = 1;
    /* the whole configuration is checked, but its secrets are never resolved: usage
     * works from a shell without the gateway's environment, and holds no key */
    cfg = gw_config_load_refs(o.conf, stderr);
    if (cfg == NULL) {
        fprintf(stderr, "gateway usage: configuration %s has errors\n", o.conf);
        goto out;
    }
    if (!gw_server_store_options(cfg, &so)) {
        fprintf(stderr, "gateway usage: %s: usage needs [store] path (the gateway's SQLite "
                        "file) or backend = redis; this configuration has neither\n", o.conf);
        goto out;
    }
    q = (struct gw_usage_query){ .since = o.since, .until = o.until, .key_name = o.key,
                                 .by_kind = o.by_kind };
    if (gw_store_usage_read(&so, &q, &u, &err) != GW_OK) {
        fprintf(stderr, "gateway usage: %s\n", err.message);
        goto out;
    }
    rows = summarise(u, o.by_day, &nrows);
    if (rows == NULL) {
        fprintf(stderr, "gateway usage: out of memory\n");
        goto out;
    }
    if (o.json)
        print_json(rows, nrows, o.by_day, o.by_kind);
    else if (print_table(rows, nrows, o.by_day, o.by_kind) != GW_OK) {
        fprintf(stderr, "gateway usage: out of memory\n");
        goto out;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "gateway usage: cannot write the output (%s)\n", strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(rows);
    gw_store_usage_free(u);
    gw_config_free(cfg);
    return rc;
}
