/*
 * auth.h - team keys: "Authorization: Bearer <key>" checked against the SHA-256
 * hashes of the config, in constant time. The key itself is never stored,
 * logged or forwarded.
 */
#ifndef GW_AUTH_H
#define GW_AUTH_H

#include "config.h"

/* Returns the matching key record, or NULL (missing header, other scheme,
 * unknown key, a key whose `expires` is at or before now_unix_ms, wall-clock UTC).
 * `authorization` may be NULL. */
const struct gw_team_key *gw_auth_check(const struct gw_config *cfg, const char *authorization,
                                        int64_t now_unix_ms);

#endif
