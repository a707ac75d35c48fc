/*
 * redis_limits.c - per-key limits in Redis, shared by every instance (see
 * redis_limits.h): the Lua scripts, their arguments and replies, and the
 * leases of concurrency slots with their renewal per loop.
 *
 * The GCRA script is gcra.c's arithmetic in Lua: the bucket in ticks of 1/rpm
 * ms. Lua numbers are doubles, exact to 2^53; now_ms * rpm is not (1.7e12 *
 * 1e5), so the TAT is stored as d ticks ahead of the instant w (ms) it was
 * written at, with the rpm it was measured in: tat - now = d + (w - now) * rpm,
 * exact for years. Redis's own clock (TIME) is the clock: the instances'
 * clocks may differ, the bucket is one.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <event2/event.h>

#include "redis_limits.h"

#define LUA_NOW                                                                       \
    "local t = redis.call('TIME')\n"                                                  \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/* ARGV: prefix, key, rpm, burst, concurrency, lease id, lease ms, upstream_rpm,
 * upstream_queue ms[, day, seconds, daily limit].
 * {status, retry_after_ms, limit, remaining, reset_ms, wait_ms}.
 * Nothing is written unless the create is admitted: the key's decision, then
 * (with the last three) its daily budget, then the upstream's pace (every key,
 * every instance: the next free instant in µs), then the writes of all. */
static const char admit_src[] =
    "local p, key = ARGV[1], ARGV[2]\n"
    "local rpm, burst, conc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    LUA_NOW
    "local T = 60000\n"
    "local R = rpm\n"
    "if R > 100000 then R = 100000 end\n"
    "local rk = p .. 'rate:' .. key\n"
    "local used, changed, span = 0, false, 0\n"
    "if R > 0 then\n"
    "  span = (burst > 0 and burst or R) * T\n"
    "  local grace = math.min(R, T) - 1\n"
    "  local st = redis.call('HMGET', rk, 'w', 'd', 'r')\n"
    "  local w, d, r = tonumber(st[1]), tonumber(st[2]), tonumber(st[3])\n"
    "  if not w or not d or not r or r <= 0 then\n"
    "    used = 0\n"
    "  elseif r == R then\n"
    "    local rel = d + (w - now) * R\n"
    "    if rel < 0 and rel >= -grace then used = rel\n"
    "    elseif rel > 0 then used = rel end\n"
    "  else\n"
    "    local a = d + (w - now) * r\n"
    "    if a < 0 then a = 0 end\n"
    "    local dms = math.ceil(a / r)\n"
    "    if dms >= math.ceil(span / R) then used = span else used = dms * R end\n"
    "    changed = true\n"
    "  end\n"
    "  if used > span then used = span changed = true end\n"
    "end\n"
    "local function res(u)\n"
    "  local reset = 0\n"
    "  if u > 0 then reset = math.ceil(u / R) end\n"
    "  if u + T <= span then return true, math.floor((span - u) / T), reset, 0 end\n"
    "  return false, 0, reset, math.ceil((u + T - span) / R)\n"
    "end\n"
    "local ck = p .. 'conc:' .. key\n"
    "if conc > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', ck, '-inf', now)\n"
    "  if redis.call('ZCARD', ck) >= conc then\n"
    "    if R > 0 then\n"
    "      local _, rem, reset = res(used)\n"
    "      return {1, 1000, R, rem, reset, 0}\n"
    "    end\n"
    "    return {1, 1000, 0, 0, 0, 0}\n"
    "  end\n"
    "end\n"
    "local lim, rem, reset = 0, 0, 0\n"
    "if R > 0 then\n"
    "  local ok, _, rs, retry = res(used)\n"
    "  if not ok then\n"
    "    if changed then\n"
    "      redis.call('HSET', rk, 'w', now, 'd', used, 'r', R)\n"
    "      redis.call('PEXPIRE', rk, math.ceil(used / R) + 60000)\n"
    "    end\n"
    "    return {2, retry, R, 0, rs, 0}\n"
    "  end\n"
    "  local _, rm2, rs2 = res(used + T)\n"
    "  lim, rem, reset = R, rm2, rs2\n"
    "end\n"
    "local qk, qsecs = nil, 0\n"
    "if ARGV[10] then\n"
    "  qk, qsecs = p .. 'quota:' .. ARGV[10], tonumber(ARGV[11])\n"
    "  local qlim = tonumber(ARGV[12])\n"
    "  local qused = tonumber(redis.call('HGET', qk, key) or '0') or 0\n"
    "  if qlim > 0 and qused + qsecs > qlim then\n"
    "    if R > 0 then\n"
    "      local _, rem0, reset0 = res(used)\n"
    "      return {4, 0, R, rem0, reset0, 0}\n"
    "    end\n"
    "    return {4, 0, 0, 0, 0, 0}\n"
    "  end\n"
    "end\n"
    "local urpm, wait, unext = tonumber(ARGV[8]), 0, nil\n"
    "local uk = p .. 'upstream_next'\n"
    "if urpm > 0 then\n"
    "  local now_us = now * 1000\n"
    "  local slot = tonumber(redis.call('GET', uk) or '0') or 0\n"
    "  if slot < now_us then slot = now_us end\n"
    "  local queue_us = tonumber(ARGV[9]) * 1000\n"
    "  if slot - now_us > queue_us then\n"
    "    local retry = math.ceil((slot - now_us - queue_us) / 1000)\n"
    "    if retry < 1 then retry = 1 end\n"
    "    return {3, retry, lim, rem, reset, 0}\n"
    "  end\n"
    "  unext = slot + math.floor(60000000 / urpm)\n"
    "  wait = math.ceil((slot - now_us) / 1000)\n"
    "end\n"
    "if R > 0 then\n"
    "  redis.call('HSET', rk, 'w', now, 'd', used + T, 'r', R)\n"
    "  redis.call('PEXPIRE', rk, math.ceil((used + T) / R) + 60000)\n"
    "end\n"
    "if conc > 0 then\n"
    "  redis.call('ZADD', ck, now + tonumber(ARGV[7]), ARGV[6])\n"
    "  redis.call('PEXPIRE', ck, tonumber(ARGV[7]) * 2)\n"
    "end\n"
    "if qk then\n"
    "  redis.call('HINCRBY', qk, key, qsecs)\n"
    "  redis.call('EXPIRE', qk, 172800)\n"
    "end\n"
    "if unext then\n"
    "  redis.call('SET', uk, string.format('%.0f', unext), 'PX', math.ceil((unext - now * 1000) / 1000) + 60000)\n"
    "end\n"
    "return {0, 0, lim, rem, reset, wait}\n";

/* ARGV: prefix, lease ms, then (key, lease id) pairs: the held slots live on. */
static const char renew_src[] =
    LUA_NOW
    "local ms = tonumber(ARGV[2])\n"
    "local n = 0\n"
    "for i = 3, #ARGV - 1, 2 do\n"
    "  local ck = ARGV[1] .. 'conc:' .. ARGV[i]\n"
    "  n = n + redis.call('ZADD', ck, 'XX', 'CH', now + ms, ARGV[i + 1])\n"
    "  redis.call('PEXPIRE', ck, ms * 2)\n"
    "end\n"
    "return n\n";

/* ARGV: prefix, key, lease id */
static const char release_src[] = "return redis.call('ZREM', ARGV[1] .. 'conc:' .. ARGV[2], ARGV[3])\n";

/* ARGV: prefix, key, day, seconds, limit. {0, used} reserved, {1, used} over budget */
static const char reserve_src[] =
    "local k = ARGV[1] .. 'quota:' .. ARGV[3]\n"
    "local secs, limit = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local used = tonumber(redis.call('HGET', k, ARGV[2]) or '0') or 0\n"
    "if limit > 0 and used + secs > limit then return {1, used} end\n"
    "redis.call('HINCRBY', k, ARGV[2], secs)\n"
    "redis.call('EXPIRE', k, 172800)\n"
    "return {0, used + secs}\n";

/* ARGV: prefix, key, day, seconds: given back, never below 0 */
static const char unreserve_src[] =
    "local k = ARGV[1] .. 'quota:' .. ARGV[3]\n"
    "local v = redis.call('HINCRBY', k, ARGV[2], -tonumber(ARGV[4]))\n"
    "if v < 0 then redis.call('HSET', k, ARGV[2], 0) end\n"
    "return 1\n";

static struct gw_store_script admit_script, renew_script, release_script, reserve_script,
    unreserve_script;
static pthread_once_t scripts_once = PTHREAD_ONCE_INIT;

static void scripts_init(void)
{
    gw_store_script_init(&admit_script, admit_src);
    gw_store_script_init(&renew_script, renew_src);
    gw_store_script_init(&release_script, release_src);
    gw_store_script_init(&reserve_script, reserve_src);
    gw_store_script_init(&unreserve_script, unreserve_src);
}

/* ------------------------------------------------------------- leases */

struct gw_lease {
    struct gw_lease *next, *prev;
    unsigned loop;           /* GW_RLIMITS_LOOPS_MAX: not renewed (no slot) */
    int deferred;            /* only the mark of a decision still to make (gw_rlimits_defer) */
    char key[65];
    char id[48];
};

/* Each loop's held slots, touched by that loop's thread only. Static: what is
 * still held when the process ends stays reachable. */
static struct loop_leases {
    struct gw_lease *head;
    struct event *timer;
    struct gw_store_loop *store;
    int armed;
} loops[GW_RLIMITS_LOOPS_MAX];

void gw_rlimits_lease_id(char id[48])
{
    static uint64_t instance;   /* random per process: ids of two instances never meet */
    static uint64_t counter;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    uint64_t n;

    pthread_mutex_lock(&mu);
    while (instance == 0 && getrandom(&instance, sizeof(instance), 0) != sizeof(instance))
        ;
    n = ++counter;
    pthread_mutex_unlock(&mu);
    snprintf(id, 48, "%016llx:%llu", (unsigned long long)instance, (unsigned long long)n);
}

static void renew_all(evutil_socket_t fd, short what, void *arg)
{
    struct loop_leases *ll = arg;
    const char *args[GW_STORE_SCRIPT_ARGS];
    char ms[16];
    struct gw_error err;

    ll->armed = 0;
    if (ll->head == NULL)
        return;
    snprintf(ms, sizeof(ms), "%d", GW_RLIMITS_LEASE_MS);
    /* (key, id) pairs, as many as a call takes; the replies matter to nobody: a slot
     * that could not be renewed (Redis down) expires, which is the point of a lease */
    for (struct gw_lease *le = ll->head; le != NULL;) {
        unsigned n = 0;
        args[n++] = ms;
        for (; le != NULL && n + 2 <= GW_STORE_SCRIPT_ARGS; le = le->next) {
            args[n++] = le->key;
            args[n++] = le->id;
        }
        gw_store_script(ll->store, &renew_script, n, args, NULL, NULL, NULL, &err);
    }
    struct timeval tv = { GW_RLIMITS_RENEW_MS / 1000, (GW_RLIMITS_RENEW_MS % 1000) * 1000 };
    if (event_add(ll->timer, &tv) == 0)
        ll->armed = 1;
}

struct gw_lease *gw_rlimits_hold(unsigned loop_id, struct gw_store_loop *l,
                                 struct event_base *base, const char *key_name,
                                 const char *lease_id)
{
    struct gw_lease *le = calloc(1, sizeof(*le));

    if (le == NULL)
        return NULL;
    snprintf(le->key, sizeof(le->key), "%s", key_name);
    snprintf(le->id, sizeof(le->id), "%s", lease_id);
    le->loop = GW_RLIMITS_LOOPS_MAX;
    if (lease_id[0] == '\0' || loop_id >= GW_RLIMITS_LOOPS_MAX)
        return le;
    struct loop_leases *ll = &loops[loop_id];
    if (ll->timer == NULL && (ll->timer = evtimer_new(base, renew_all, ll)) == NULL)
        return le; /* not renewed: expires after a lease */
    ll->store = l;
    le->loop = loop_id;
    le->next = ll->head;
    if (ll->head != NULL)
        ll->head->prev = le;
    ll->head = le;
    if (!ll->armed) {
        struct timeval tv = { GW_RLIMITS_RENEW_MS / 1000, (GW_RLIMITS_RENEW_MS % 1000) * 1000 };
        if (event_add(ll->timer, &tv) == 0)
            ll->armed = 1;
    }
    return le;
}

struct gw_lease *gw_rlimits_defer(void)
{
    struct gw_lease *le = calloc(1, sizeof(*le));

    if (le != NULL) {
        le->loop = GW_RLIMITS_LOOPS_MAX;
        le->deferred = 1;
    }
    return le;
}

int gw_rlimits_deferred(const struct gw_lease *le)
{
    return le != NULL && le->deferred;
}

void gw_rlimits_release_id(struct gw_store_loop *l, const char *key_name, const char *lease_id)
{
    const char *args[] = { key_name, lease_id };
    struct gw_error err;

    pthread_once(&scripts_once, scripts_init);
    if (lease_id[0] != '\0')
        gw_store_script(l, &release_script, 2, args, NULL, NULL, NULL, &err);
}

int gw_rlimits_slot(const struct gw_lease *le, const char **key, const char **id)
{
    if (le == NULL || le->loop >= GW_RLIMITS_LOOPS_MAX || le->id[0] == '\0')
        return 0;
    *key = le->key;
    *id = le->id;
    return 1;
}

static void unlink_lease(struct gw_lease *le)
{
    struct loop_leases *ll = &loops[le->loop];

    if (le->prev != NULL)
        le->prev->next = le->next;
    else
        ll->head = le->next;
    if (le->next != NULL)
        le->next->prev = le->prev;
    le->next = le->prev = NULL;
}

void gw_rlimits_forget(struct gw_lease *le)
{
    if (le == NULL || le->loop >= GW_RLIMITS_LOOPS_MAX)
        return;
    unlink_lease(le);
    le->loop = GW_RLIMITS_LOOPS_MAX;
    le->id[0] = '\0';
}

void gw_rlimits_release(struct gw_lease *le)
{
    if (le == NULL)
        return;
    if (le->loop < GW_RLIMITS_LOOPS_MAX) {
        unlink_lease(le);
        gw_rlimits_release_id(loops[le->loop].store, le->key, le->id);
    }
    free(le);
}

/* ---------------------------------------------------------- decisions */

int gw_rlimits_admit(struct gw_store_loop *l, const struct gw_team_key *k,
                     const char *lease_id, int upstream_rpm, int upstream_queue_ms,
                     gw_store_cb cb, void *arg, struct gw_store_op **op, struct gw_error *err)
{
    return gw_rlimits_admit_reserve(l, k, lease_id, upstream_rpm, upstream_queue_ms, -1, 0,
                                    cb, arg, op, err);
}

int gw_rlimits_admit_reserve(struct gw_store_loop *l, const struct gw_team_key *k,
                             const char *lease_id, int upstream_rpm, int upstream_queue_ms,
                             int64_t day, uint32_t secs, gw_store_cb cb, void *arg,
                             struct gw_store_op **op, struct gw_error *err)
{
    char rpm[16], burst[16], conc[16], lease_ms[16], urpm[16], uq[16], d[24], s[16], lim[16];
    const char *args[] = { k->name, rpm, burst, conc, lease_id, lease_ms, urpm, uq, d, s, lim };
    unsigned n = GW_ARRAY_LEN(args);

    pthread_once(&scripts_once, scripts_init);
    if (day < 0) {
        n -= 3; /* no reservation: the headers' decision */
    } else {
        snprintf(d, sizeof(d), "%lld", (long long)day);
        snprintf(s, sizeof(s), "%u", secs);
        snprintf(lim, sizeof(lim), "%d", k->limits.daily_seconds);
    }
    snprintf(rpm, sizeof(rpm), "%d", k->limits.rpm);
    snprintf(burst, sizeof(burst), "%d", k->limits.burst);
    snprintf(conc, sizeof(conc), "%d", k->limits.concurrency);
    snprintf(lease_ms, sizeof(lease_ms), "%d", GW_RLIMITS_LEASE_MS);
    snprintf(urpm, sizeof(urpm), "%d", upstream_rpm);
    snprintf(uq, sizeof(uq), "%d", upstream_queue_ms);
    return gw_store_script(l, &admit_script, n, args, cb, arg, op, err);
}

int gw_rlimits_decode(const struct gw_store_res *res, struct gw_rlimits_decision *d)
{
    memset(d, 0, sizeof(*d));
    if (res->rc != GW_OK || res->nints != 6 || res->ints[0] < 0 || res->ints[0] > 4 ||
        res->ints[2] < 0 || res->ints[2] > GW_GCRA_RPM_MAX || res->ints[3] < 0 ||
        res->ints[3] > UINT32_MAX || res->ints[4] < 0 || res->ints[5] < 0)
        return GW_ERR;
    d->status = (enum gw_rlimits_status)res->ints[0];
    d->retry_after_ms = res->ints[1] > 0 ? res->ints[1] : (d->status ? 1 : 0);
    d->rate.limit = (uint32_t)res->ints[2];
    d->rate.remaining = (uint32_t)res->ints[3];
    d->rate.reset_ms = res->ints[4];
    d->rate.retry_after_ms = d->status == GW_RLIMITS_RATE ? d->retry_after_ms : 0;
    d->wait_ms = res->ints[5];
    return GW_OK;
}

/* ------------------------------------------------------------- quota */

int gw_rlimits_reserve(struct gw_store_loop *l, const char *key_name, int64_t day,
                       uint32_t secs, uint32_t limit, gw_store_cb cb, void *arg,
                       struct gw_store_op **op, struct gw_error *err)
{
    char d[24], s[16], lim[16];
    const char *args[] = { key_name, d, s, lim };

    pthread_once(&scripts_once, scripts_init);
    snprintf(d, sizeof(d), "%lld", (long long)day);
    snprintf(s, sizeof(s), "%u", secs);
    snprintf(lim, sizeof(lim), "%u", limit);
    return gw_store_script(l, &reserve_script, GW_ARRAY_LEN(args), args, cb, arg, op, err);
}

void gw_rlimits_unreserve(struct gw_store_loop *l, const char *key_name, int64_t day,
                          uint32_t secs)
{
    char d[24], s[16];
    const char *args[] = { key_name, d, s };
    struct gw_error err;

    pthread_once(&scripts_once, scripts_init);
    snprintf(d, sizeof(d), "%lld", (long long)day);
    snprintf(s, sizeof(s), "%u", secs);
    gw_store_script(l, &unreserve_script, GW_ARRAY_LEN(args), args, NULL, NULL, NULL, &err);
}
