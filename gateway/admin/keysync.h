/*
 * keysync.h - keeps every event loop's table of store-kept keys current
 * (keytab.h). Runs on one loop (the first): every GW_KEYSYNC_POLL_MS it asks
 * the store for keys_version (one row; through the store thread, never
 * blocking the loop); when it moved (the admin API, `gateway keys` in another
 * process, another instance on a shared store) it loads every key, builds a
 * new table against the current config, binds its keys to the limiter and
 * hands it to publish(), which swaps it into every loop. A change made
 * anywhere is live within GW_KEYSYNC_POLL_MS plus one load.
 */
#ifndef GW_KEYSYNC_H
#define GW_KEYSYNC_H

#include <stdint.h>

#include "keytab.h"
#include "server.h"

#define GW_KEYSYNC_POLL_MS 500

struct gw_keysync;
struct gw_keysync_wait;

/* Called on the keysync's loop with a new table (one reference, the callee's);
 * returns the table it replaced, whose reference passes to the keysync, which
 * releases it a second later. (Each loop holds its own reference to the table
 * it uses and swaps it on its own thread: the delay is no longer what keeps a
 * loop from reading a freed table, only a margin.) */
typedef struct gw_keytab *(*gw_keysync_publish_fn)(void *arg, struct gw_keytab *tab);

/* Start polling on w's loop (w->store must be set), the table of `version`
 * already published. NULL when out of memory. */
struct gw_keysync *gw_keysync_start(struct gw_worker *w, struct gw_limiter *lim,
                                    uint64_t version, gw_keysync_publish_fn publish,
                                    void *arg);

/*
 * Load and publish now (a write was just made through this store), then call
 * done(arg) on the keysync's loop, also if the load failed (the previous table
 * stays; the next poll tries again). Returns a handle for gw_keysync_cancel
 * (NULL when out of memory: done is then never called).
 */
struct gw_keysync_wait *gw_keysync_kick(struct gw_keysync *ks, void (*done)(void *arg),
                                        void *arg);

/* done will not be called (its request went away). */
void gw_keysync_cancel(struct gw_keysync_wait *wt);

/* Rebuild at the next poll even if no key changed (a reload brought other
 * [limits] defaults or another catalog). Any thread. */
void gw_keysync_force(struct gw_keysync *ks);

#endif
