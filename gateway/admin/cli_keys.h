/*
 * cli_keys.h - `gateway keys add|list|set|revoke` (cli_keys.c).
 */
#ifndef GW_CLI_KEYS_H
#define GW_CLI_KEYS_H

/* argv[0] is "keys". Returns the exit code: 0, 1 (configuration or store
 * unusable, or the change refused: a name taken, no such key), 2 (bad usage). */
int gw_cli_keys(int argc, char **argv);

#endif
