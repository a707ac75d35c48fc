/*
 * keypool.c - upstream key rotation with rest periods (see keypool.h).
 */
#include "keypool.h"

void gw_keypool_init(struct gw_keypool *kp, unsigned nkeys)
{
    kp->n = nkeys > GW_KEYPOOL_MAX ? GW_KEYPOOL_MAX : nkeys;
    kp->next = 0;
    for (unsigned i = 0; i < GW_KEYPOOL_MAX; i++)
        kp->rest_until[i] = 0;
}

unsigned gw_keypool_pick(struct gw_keypool *kp, int64_t now_ms)
{
    unsigned best = kp->next % (kp->n ? kp->n : 1);

    for (unsigned k = 0; k < kp->n; k++) {
        unsigned i = (kp->next + k) % kp->n;
        if (kp->rest_until[i] <= now_ms) {
            kp->next = i + 1;
            return i;
        }
        if (kp->rest_until[i] < kp->rest_until[best])
            best = i;
    }
    /* every key rests: the one back first */
    kp->next = best + 1;
    return best;
}

/* Retry-After as delta-seconds; an HTTP-date or garbage gives -1. */
static int64_t retry_after_ms(struct gw_str v)
{
    int64_t s = 0;

    while (v.len > 0 && (*v.p == ' ' || *v.p == '\t')) {
        v.p++;
        v.len--;
    }
    if (v.len == 0 || v.len > 9)
        return -1;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        s = s * 10 + (v.p[i] - '0');
    }
    return s * 1000;
}

void gw_keypool_report(struct gw_keypool *kp, unsigned idx, int status, struct gw_str retry_after,
                       int64_t now_ms)
{
    int64_t rest;

    if (idx >= kp->n)
        return;
    if (status == 401 || status == 403) {
        rest = GW_KEYPOOL_OUT_MS;
        kp->out_until[idx] = now_ms + rest;
    } else if (status == 429) {
        rest = retry_after_ms(retry_after);
        if (rest <= 0)
            rest = GW_KEYPOOL_429_MS;
        if (rest > GW_KEYPOOL_REST_MAX_MS)
            rest = GW_KEYPOOL_REST_MAX_MS;
    } else {
        if (status >= 200 && status < 300)
            kp->rest_until[idx] = kp->out_until[idx] = 0; /* it works: any rest is over */
        return;
    }
    kp->rest_until[idx] = now_ms + rest;
}

int gw_keypool_is_out(const struct gw_keypool *kp, unsigned idx, int64_t now_ms)
{
    return idx < kp->n && kp->out_until[idx] > now_ms;
}
