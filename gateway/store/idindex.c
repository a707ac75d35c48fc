/*
 * idindex.c - open addressing with linear probing over 16-byte slots, kept at
 * most half full (counting removed slots), so a probe is short and a walk for
 * a hash ends at the first empty slot. About 32-48 bytes per job in memory.
 */
#include <stdlib.h>

#include "gw.h"
#include "idindex.h"

#define MIN_CAP 1024

uint64_t gw_idindex_hash(const char *id, size_t len)
{
    /* FNV-1a, then a 64-bit finaliser (murmur3's) so that the low bits, which
     * pick the slot, depend on every byte. Ids come from the upstream, not from
     * clients: no need for a keyed hash. */
    uint64_t h = UINT64_C(0xcbf29ce484222325);

    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)id[i];
        h *= UINT64_C(0x100000001b3);
    }
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* Into the first slot not taken from the hash's home; 1 if it was a removed one. */
static int put_slot(struct gw_idindex_slot *slots, size_t cap, uint64_t hash, int64_t seq)
{
    size_t i = (size_t)hash & (cap - 1);
    int reused;

    while (slots[i].seq > 0)
        i = (i + 1) & (cap - 1);
    reused = slots[i].seq < 0;
    slots[i].hash = hash;
    slots[i].seq = seq;
    return reused;
}

/* Into a new table of cap slots: drops the removed marks. */
static int rehash(struct gw_idindex *ix, size_t cap)
{
    struct gw_idindex_slot *slots = calloc(cap, sizeof(*slots));

    if (slots == NULL)
        return GW_ERR;
    for (size_t i = 0; i < ix->cap; i++) {
        if (ix->slots[i].seq > 0)
            put_slot(slots, cap, ix->slots[i].hash, ix->slots[i].seq);
    }
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    ix->removed = 0;
    return GW_OK;
}

int64_t gw_idindex_next(const struct gw_idindex *ix, uint64_t hash, size_t *pos)
{
    if (ix->cap == 0)
        return 0;
    /* *pos counts the slots already probed from the hash's home */
    for (size_t n = *pos; n < ix->cap; n++) {
        const struct gw_idindex_slot *sl = &ix->slots[((size_t)hash + n) & (ix->cap - 1)];
        if (sl->seq == 0)
            break;
        if (sl->seq > 0 && sl->hash == hash) {
            *pos = n + 1;
            return sl->seq;
        }
    }
    *pos = ix->cap;
    return 0;
}

int gw_idindex_reserve(struct gw_idindex *ix)
{
    if ((ix->used + ix->removed + 1) * 2 > ix->cap) {
        size_t cap = ix->cap < MIN_CAP ? MIN_CAP : ix->cap;
        while ((ix->used + 1) * 2 > cap) /* removed marks go: only growth counts */
            cap *= 2;
        if (rehash(ix, cap) != GW_OK)
            return GW_ERR;
    }
    return GW_OK;
}

int gw_idindex_add(struct gw_idindex *ix, uint64_t hash, int64_t seq)
{
    size_t pos = 0;
    int64_t s;

    while ((s = gw_idindex_next(ix, hash, &pos)) != 0) {
        if (s == seq)
            return GW_OK;
    }
    if (gw_idindex_reserve(ix) != GW_OK)
        return GW_ERR;
    if (put_slot(ix->slots, ix->cap, hash, seq))
        ix->removed--;
    ix->used++;
    return GW_OK;
}

void gw_idindex_remove(struct gw_idindex *ix, uint64_t hash, int64_t seq)
{
    if (ix->cap == 0)
        return;
    for (size_t n = 0; n < ix->cap; n++) {
        struct gw_idindex_slot *sl = &ix->slots[((size_t)hash + n) & (ix->cap - 1)];
        if (sl->seq == 0)
            return;
        if (sl->seq == seq && sl->hash == hash) {
            sl->seq = -1;
            ix->used--;
            ix->removed++;
            return;
        }
    }
}

void gw_idindex_free(struct gw_idindex *ix)
{
    free(ix->slots);
    ix->slots = NULL;
    ix->cap = ix->used = ix->removed = 0;
}
