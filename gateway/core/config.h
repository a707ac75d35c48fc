/*
 * config.h - the gateway's configuration: read from an INI file (inih) into an
 * immutable struct, swapped whole on reload. Pure (stdio only).
 *
 * Errors name file, line, key and the expected value:
 *   gateway.conf:42: limits.rpm: expected integer 1..100000, got "ten"
 * Secrets are referenced (env:NAME, file:PATH), never inlined; resolved values
 * live only in this struct and are never printed.
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "catalog.h"
#include "gw.h"

enum gw_store_backend {
    GW_STORE_SQLITE = 0, /* one instance: an embedded file ([store] path) */
    GW_STORE_REDIS,      /* several instances on one shared Redis */
};

enum gw_store_failure {
    GW_STORE_FAIL_REFUSE = 0, /* Redis unreachable: creates answered 503 */
    GW_STORE_FAIL_LOCAL,      /* ... admitted on this instance's own limits, logged */
};

enum gw_fallback {
    GW_FALLBACK_CHUNKED = 0, /* rewritten body of unknown length goes upstream chunked */
    GW_FALLBACK_SPOOL,       /* ... or is spooled to an unlinked temp file, then sent with CL */
};

/* Per-key limits; 0 = unlimited. [limits] gives the defaults, [key NAME] overrides. */
struct gw_limits {
    int rpm;                   /* creates per minute */
    int burst;                 /* creates at once (GCRA burst; see limits/gcra.h for 0) */
    int concurrency;           /* creates in flight at once */
    int daily_seconds;         /* video-seconds per UTC day */
};

/* A list of names (owned). */
struct gw_names {
    char **v;
    unsigned n;
};

struct gw_team_key {
    char *name;                /* the key's name: what logs show, never the key */
    unsigned char sha256[32];  /* SHA-256 of the key's bytes */
    struct gw_limits limits;
    struct gw_names models;    /* allowlist as upstream (canonical) names; n == 0: all */
    int64_t expires_ms;        /* refused from this UTC instant on (ms); 0 = never */
    int admin;                 /* may use the admin API and read any job */
    unsigned slot;             /* the limiter's state of this key name (set before the
                                  config is published; carries over reloads) */
};

/* A listening address. host NULL: not configured. */
struct gw_listen {
    char *host;                /* "127.0.0.1", "::1" (no brackets) */
    int port;
};

struct gw_config {
    char *path;                /* file it was read from */
    int refs;                  /* holders (gw_config_hold); freed at 0. Atomic. */

    /* [server] */
    struct gw_listen listen;   /* 127.0.0.1:8080 */
    int threads;               /* event loops; 0 = one per core */
    int handover;              /* take a running gateway's listening sockets at start
                                * and give ours to a newer one (handover.c); 1 */
    char *tls_cert;            /* PEM path, NULL = plain HTTP */
    char *tls_key;
    size_t max_body;           /* bytes; larger -> 413 */
    size_t max_json_body;      /* bytes of a JSON body held in memory (1 MiB) */
    size_t max_header_bytes;   /* total request head bytes (32 KiB) */
    size_t lookahead;          /* bytes of body held waiting for `model` (256 KiB) */
    enum gw_fallback fallback;
    char *spool_dir;           /* for GW_FALLBACK_SPOOL ("/tmp") */
    int client_timeout_ms;     /* idle client read/write timeout (60000) */
    int header_timeout_ms;     /* a whole request head, from its first byte (10000) */
    char *access_log;          /* path or "-" for stdout, "off" */
    int log_level;             /* 0 error, 1 warn, 2 info, 3 debug */

    /* [upstream] */
    char *upstream_url;        /* as written, e.g. "https://api.example.com" */
    int upstream_tls;          /* scheme https */
    char *upstream_host;       /* host part (for Host, SNI, verification); an IPv6
                                  literal is stored without its brackets ("::1"):
                                  put them back in a Host header, send no SNI */
    int upstream_port;
    char *upstream_base;       /* path prefix without trailing '/', "" for none; put
                                  before the client's path; one ending in /v1 stands
                                  for the client's own /v1 (proxy.c write_head) */
    char *ca_file;             /* NULL = system default verify paths */
    int tls_verify;            /* 1 (default); 0 only when explicitly configured */
    int connect_timeout_ms;    /* 5000 */
    int response_timeout_ms;   /* 120000: from request sent to response head */
    int idle_timeout_ms;       /* 30000: between bytes of a streaming response */
    int pool_size;             /* idle keep-alive connections kept per thread (16) */
    char **upstream_keys;      /* resolved secrets, round-robin */
    char **upstream_key_labels; /* parallel: the reference as written ("env:NAME",
                                  "file:/abs/path"): stable, never the secret */
    unsigned nupstream_keys;

    /* [store] */
    enum gw_store_backend store_backend; /* backend = sqlite (default) | redis */
    char *store_path;          /* SQLite file (resolved), NULL: no store (sqlite only) */
    int store_sync_full;       /* synchronous = full (1) | normal (0) (sqlite only) */
    char *redis_host;          /* redis = HOST:PORT (IPv6 without brackets); NULL when */
    int redis_port;            /* ... it is unix:PATH */
    char *redis_unix;          /* redis = unix:PATH: the socket's path, else NULL */
    char *redis_password;      /* password = env:NAME | file:PATH, resolved; NULL: none */
    int redis_db;              /* db = 0 (SELECT) */
    char *redis_prefix;        /* prefix = "videogw:": every key the gateway writes */
    int redis_timeout_ms;      /* timeout = 250ms: per command */
    enum gw_store_failure redis_on_failure; /* on_failure = refuse | local */

    /* [jobs] */
    int jobs_refresh_ms;       /* unfinished jobs refreshed from the upstream (30000) */
    int64_t jobs_retention_ms; /* ledger rows older than this are pruned (30 days) */

    /* [admin] */
    struct gw_listen admin;    /* admin listener; host NULL: off */

    /* [limits] */
    struct gw_limits limits;   /* defaults of every key */
    int upstream_rpm;          /* creates per minute towards the upstream, all keys; 0: off */
    int upstream_queue_ms;     /* longest wait for upstream_rpm before a 429 (10000) */

    /* [models] + [model NAME] + [aliases] */
    struct gw_catalog catalog;

    /* [key NAME] */
    struct gw_team_key *keys;
    unsigned nkeys;
};

/*
 * Load and validate `path`. On success returns a new config (free with
 * gw_config_free). On failure returns NULL and writes every error found, one per
 * line as "FILE:LINE: section.key: expected ..., got ...", to `errs` (may be NULL).
 */
struct gw_config *gw_config_load(const char *path, FILE *errs);

/*
 * The same, for tools that need the configuration but not the upstream keys
 * (`gateway usage`): every upstream env:/file: reference is checked for its
 * shape but never resolved (no environment variable read, no key file opened),
 * and upstream_keys holds placeholders, never a secret. Never serve with it.
 * [store] password is resolved all the same: the tool talks to Redis with it.
 */
struct gw_config *gw_config_load_refs(const char *path, FILE *errs);

void gw_config_free(struct gw_config *cfg);

/* The index of the upstream key with this label ("env:NAME"), or -1. */
int gw_config_upstream_key(const struct gw_config *cfg, const char *label);

/*
 * A loaded config starts with one reference. Each holder (the server's "current",
 * every exchange that started under it) takes one; the last release frees it, so
 * in-flight requests finish under the config they started with while a reload
 * publishes another. Atomic: any thread.
 */
void gw_config_hold(const struct gw_config *cfg);
void gw_config_release(const struct gw_config *cfg);

/*
 * The settings a reload cannot change (the listeners, threads, TLS, the upstream,
 * the store, the access log...): NULL when new_cfg keeps old's, else the name of
 * the first that differs ("server.listen"), for the refusal's log line.
 */
const char *gw_config_restart_needed(const struct gw_config *old_cfg,
                                     const struct gw_config *new_cfg);

/*
 * Tests only (the failing-allocation sweep): make allocation number n (0-based,
 * counted from this call) made while loading a config fail; n < 0 turns that off.
 * Returns the number of allocations counted since the previous call. Not
 * thread-safe; never called by the gateway itself.
 */
long gw_config_test_fail_alloc(long n);

#endif
