/*
 * cli_keys.c - `gateway keys`: the team keys kept in the store, from a shell,
 * with or without a running gateway (a running one sees a change within a
 * second: keysync.c polls the store's keys_version).
 *
 *   gateway keys add NAME [limits]     a new key: its secret printed once
 *   gateway keys list [--json]         config keys (read-only) and store keys
 *   gateway keys set NAME [limits]     change limits ("default": the [limits] one)
 *   gateway keys revoke NAME           refused from its next request on
 *   limits: --rpm N --burst N --concurrency N --daily-seconds N --models a,b
 *           --expires YYYY-MM-DD|never
 *
 * The configuration is read as `gateway usage` reads it (gw_config_load_refs:
 * no upstream secret resolved): for [store] (a path, or backend = redis), the config's key names (a
 * store key may not take one) and its catalog (model names are checked and
 * kept as the names sent upstream).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "cli_keys.h"
#include "config.h"
#include "keytab.h"
#include "server.h"
#include "store/store.h"

static const char synopsis[] =
    "usage: gateway keys add NAME [-c FILE] [--rpm N] [--burst N] [--concurrency N]\n"
    "                       [--daily-seconds N] [--models A,B] [--expires DATE|never]\n"
    "       gateway keys set NAME [-c FILE] [the same options; N may be \"default\"]\n"
    "       gateway keys revoke NAME [-c FILE]\n"
    "       gateway keys list [-c FILE] [--json]\n";

struct keys_opts {
    const char *conf, *name;
    int json;
    unsigned set;              /* GW_KEY_SET_* given */
    int64_t lim[4];            /* by enum gw_key_limit; -1: default */
    const char *models, *expires;
};

static int bad_usage(const char *msg, const char *what)
{
    fprintf(stderr, "gateway keys: %s%s\n%s", msg, what != NULL ? what : "", synopsis);
    return 2;
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

static int parse(int argc, char **argv, int with_name, struct keys_opts *o, int64_t now,
                 int64_t *expires_at)
{
    static const struct { const char *opt; enum gw_key_limit which; unsigned bit; } lims[] = {
        { "--rpm", GW_KEY_RPM, GW_KEY_SET_RPM },
        { "--burst", GW_KEY_BURST, GW_KEY_SET_BURST },
        { "--concurrency", GW_KEY_CONCURRENCY, GW_KEY_SET_CONCURRENCY },
        { "--daily-seconds", GW_KEY_DAILY_SECONDS, GW_KEY_SET_DAILY_SECONDS },
    };
    struct gw_error err;
    int i = 2;

    o->conf = "gateway.conf";
    for (int k = 0; k < 4; k++)
        o->lim[k] = -1;
    if (with_name) {
        if (argc < 3 || argv[2][0] == '-')
            return bad_usage("expected a key name", NULL);
        o->name = argv[i++];
        if (gw_store_key_name_ok(o->name) != GW_OK)
            return bad_usage("a key name is 1 to 64 characters of A-Z a-z 0-9 _ . -", NULL);
    }
    for (; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t k;
        if (strcmp(a, "--json") == 0) {
            o->json = 1;
            continue;
        }
        if (v == NULL)
            return bad_usage("expected a value after ", a);
        i++;
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            o->conf = v;
            continue;
        }
        if (strcmp(a, "--models") == 0) {
            o->models = v;
            o->set |= GW_KEY_SET_MODELS;
            continue;
        }
        if (strcmp(a, "--expires") == 0) {
            o->set |= GW_KEY_SET_EXPIRES;
            *expires_at = 0;
            if (strcmp(v, "never") != 0 &&
                gw_keytab_parse_expires(v, now, expires_at, &err) != GW_OK)
                return bad_usage(err.message, NULL);
            continue;
        }
        for (k = 0; k < 4 && strcmp(a, lims[k].opt) != 0; k++)
            ;
        if (k == 4)
            return bad_usage("unknown option ", a);
        char *end;
        long long n = strtoll(v, &end, 10);
        if (strcmp(v, "default") == 0)
            n = -1;
        else if (end == v || *end != '\0' || n < 0)
            return bad_usage("expected a number or \"default\" after ", a);
        if (gw_keytab_check_limit(lims[k].which, n, &err) != GW_OK)
            return bad_usage(err.message, NULL);
        o->lim[lims[k].which] = n;
        o->set |= lims[k].bit;
    }
    return 0;
}

/* The config's store and keys; NULL (reported) when unusable. */
static struct gw_config *load_config(const struct keys_opts *o, struct gw_store_options *so)
{
    struct gw_config *cfg = gw_config_load_refs(o->conf, stderr);

    if (cfg == NULL) {
        fprintf(stderr, "gateway keys: configuration %s has errors\n", o->conf);
        return NULL;
    }
    if (!gw_server_store_options(cfg, so)) {
        fprintf(stderr, "gateway keys: %s has no [store] path nor backend = redis: keys are "
                "kept in the store\n", o->conf);
        gw_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* The models as the store keeps them: names sent upstream, comma-separated.
 * NULL (reported) for a model the catalog refuses. Owned by the caller. */
static char *canonical_models(const struct gw_config *cfg, const char *list)
{
    struct gw_names n;
    char unknown[80];
    int bad;
    size_t len = 1;
    char *out;

    if (gw_keytab_models(cfg, list, &n, unknown, sizeof(unknown), &bad) != GW_OK)
        return NULL;
    if (bad) {
        fprintf(stderr, "gateway keys: --models: %s is no model or alias of the catalog\n",
                unknown);
        gw_keytab_names_free(&n);
        return NULL;
    }
    for (unsigned i = 0; i < n.n; i++)
        len += strlen(n.v[i]) + 1;
    if ((out = calloc(1, len)) != NULL) {
        for (unsigned i = 0; i < n.n; i++) {
            if (i > 0)
                strcat(out, ",");
            strcat(out, n.v[i]);
        }
    }
    gw_keytab_names_free(&n);
    return out;
}

struct result {
    int exists, has_key, revoked, revoked_before;
};

static void got(void *arg, const struct gw_store_res *res)
{
    struct result *r = arg;

    r->exists = res->key_exists;
    r->has_key = res->key != NULL;
    r->revoked = res->key_revoked;
    r->revoked_before = res->key != NULL && res->key->revoked_at != 0 && !res->key_revoked;
}

static int in_config(const struct gw_config *cfg, const char *name)
{
    return gw_keytab_find(cfg, NULL, name) != NULL;
}

static int cmd_add(const struct keys_opts *o, const struct gw_config *cfg,
                   const struct gw_store_options *so, int64_t expires_at)
{
    char secret[GW_AUTH_SECRET_LEN + 1];
    struct gw_store_key k = { .name = o->name, .rpm = o->lim[0], .burst = o->lim[1],
                              .concurrency = o->lim[2], .daily_seconds = o->lim[3],
                              .expires_at = expires_at, .created_at = now_s() };
    struct result r = { 0 };
    struct gw_error err;
    char *models = canonical_models(cfg, o->models != NULL ? o->models : "");
    int rc = 1;

    if (models == NULL)
        return 1;
    if (in_config(cfg, o->name)) {
        fprintf(stderr, "gateway keys: %s is a key of %s ([key %s]): pick another name\n",
                o->name, o->conf, o->name);
        goto out;
    }
    if (gw_auth_new_secret(secret, k.sha256) != GW_OK) {
        fprintf(stderr, "gateway keys: no randomness available\n");
        goto out;
    }
    k.models = models;
    if (gw_store_key_put_sync(so, &k, got, &r, &err) != GW_OK) {
        fprintf(stderr, "gateway keys: %s\n", err.message);
        goto out;
    }
    if (r.exists) {
        fprintf(stderr, "gateway keys: a key named %s exists (revoked names stay taken)\n",
                o->name);
        goto out;
    }
    printf("# Team key \"%s\" (shown once; give it to its owner, it is not stored):\n%s\n",
           o->name, secret);
    rc = 0;

out:
    memset(secret, 0, sizeof(secret));
    free(models);
    return rc;
}

static int cmd_set(const struct keys_opts *o, const struct gw_config *cfg,
                   const struct gw_store_options *so, int64_t expires_at)
{
    struct gw_store_key_patch p = { .name = o->name, .set = o->set, .rpm = o->lim[0],
                                    .burst = o->lim[1], .concurrency = o->lim[2],
                                    .daily_seconds = o->lim[3], .expires_at = expires_at,
                                    .now = now_s() };
    struct result r = { 0 };
    struct gw_error err;
    char *models = NULL;
    int rc = 1;

    if (in_config(cfg, o->name)) {
        fprintf(stderr, "gateway keys: %s is declared in %s: change it there (then reload)\n",
                o->name, o->conf);
        return 1;
    }
    if (o->set == 0)
        return bad_usage("set: nothing to change", NULL);
    if ((o->set & GW_KEY_SET_MODELS) && (models = canonical_models(cfg, o->models)) == NULL)
        return 1;
    p.models = models;
    if (gw_store_key_patch_sync(so, &p, got, &r, &err) != GW_OK)
        fprintf(stderr, "gateway keys: %s\n", err.message);
    else if (!r.has_key)
        fprintf(stderr, "gateway keys: no active key named %s\n", o->name);
    else
        rc = 0;
    free(models);
    return rc;
}

static int cmd_revoke(const struct keys_opts *o, const struct gw_config *cfg,
                      const struct gw_store_options *so)
{
    struct result r = { 0 };
    struct gw_error err;

    if (in_config(cfg, o->name)) {
        fprintf(stderr, "gateway keys: %s is declared in %s: remove it there (then reload)\n",
                o->name, o->conf);
        return 1;
    }
    if (gw_store_key_revoke_sync(so, o->name, now_s(), got, &r, &err) != GW_OK) {
        fprintf(stderr, "gateway keys: %s\n", err.message);
        return 1;
    }
    if (!r.has_key) {
        fprintf(stderr, "gateway keys: no key named %s\n", o->name);
        return 1;
    }
    printf("%s %s\n", o->name, r.revoked ? "revoked" : "was already revoked");
    return 0;
}

/* ------------------------------------------------------------------- list */

struct lister {
    const struct gw_config *cfg;
    int json;
};

static void day_of(int64_t t, char out[24])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t == 0 || gmtime_r(&tt, &tm) == NULL)
        snprintf(out, 24, "-");
    else
        strftime(out, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void limit_str(int64_t v, char out[24])
{
    if (v < 0)
        snprintf(out, 24, "default");
    else
        snprintf(out, 24, "%" PRId64, v);
}

static void print_row(const char *name, const char *source, const char *state,
                      const int64_t lim[4], const char *models, int64_t expires)
{
    char l[4][24], e[24];

    for (int i = 0; i < 4; i++)
        limit_str(lim[i], l[i]);
    day_of(expires, e);
    printf("%-24s %-6s %-8s %7s %7s %11s %13s %-20s %s\n", name, source, state, l[0], l[1],
           l[2], l[3], e, models[0] != '\0' ? models : "*");
}

static void listed(void *arg, const struct gw_store_res *res)
{
    const struct lister *ls = arg;
    const struct gw_config *cfg = ls->cfg;
    int64_t now = now_s();

    if (ls->json)
        printf("[");
    else
        printf("%-24s %-6s %-8s %7s %7s %11s %13s %-20s %s\n", "name", "source", "state",
               "rpm", "burst", "concurrency", "daily_seconds", "expires", "models");
    for (unsigned i = 0; i < cfg->nkeys; i++) {
        const struct gw_team_key *k = &cfg->keys[i];
        const int64_t lim[4] = { k->limits.rpm, k->limits.burst, k->limits.concurrency,
                                 k->limits.daily_seconds };
        if (ls->json) {
            printf("%s{\"name\":\"%s\",\"source\":\"config\",\"admin\":%s,\"rpm\":%d,"
                   "\"burst\":%d,\"concurrency\":%d,\"daily_seconds\":%d,"
                   "\"expires_at\":%lld}",
                   i ? "," : "", k->name, k->admin ? "true" : "false", k->limits.rpm,
                   k->limits.burst, k->limits.concurrency, k->limits.daily_seconds,
                   (long long)(k->expires_ms / 1000));
            continue;
        }
        print_row(k->name, "config", k->expires_ms && k->expires_ms / 1000 <= now ? "expired"
                                                                                   : "active",
                  lim, "", k->expires_ms / 1000);
    }
    for (size_t i = 0; i < res->nkeys; i++) {
        const struct gw_store_key *k = &res->keys[i];
        const int64_t lim[4] = { k->rpm, k->burst, k->concurrency, k->daily_seconds };
        const char *state = k->revoked_at ? "revoked"
                            : k->expires_at && k->expires_at <= now ? "expired"
                                                                    : "active";
        if (ls->json) {
            /* names and models are [A-Za-z0-9_.-] and model names of the catalog or
             * of the caller's --models: escaped all the same */
            printf("%s{\"name\":\"%s\",\"source\":\"store\",\"state\":\"%s\",\"rpm\":%" PRId64
                   ",\"burst\":%" PRId64 ",\"concurrency\":%" PRId64
                   ",\"daily_seconds\":%" PRId64 ",\"expires_at\":%" PRId64
                   ",\"created_at\":%" PRId64 ",\"revoked_at\":%" PRId64 "}",
                   cfg->nkeys + i ? "," : "", k->name, state, k->rpm, k->burst,
                   k->concurrency, k->daily_seconds, k->expires_at, k->created_at,
                   k->revoked_at);
            continue;
        }
        print_row(k->name, "store", state, lim, k->models, k->expires_at);
    }
    if (ls->json)
        printf("]\n");
}

static int cmd_list(const struct keys_opts *o, const struct gw_config *cfg,
                    const struct gw_store_options *so)
{
    struct lister ls = { cfg, o->json };
    struct gw_error err;

    if (gw_store_keys_list_sync(so, NULL, 0, listed, &ls, &err) != GW_OK) {
        fprintf(stderr, "gateway keys: %s\n", err.message);
        return 1;
    }
    return 0;
}

int gw_cli_keys(int argc, char **argv)
{
    struct keys_opts o;
    struct gw_store_options so;
    struct gw_config *cfg;
    int64_t now = now_s(), expires_at = 0;
    const char *cmd = argc >= 2 ? argv[1] : "";
    int rc;

    memset(&o, 0, sizeof(o));
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        fputs(synopsis, stdout);
        return 0;
    }
    int named = strcmp(cmd, "add") == 0 || strcmp(cmd, "set") == 0 ||
                strcmp(cmd, "revoke") == 0;
    if (!named && strcmp(cmd, "list") != 0)
        return bad_usage("expected add, list, set or revoke", NULL);
    if ((rc = parse(argc, argv, named, &o, now, &expires_at)) != 0)
        return rc;
    if (strcmp(cmd, "revoke") == 0 && o.set != 0)
        return bad_usage("revoke takes no limits", NULL);
    if ((cfg = load_config(&o, &so)) == NULL)
        return 1;
    if (strcmp(cmd, "add") == 0)
        rc = cmd_add(&o, cfg, &so, expires_at);
    else if (strcmp(cmd, "set") == 0)
        rc = cmd_set(&o, cfg, &so, expires_at);
    else if (strcmp(cmd, "revoke") == 0)
        rc = cmd_revoke(&o, cfg, &so);
    else
        rc = cmd_list(&o, cfg, &so);
    gw_config_free(cfg);
    return rc;
}
