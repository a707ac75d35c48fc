/*
 * idindex.h - the SQLite engine's index of job ids, in memory: a multimap
 * from a 64-bit hash of an id to the jobs rows (seq, the rowid) that may hold
 * it. Pure: no I/O; owned by the store thread.
 *
 * Why not an index in the file: upstream ids are random, so a B-tree on them
 * takes one new row into a random leaf, and every create then writes that
 * leaf's 4 KiB page to the WAL at COMMIT and again at the checkpoint: two
 * thirds of the store's cost per create (docs/benchmarks.md). The rows only
 * append (seq is the insertion order); this map finds them.
 *
 * The map is a set of hints, checked against the table: an entry is right only
 * if row seq holds an id with that hash and the very id asked for (the caller
 * compares). So an entry left behind by an insert that was rolled back, or by a
 * row that was pruned, is harmless: it finds nothing, and is removed later.
 * What must never happen is a committed row without its entry: an insert adds
 * its entry before its transaction commits.
 */
#ifndef GW_IDINDEX_H
#define GW_IDINDEX_H

#include <stddef.h>
#include <stdint.h>

struct gw_idindex_slot {
    uint64_t hash;
    int64_t seq; /* > 0: taken; 0: empty; -1: removed (a probe goes on past it) */
};

struct gw_idindex {
    struct gw_idindex_slot *slots;
    size_t cap;      /* a power of two, or 0 */
    size_t used;     /* entries */
    size_t removed;  /* slots marked removed */
};

/* The hash of an id (any bytes). */
uint64_t gw_idindex_hash(const char *id, size_t len);

/* Add (hash, seq), seq > 0; an entry already there is not added twice.
 * GW_OK, or GW_ERR out of memory (the map is unchanged). */
int gw_idindex_add(struct gw_idindex *ix, uint64_t hash, int64_t seq);

/* Room for one more entry: after GW_OK, the next gw_idindex_add cannot fail.
 * GW_ERR out of memory (the map is unchanged). */
int gw_idindex_reserve(struct gw_idindex *ix);

/* Remove (hash, seq) if it is there. */
void gw_idindex_remove(struct gw_idindex *ix, uint64_t hash, int64_t seq);

/* The rows that may hold an id of this hash, one per call: start with
 * *pos = 0; each call returns the next seq, or 0 when there are no more. The
 * map must not change between the calls of one walk. */
int64_t gw_idindex_next(const struct gw_idindex *ix, uint64_t hash, size_t *pos);

void gw_idindex_free(struct gw_idindex *ix);

#endif
