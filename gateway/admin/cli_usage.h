/*
 * cli_usage.h - `gateway usage`: the usage ledger (the store's usage_daily rows)
 * summed per team key and model over a range of UTC days, as a table or JSON.
 *
 *   gateway usage [-c FILE] [--since DATE] [--until DATE] [--key NAME] [--by-day] [--json]
 *
 * It reads only `[store] path` from the configuration (following `include`), never
 * the rest: the upstream key references are not resolved, so it runs without the
 * gateway's environment and never holds a secret. The database is opened read-only
 * (gw_store_usage_read): fine while a gateway runs on it.
 */
#ifndef GW_CLI_USAGE_H
#define GW_CLI_USAGE_H

/*
 * argv[0] is "usage", then the options. Writes the result to stdout, errors to
 * stderr. Returns the exit code: 0 (also when there is no usage in the range),
 * 1 (the configuration or the database cannot be read), 2 (bad options).
 */
int gw_cli_usage(int argc, char **argv);

#endif
