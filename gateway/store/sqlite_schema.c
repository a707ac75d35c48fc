/*
 * sqlite_schema.c - the SQLite engine's schema, its migrations and the checks
 * open makes on a file before the store thread starts (another program's
 * database, a newer schema, a file or directory it cannot write).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sqlite_int.h"

/* ------------------------------------------------------------------ schema */

/*
 * Migrations: version N is reached by running steps[N - 1] in order, in the
 * same transaction as the PRAGMA user_version that records it. Never edit a
 * step that has shipped: add a version.
 *
 * Version 1 has not shipped yet: no database exists outside the tests. It was
 * changed in place once, on 2026-12-01 (docs/benchmarks.md, "small creates,
 * limits + store"): the indexes took the random job id as their tie-breaker,
 * which cost every create a dirty page in each; they now use seq, the
 * insertion order, and jobs_by_created is gone (prune walks jobs_by_key). A
 * file written by the earlier draft fails at open ("no such column: seq").
 * And once more the same day: `id` lost its UNIQUE index (a random leaf per
 * create; the store finds ids in memory now, idindex.h). A file written with
 * that index works as it is (the index is only kept up to date, unused).
 * From the first release on, a change is a new version.
 */
static const char *const schema_v1[] = {
    /* every job the gateway accepted: ownership, the upstream key, the ledger */
    "CREATE TABLE jobs ("
    " seq          INTEGER PRIMARY KEY,"      /* the rowid: insertion order (max + 1; an
                                               * alias, so VACUUM keeps it) */
    " id           TEXT    NOT NULL,"         /* the upstream's job id: unique, but not
                                               * indexed here (idindex.h says why) */
    " key_name     TEXT    NOT NULL,"         /* owner: the team key's name */
    " upstream_key TEXT    NOT NULL,"         /* label of the upstream key, never the secret */
    " kind         TEXT    NOT NULL,"         /* create | remix | edit | extend */
    " model_asked  TEXT    NOT NULL,"
    " model_sent   TEXT    NOT NULL,"
    " seconds      INTEGER NOT NULL,"
    " size         TEXT    NOT NULL,"
    " status       TEXT    NOT NULL,"         /* queued | in_progress | completed | failed */
    " created_at   INTEGER NOT NULL,"         /* unix s, the job object's */
    " updated_at   INTEGER NOT NULL,"         /* unix s, last change seen */
    " refreshed_at INTEGER NOT NULL,"         /* unix s, last refresh or claim */
    " deleted_at   INTEGER NOT NULL DEFAULT 0,"
    " refunded     INTEGER NOT NULL DEFAULT 0,"
    " object       TEXT    NOT NULL)",        /* the last job object seen (JSON) */
    /* An index entry ends with the rowid (seq), which orders equal keys: these two
     * are (key_name, created_at, seq) and (refreshed_at, seq). The random id as the
     * tie-breaker put each new row on another page of each; seq appends. Also the
     * prune's: per key_name, created_at < the retention's start. */
    "CREATE INDEX jobs_by_key ON jobs(key_name, created_at)",
    "CREATE INDEX jobs_unfinished ON jobs(refreshed_at)"
    " WHERE status IN ('queued', 'in_progress') AND deleted_at = 0",
    /* totals that outlive the pruned jobs */
    "CREATE TABLE usage_daily ("
    " day              TEXT    NOT NULL,"     /* YYYY-MM-DD, UTC, of the jobs' creation */
    " key_name         TEXT    NOT NULL,"
    " model            TEXT    NOT NULL,"     /* model sent */
    " jobs             INTEGER NOT NULL DEFAULT 0,"
    " seconds          INTEGER NOT NULL DEFAULT 0,"
    " failed           INTEGER NOT NULL DEFAULT 0,"
    " refunded_seconds INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (day, key_name, model)) WITHOUT ROWID",
    "CREATE TABLE idempotency ("
    " key_name   TEXT    NOT NULL,"
    " idem_key   TEXT    NOT NULL,"
    " state      TEXT    NOT NULL,"           /* in_flight | done */
    " status     INTEGER NOT NULL DEFAULT 0," /* done: the answer's status */
    " body       BLOB,"                       /* done: the answer's body */
    " created_at INTEGER NOT NULL,"           /* unix s: expires 24 h later */
    " UNIQUE (key_name, idem_key))",
    "CREATE INDEX idempotency_by_created ON idempotency(created_at)",
    NULL,
};

/* Version 2 (issue 8): team keys kept in the store, beside the config's. */
static const char *const schema_v2_keys[] = {
    "CREATE TABLE keys ("
    " name          TEXT    NOT NULL PRIMARY KEY," /* [A-Za-z0-9_.-]{1,64}; never reused */
    " sha256        BLOB    NOT NULL UNIQUE,"      /* 32 bytes: SHA-256 of the secret */
    " rpm           INTEGER NOT NULL DEFAULT -1,"  /* -1: the config's [limits] default */
    " burst         INTEGER NOT NULL DEFAULT -1,"
    " concurrency   INTEGER NOT NULL DEFAULT -1,"
    " daily_seconds INTEGER NOT NULL DEFAULT -1,"
    " models        TEXT    NOT NULL DEFAULT '',"  /* comma list; '': every model */
    " expires_at    INTEGER NOT NULL DEFAULT 0,"   /* unix s; 0: never */
    " created_at    INTEGER NOT NULL,"
    " updated_at    INTEGER NOT NULL,"
    " revoked_at    INTEGER NOT NULL DEFAULT 0)",  /* unix s; 0: active */
    /* bumped by every write to keys, in the same transaction: what the gateway
     * polls (one row read) to notice a change made by another process */
    "CREATE TABLE keys_version ("
    " id      INTEGER PRIMARY KEY CHECK (id = 1),"
    " version INTEGER NOT NULL)",
    "INSERT INTO keys_version(id, version) VALUES(1, 0)",
    NULL,
};

/* Version 3 (issue 9): characters, owned and pinned like jobs. */
static const char *const schema_v3_characters[] = {
    "CREATE TABLE characters ("
    " id           TEXT    NOT NULL PRIMARY KEY," /* the upstream's character id */
    " key_name     TEXT    NOT NULL,"             /* owner: the team key's name */
    " upstream_key TEXT    NOT NULL,"             /* label of the upstream key */
    " name         TEXT    NOT NULL,"
    " created_at   INTEGER NOT NULL,"             /* unix s, the character object's */
    " object       TEXT    NOT NULL)",            /* the character object (JSON) */
    NULL,
};

/* Version 4 (issue 9): usage per kind of job (create, remix, edit, extend), beside
 * usage_daily, which stays as it is. Filled from the jobs still in the ledger: older
 * days that retention pruned have no breakdown. */
static const char *const schema_v4_usage_kinds[] = {
    "CREATE TABLE usage_daily_kind ("
    " day              TEXT    NOT NULL,"
    " key_name         TEXT    NOT NULL,"
    " model            TEXT    NOT NULL,"     /* model sent */
    " kind             TEXT    NOT NULL,"     /* create | remix | edit | extend */
    " jobs             INTEGER NOT NULL DEFAULT 0,"
    " seconds          INTEGER NOT NULL DEFAULT 0,"
    " failed           INTEGER NOT NULL DEFAULT 0,"
    " refunded_seconds INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (day, key_name, model, kind)) WITHOUT ROWID",
    "INSERT INTO usage_daily_kind(day, key_name, model, kind, jobs, seconds, failed, "
    "refunded_seconds) SELECT strftime('%Y-%m-%d', created_at, 'unixepoch'), key_name, "
    "model_sent, kind, count(*), sum(seconds), sum(status = 'failed'), "
    "sum(CASE WHEN refunded THEN seconds ELSE 0 END) FROM jobs GROUP BY 1, 2, 3, 4",
    NULL,
};

static const char *const *const migrations[] = {
    schema_v1,             /* version 1 */
    schema_v2_keys,        /* version 2 */
    schema_v3_characters,  /* version 3 */
    schema_v4_usage_kinds, /* version 4 */
};

_Static_assert(GW_ARRAY_LEN(migrations) == GW_STORE_SCHEMA_VERSION,
               "one migration per schema version");

/* ------------------------------------------------------------------- open */

/* Whether the directory holding path can take new files (the WAL's). */
static int dir_writable(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return access(".", W_OK | X_OK) == 0;
    snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    return access(dir, W_OK | X_OK) == 0;
}

int sq_open_error(struct gw_error *err, const char *path, sqlite3 *db, const char *doing)
{
    int code = db != NULL ? sqlite3_extended_errcode(db) : SQLITE_CANTOPEN;
    const char *msg = db != NULL ? sqlite3_errmsg(db) : "out of memory";

    if ((code & 0xff) == SQLITE_NOTADB)
        return gw_error_set(err, 0, NULL, NULL, NULL,
                            "%s: not an SQLite database (is [store] path the right file?)", path);
    if (code == SQLITE_READONLY_DIRECTORY || (code & 0xff) == SQLITE_CANTOPEN ||
        (code & 0xff) == SQLITE_READONLY) {
        if (access(path, F_OK) == 0 && access(path, R_OK | W_OK) != 0)
            return gw_error_set(err, 0, NULL, NULL, NULL,
                                "%s: the file is not readable and writable by this user", path);
        if (!dir_writable(path))
            return gw_error_set(err, 0, NULL, NULL, NULL,
                                "%s: cannot %s: its directory must exist and be writable by "
                                "this user (the file and its -wal and -shm files live there)",
                                path, doing);
    }
    return gw_error_set(err, 0, NULL, NULL, NULL, "%s: cannot %s: %s", path, doing, msg);
}

int sq_query_int(sqlite3 *db, const char *sql, int64_t *out)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return GW_ERR;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? GW_OK : GW_ERR;
}

int sq_schema_version(sqlite3 *db, const char *path, int64_t *version, struct gw_error *err)
{
    int64_t tables = 0;

    if (sq_query_int(db, "PRAGMA user_version", version) != GW_OK)
        return sq_open_error(err, path, db, "read it");
    if (*version > GW_STORE_SCHEMA_VERSION)
        return gw_error_set(err, 0, NULL, NULL, NULL,
                            "%s: schema version %lld is newer than this gateway knows (%d): run "
                            "the newer gateway that wrote it, or give another file",
                            path, (long long)*version, GW_STORE_SCHEMA_VERSION);
    if (*version < 0)
        return gw_error_set(err, 0, NULL, NULL, NULL, "%s: schema version %lld is not ours",
                            path, (long long)*version);
    if (*version == 0) {
        if (sq_query_int(db, "SELECT count(*) FROM sqlite_master", &tables) != GW_OK)
            return sq_open_error(err, path, db, "read it");
        if (tables > 0)
            return gw_error_set(err, 0, NULL, NULL, NULL,
                                "%s: an SQLite database of another program (tables, but no "
                                "schema version): refusing to change it", path);
    }
    return GW_OK;
}

int sq_migrate(sqlite3 *db, const char *path, struct gw_error *err)
{
    int64_t version;
    char sql[64];

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return sq_open_error(err, path, db, "write it");
    /* again, inside the transaction: another process may have migrated meanwhile */
    if (sq_schema_version(db, path, &version, err) != GW_OK)
        goto fail;
    for (int64_t v = version + 1; v <= GW_STORE_SCHEMA_VERSION; v++) {
        for (const char *const *step = migrations[v - 1]; *step != NULL; step++) {
            if (sqlite3_exec(db, *step, NULL, NULL, NULL) != SQLITE_OK) {
                char doing[64];
                snprintf(doing, sizeof(doing), "sq_migrate it to schema version %lld",
                         (long long)v);
                sq_open_error(err, path, db, doing);
                goto fail;
            }
        }
    }
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", GW_STORE_SCHEMA_VERSION);
    if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sq_open_error(err, path, db, "write it");
        goto fail;
    }
    return GW_OK;

fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return GW_ERR;
}
