/*
 * keytab.h - the team keys kept in the store, as the event loops see them: an
 * immutable table built from the store's rows and the current config (whose
 * [limits] fill the limits a key leaves at the default, and whose catalog
 * turns its model allowlist into the names sent upstream). Published to every
 * loop as a reload publishes a config (refcounted): a request holds the table
 * it started with, so a key cannot change under it.
 *
 * Only active keys are in it: a revoked key is simply not found (401). A store
 * key named like a config key is left out (the config's wins; the admin API
 * refuses to make one).
 */
#ifndef GW_KEYTAB_H
#define GW_KEYTAB_H

#include <stdint.h>

#include "config.h"
#include "store/store.h"

struct gw_keytab {
    int refs;                 /* holders; freed at 0. Atomic. */
    uint64_t version;         /* the store's keys_version it was built from */
    struct gw_team_key *keys; /* ordered by sha256 (gw_keytab_lookup); admin is always 0:
                               * the API makes no admin keys */
    unsigned nkeys;
    unsigned skipped;         /* store keys left out: named like a config key */
};

/*
 * A table of the active keys among rows[0..n), for cfg. NULL when out of
 * memory. One reference, the caller's.
 */
struct gw_keytab *gw_keytab_build(const struct gw_config *cfg, const struct gw_store_key *rows,
                                  size_t n, uint64_t version);

/*
 * The key whose SHA-256 is sha256, or NULL: a binary search, O(log n). Not
 * constant-time, and it need not be: what is compared is the SHA-256 of a
 * 192-bit random secret, so timing can at most tell an attacker how many
 * leading bytes of a digest of *their own guess* match some key's digest, which
 * does not help find an input with a chosen digest (preimage resistance). A
 * linear constant-time scan cost 118 us per request at 1000 keys.
 */
const struct gw_team_key *gw_keytab_lookup(const struct gw_keytab *t,
                                           const unsigned char sha256[32]);

/* Atomic: any thread. NULL is ignored. */
void gw_keytab_hold(const struct gw_keytab *t);
void gw_keytab_release(const struct gw_keytab *t);

/* The key of this name in cfg, else in t (may be NULL), else NULL. */
const struct gw_team_key *gw_keytab_find(const struct gw_config *cfg, const struct gw_keytab *t,
                                         const char *name);

/* Split a comma list of model names ("a,b", spaces around names ignored) into
 * out (owned), each resolved to the name sent upstream through cfg's catalog
 * (kept as written if the catalog does not know it). GW_ERR when out of memory.
 * *unknown (may be NULL) is set to the first name the catalog refuses (an
 * unknown model with [models] unknown = refuse), into unknown_buf. */
int gw_keytab_models(const struct gw_config *cfg, const char *list, struct gw_names *out,
                     char *unknown_buf, size_t unknown_cap, int *unknown);

void gw_keytab_names_free(struct gw_names *n);

/* ---------------------------------------------- values, for the API and CLI */

enum gw_key_limit { GW_KEY_RPM = 0, GW_KEY_BURST, GW_KEY_CONCURRENCY, GW_KEY_DAILY_SECONDS };

/* "rpm", "burst", "concurrency", "daily_seconds" */
const char *gw_keytab_limit_name(enum gw_key_limit which);

/* A limit's value as the config bounds it (rpm 0..100000, burst and
 * concurrency 0..1000000, daily_seconds 0..100000000; 0: unlimited), or -1
 * (the [limits] default). GW_ERR with a 400 (param: the limit's name) otherwise. */
int gw_keytab_check_limit(enum gw_key_limit which, int64_t v, struct gw_error *err);

/*
 * An expiry: "YYYY-MM-DD" (00:00 UTC that day, as the config's `expires`) or
 * "YYYY-MM-DDTHH:MM:SSZ", into unix seconds; it must be after now (unix s).
 * GW_ERR with a 400 (param "expires") for anything else or a past instant.
 */
int gw_keytab_parse_expires(const char *s, int64_t now, int64_t *out, struct gw_error *err);

#endif
