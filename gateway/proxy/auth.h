/*
 * auth.h - team keys: "Authorization: Bearer <key>" checked against the SHA-256
 * hashes of the config, in constant time. The key itself is never stored,
 * logged or forwarded.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include "config.h"
#include "keytab.h"

/* Returns the matching key record (of cfg, or of the store's keys in tab, which
 * may be NULL), or NULL (missing header, other scheme, unknown or revoked key, a
 * key whose `expires` is at or before now_unix_ms, wall-clock UTC).
 * `authorization` may be NULL. */
const struct gw_team_key *gw_auth_check(const struct gw_config *cfg, const struct gw_keytab *tab,
                                        const char *authorization, int64_t now_unix_ms);

/* Secrets as `gateway mint-key` makes them: "sk-vgw-" and 32 random characters
 * of [A-Za-z0-9_-] (192 bits). */
#define GW_AUTH_SECRET_LEN 39

/* A new secret into key (NUL-terminated) and its SHA-256. GW_ERR when the
 * system has no randomness to give. */
int gw_auth_new_secret(char key[GW_AUTH_SECRET_LEN + 1], unsigned char sha256[32]);

#endif
