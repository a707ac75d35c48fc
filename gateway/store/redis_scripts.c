/*
 * redis_scripts.c - the Redis engine's Lua scripts, one per call of store.h
 * that writes or reads more than one key, so that each call is one atomic
 * round trip whatever other instances do meanwhile (and the calls of one loop,
 * one connection, complete in the order they were made).
 *
 * Keys (P = [store] prefix; docs/store.md, "The Redis engine"):
 *   P job:{id}            hash: the job (fields of F below, plus mem, seq, day)
 *   P seq                 INCR: the order jobs were put in, all instances together
 *   P jobs:{key}          zset, all scores 0, members "{created}:{seq}:{id}"
 *                         ({created}: created_at + 1e11, 12 digits; {seq}: 16
 *                         digits): lexical order is (created_at, seq), so a
 *                         cursor is a member and a page one ZRANGEBYLEX
 *   P deleted:{key}       the same, for deleted jobs (kept for the prune)
 *   P keys                zset (lex): team keys that have jobs (the prune walks it)
 *   P unfinished          zset: "{seq}:{id}" scored by refreshed_at (the refresh)
 *   P usage:{day}:{key}:{model}  hash: jobs, seconds, failed, refunded
 *   P usage_rows          zset (lex): "{day}\0{key}\0{model}" of every usage hash
 *   P usage_kind:{day}:{key}:{model}:{kind}  hash: the same counters per kind of job
 *   P usage_kind_rows     zset (lex): "{day}\0{key}\0{model}\0{kind}" of each of those
 *   P recent              zset: job ids scored by their seq (jobs_recent across keys)
 *   P char:{id}           hash: a character (id key upk name cr obj)
 *   P idem:{key}:{idem}   hash: state, status, body, at; EXPIREs by itself
 *   P idem_at             zset: idem keys scored by their start (the prune)
 *   P tkey:{name}         hash: a team key kept in the store (fields of K below)
 *   P tkeys               zset (lex): the names of those keys (keys_list's order)
 *   P tkey_sha            hash: SHA-256 of a key (32 raw bytes) -> its name: a secret
 *                         is one key's only
 *   P keys_version        INCR'd by every key write, in the write's own script:
 *                         the poll every instance makes (keysync.c) sees it move
 *
 * Times are the caller's (unix s), never Redis's clock: the tests pass theirs.
 */
#include "redis_int.h"

/* the fields of a job row, in the order rs_reply reads them */
#define LUA_HEAD                                                                             \
    "local F = {'id','key','upk','kind','asked','sent','sec','size','st','cr','up','rf',"  \
    "'del','rfd','obj'}\n"                                                                  \
    "local TTL = 86400\n"                                                                   \
    "local INFLIGHT_TTL = 7200\n"                                                           \
    "local p = ARGV[1]\n"

/* A script too, though one HMGET would do: after a SCRIPT FLUSH every call in
 * flight is answered NOSCRIPT and re-sent in order; a plain command among them
 * would overtake the re-sent ones (a get before the put it follows). */
static const char get_src[] = LUA_HEAD
    "return redis.call('HMGET', p .. 'job:' .. ARGV[2], unpack(F))\n";

static const char put_src[] = LUA_HEAD
    "local id = ARGV[2]\n"
    "local jk = p .. 'job:' .. id\n"
    "if redis.call('EXISTS', jk) == 1 then\n"
    "  return redis.error_reply('EXISTS the job is already recorded')\n"
    "end\n"
    "local seq = string.format('%016d', redis.call('INCR', p .. 'seq'))\n"
    "local mem = ARGV[16] .. ':' .. seq .. ':' .. id\n"
    "redis.call('HSET', jk, 'id', id, 'key', ARGV[3], 'upk', ARGV[4], 'kind', ARGV[5],\n"
    "  'asked', ARGV[6], 'sent', ARGV[7], 'sec', ARGV[8], 'size', ARGV[9], 'st', ARGV[10],\n"
    "  'cr', ARGV[11], 'up', ARGV[12], 'rf', ARGV[12], 'del', '0', 'rfd', '0',\n"
    "  'obj', ARGV[13], 'mem', mem, 'seq', seq, 'day', ARGV[14])\n"
    "redis.call('ZADD', p .. 'jobs:' .. ARGV[3], 0, mem)\n"
    "redis.call('ZADD', p .. 'recent', tonumber(seq), id)\n"
    "redis.call('ZADD', p .. 'keys', 0, ARGV[3])\n"
    "if ARGV[17] == '1' then redis.call('ZADD', p .. 'unfinished', ARGV[12], seq .. ':' .. id) end\n"
    "local uk = p .. 'usage:' .. ARGV[14] .. ':' .. ARGV[3] .. ':' .. ARGV[7]\n"
    "redis.call('HINCRBY', uk, 'jobs', 1)\n"
    "redis.call('HINCRBY', uk, 'seconds', ARGV[8])\n"
    "if ARGV[18] == '1' then redis.call('HINCRBY', uk, 'failed', 1) end\n"
    "redis.call('ZADD', p .. 'usage_rows', 0, ARGV[14] .. '\\0' .. ARGV[3] .. '\\0' .. ARGV[7])\n"
    "local kk = p .. 'usage_kind:' .. ARGV[14] .. ':' .. ARGV[3] .. ':' .. ARGV[7] .. ':' .. ARGV[5]\n"
    "redis.call('HINCRBY', kk, 'jobs', 1)\n"
    "redis.call('HINCRBY', kk, 'seconds', ARGV[8])\n"
    "if ARGV[18] == '1' then redis.call('HINCRBY', kk, 'failed', 1) end\n"
    "redis.call('ZADD', p .. 'usage_kind_rows', 0,\n"
    "  ARGV[14] .. '\\0' .. ARGV[3] .. '\\0' .. ARGV[7] .. '\\0' .. ARGV[5])\n"
    "if ARGV[15] ~= '' then\n"
    "  local ik = p .. 'idem:' .. ARGV[3] .. ':' .. ARGV[15]\n"
    "  local at = redis.call('HGET', ik, 'at') or ARGV[12]\n"
    "  redis.call('HSET', ik, 'state', 'done', 'status', '200', 'body', ARGV[13], 'at', at)\n"
    "  redis.call('EXPIRE', ik, TTL)\n"
    "  redis.call('ZADD', p .. 'idem_at', at, ik)\n"
    "end\n"
    /* the creating key's concurrency slot (redis_limits.c's lease), given back here
     * rather than by one more command once the answer starts */
    "if ARGV[20] and ARGV[20] ~= '' then redis.call('ZREM', p .. 'conc:' .. ARGV[19], ARGV[20]) end\n"
    "return 1\n";

/* A status only moves forward (queued < in_progress < completed = failed). */
static const char update_src[] = LUA_HEAD
    "local id = ARGV[2]\n"
    "local jk = p .. 'job:' .. id\n"
    "local cur = redis.call('HMGET', jk, 'st', 'rf', 'del', 'seq', 'day', 'key', 'sent', 'kind')\n"
    "if not cur[1] then return {} end\n"
    "local R = {queued = 0, in_progress = 1, completed = 2, failed = 2}\n"
    "local prev, new = cur[1], ARGV[3]\n"
    "if new ~= prev and (R[new] or 0) <= (R[prev] or 0) then\n"
    "  return {prev, redis.call('HMGET', jk, unpack(F))}\n"
    "end\n"
    "local now = tonumber(ARGV[6])\n"
    "local rf = tonumber(cur[2]) or 0\n"
    "if now > rf then rf = now end\n"
    "redis.call('HSET', jk, 'st', new, 'up', ARGV[6], 'rf', string.format('%d', rf))\n"
    "if ARGV[4] == '1' then redis.call('HSET', jk, 'obj', ARGV[5]) end\n"
    "local um = cur[4] .. ':' .. id\n"
    "if (new == 'queued' or new == 'in_progress') and cur[3] == '0' then\n"
    "  redis.call('ZADD', p .. 'unfinished', rf, um)\n"
    "else\n"
    "  redis.call('ZREM', p .. 'unfinished', um)\n"
    "end\n"
    "if new == 'failed' and prev ~= 'failed' then\n"
    "  local uk = p .. 'usage:' .. cur[5] .. ':' .. cur[6] .. ':' .. cur[7]\n"
    "  redis.call('HINCRBY', uk, 'failed', 1)\n"
    "  redis.call('HINCRBY', p .. 'usage_kind:' .. cur[5] .. ':' .. cur[6] .. ':' .. cur[7] ..\n"
    "    ':' .. (cur[8] or 'create'), 'failed', 1)\n"
    "end\n"
    "return {prev, redis.call('HMGET', jk, unpack(F))}\n";

/* Deleted jobs leave the list (and the refresh) for deleted:{key}; the job
 * itself stays (a cursor, the ledger) until pruned. */
static const char delete_src[] = LUA_HEAD
    "local id = ARGV[2]\n"
    "local jk = p .. 'job:' .. id\n"
    "local cur = redis.call('HMGET', jk, 'del', 'seq', 'key', 'mem')\n"
    "if not cur[1] then return {} end\n"
    "if cur[1] == '0' then\n"
    "  redis.call('HSET', jk, 'del', ARGV[3])\n"
    "  redis.call('ZREM', p .. 'unfinished', cur[2] .. ':' .. id)\n"
    "  redis.call('ZREM', p .. 'jobs:' .. cur[3], cur[4])\n"
    "  redis.call('ZADD', p .. 'deleted:' .. cur[3], 0, cur[4])\n"
    "end\n"
    "return {0, redis.call('HMGET', jk, unpack(F))}\n";

/* {has_more, row...}, or {-1}: `after` is no job of this key */
static const char list_src[] = LUA_HEAD
    "local key = ARGV[2]\n"
    "local zk = p .. 'jobs:' .. key\n"
    "local n = tonumber(ARGV[5]) + 1\n"
    "local asc = ARGV[4] == '1'\n"
    "local from = asc and '-' or '+'\n"
    "if ARGV[3] ~= '' then\n"
    "  local c = redis.call('HMGET', p .. 'job:' .. ARGV[3], 'key', 'mem')\n"
    "  if c[1] ~= key or not c[2] then return {-1} end\n"
    "  from = '(' .. c[2]\n"
    "end\n"
    "local ms\n"
    "if asc then ms = redis.call('ZRANGEBYLEX', zk, from, '+', 'LIMIT', 0, n)\n"
    "else ms = redis.call('ZREVRANGEBYLEX', zk, from, '-', 'LIMIT', 0, n) end\n"
    "local out = {0}\n"
    "for i, m in ipairs(ms) do\n"
    "  if i == n then out[1] = 1 break end\n"
    "  out[#out + 1] = redis.call('HMGET', p .. 'job:' .. string.sub(m, 31), unpack(F))\n"
    "end\n"
    "return out\n";

/* Claimed: re-scored to now in the same script, so no other instance gets them. */
static const char claim_src[] = LUA_HEAD
    "local uk = p .. 'unfinished'\n"
    "local ms = redis.call('ZRANGEBYSCORE', uk, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))\n"
    "local out = {}\n"
    "for _, m in ipairs(ms) do\n"
    "  local jk = p .. 'job:' .. string.sub(m, 18)\n"
    "  if redis.call('EXISTS', jk) == 1 then\n"
    "    redis.call('HSET', jk, 'rf', ARGV[3])\n"
    "    redis.call('ZADD', uk, ARGV[3], m)\n"
    "    out[#out + 1] = redis.call('HMGET', jk, unpack(F))\n"
    "  else\n"
    "    redis.call('ZREM', uk, m)\n"
    "  end\n"
    "end\n"
    "return out\n";

static const char refund_src[] = LUA_HEAD
    "local jk = p .. 'job:' .. ARGV[2]\n"
    "local cur = redis.call('HMGET', jk, 'st', 'rfd', 'day', 'key', 'sent', 'sec', 'kind')\n"
    "if not cur[1] then return {} end\n"
    "local did = 0\n"
    "if cur[1] == 'failed' and cur[2] == '0' then\n"
    "  redis.call('HSET', jk, 'rfd', '1')\n"
    "  local uk = p .. 'usage:' .. cur[3] .. ':' .. cur[4] .. ':' .. cur[5]\n"
    "  redis.call('HINCRBY', uk, 'refunded', cur[6])\n"
    "  redis.call('HINCRBY', p .. 'usage_kind:' .. cur[3] .. ':' .. cur[4] .. ':' .. cur[5] ..\n"
    "    ':' .. (cur[7] or 'create'), 'refunded', cur[6])\n"
    "  did = 1\n"
    "end\n"
    "return {did, redis.call('HMGET', jk, unpack(F))}\n";

/* One bounded step: at most 500 jobs, 500 team keys visited, 500 idempotency
 * records. {jobs, idem, cursor key, in that key (1/0), jobs done (1/0)} */
static const char prune_src[] = LUA_HEAD
    "local STEP = 500\n"
    "local jobs, keys = 0, 0\n"
    "local cursor, inkey, done = ARGV[4], ARGV[5] == '1', 0\n"
    "while ARGV[6] ~= '1' and jobs < STEP and keys < STEP do\n"
    "  if not inkey then\n"
    "    local nk = redis.call('ZRANGEBYLEX', p .. 'keys', cursor == '' and '-' or '(' .. cursor,\n"
    "      '+', 'LIMIT', 0, 1)\n"
    "    if #nk == 0 then done = 1 break end\n"
    "    cursor = nk[1]\n"
    "    inkey = true\n"
    "    keys = keys + 1\n"
    "  end\n"
    "  local left = STEP - jobs\n"
    "  local got = 0\n"
    "  for _, zn in ipairs({'jobs:', 'deleted:'}) do\n"
    "    local zk = p .. zn .. cursor\n"
    "    if got < left then\n"
    "      local ms = redis.call('ZRANGEBYLEX', zk, '-', '(' .. ARGV[2], 'LIMIT', 0, left - got)\n"
    "      for _, m in ipairs(ms) do\n"
    "        local id = string.sub(m, 31)\n"
    "        redis.call('DEL', p .. 'job:' .. id)\n"
    "        redis.call('ZREM', p .. 'recent', id)\n"
    "        redis.call('ZREM', p .. 'unfinished', string.sub(m, 14, 29) .. ':' .. id)\n"
    "        redis.call('ZREM', zk, m)\n"
    "      end\n"
    "      got = got + #ms\n"
    "    end\n"
    "  end\n"
    "  jobs = jobs + got\n"
    "  if got < left then\n"
    "    inkey = false\n"
    "    if redis.call('EXISTS', p .. 'jobs:' .. cursor) == 0 and\n"
    "       redis.call('EXISTS', p .. 'deleted:' .. cursor) == 0 then\n"
    "      redis.call('ZREM', p .. 'keys', cursor)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ARGV[6] == '1' then done = 1 end\n"
    "local ids = redis.call('ZRANGEBYSCORE', p .. 'idem_at', '-inf', ARGV[3], 'LIMIT', 0, STEP)\n"
    "for _, ik in ipairs(ids) do\n"
    "  redis.call('DEL', ik)\n"
    "  redis.call('ZREM', p .. 'idem_at', ik)\n"
    "end\n"
    "return {jobs, #ids, cursor, inkey and 1 or 0, done}\n";

/* {0} new (recorded in flight), {1} in flight, {2, status, body} done. A
 * record older than 24 h (by the callers' clocks) is new again. In flight
 * records expire after 2 h by themselves: longer than any create can take
 * (response_timeout is at most 1 h), so one left by an instance that died
 * does not block the key for a day. */
static const char idem_begin_src[] = LUA_HEAD
    "local k = p .. 'idem:' .. ARGV[2] .. ':' .. ARGV[3]\n"
    "local r = redis.call('HMGET', k, 'state', 'status', 'body', 'at')\n"
    "local now = tonumber(ARGV[4])\n"
    "if r[1] and (tonumber(r[4]) or 0) > now - TTL then\n"
    "  if r[1] == 'done' then return {2, r[2] or '0', r[3] or ''} end\n"
    "  return {1}\n"
    "end\n"
    "redis.call('DEL', k)\n"
    "redis.call('HSET', k, 'state', 'in_flight', 'at', ARGV[4])\n"
    "redis.call('EXPIRE', k, INFLIGHT_TTL)\n"
    "redis.call('ZADD', p .. 'idem_at', ARGV[4], k)\n"
    "return {0}\n";

static const char idem_finish_src[] = LUA_HEAD
    "local k = p .. 'idem:' .. ARGV[2] .. ':' .. ARGV[3]\n"
    "if redis.call('HGET', k, 'state') == 'in_flight' then\n"
    "  redis.call('HSET', k, 'state', 'done', 'status', ARGV[4], 'body', ARGV[5])\n"
    "  redis.call('EXPIRE', k, TTL)\n"
    "end\n"
    "return 1\n";

static const char idem_abort_src[] = LUA_HEAD
    "local k = p .. 'idem:' .. ARGV[2] .. ':' .. ARGV[3]\n"
    "if redis.call('HGET', k, 'state') == 'in_flight' then\n"
    "  redis.call('DEL', k)\n"
    "  redis.call('ZREM', p .. 'idem_at', k)\n"
    "end\n"
    "return 1\n";

/* {{day, key, model, jobs, seconds, failed, refunded}...}, days since..until */
static const char usage_src[] = LUA_HEAD
    "local lo = ARGV[2] == '' and '-' or '[' .. ARGV[2]\n"
    "local hi = ARGV[3] == '' and '+' or '[' .. ARGV[3] .. '\\255'\n"
    "local rows = redis.call('ZRANGEBYLEX', p .. 'usage_rows', lo, hi)\n"
    "local out = {}\n"
    "for _, r in ipairs(rows) do\n"
    "  local a = string.find(r, '\\0', 1, true)\n"
    "  local b = a and string.find(r, '\\0', a + 1, true)\n"
    "  if b then\n"
    "    local day, key, model = string.sub(r, 1, a - 1), string.sub(r, a + 1, b - 1),\n"
    "      string.sub(r, b + 1)\n"
    "    if ARGV[4] == '' or key == ARGV[4] then\n"
    "      local v = redis.call('HMGET', p .. 'usage:' .. day .. ':' .. key .. ':' .. model,\n"
    "        'jobs', 'seconds', 'failed', 'refunded')\n"
    "      out[#out + 1] = {day, key, model, v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0'}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ---------------------------------------------------------------- keys */

/* the fields of a team key row, in the order rs_reply reads them */
#define LUA_KEYS                                                                             \
    "local K = {'name','sha','rpm','burst','conc','daily','models','exp','cr','up','rv'}\n" \
    "local p = ARGV[1]\n"

/* {1}: the name or the hash is taken (nothing written); {0, row} */
static const char key_put_src[] = LUA_KEYS
    "local kk = p .. 'tkey:' .. ARGV[2]\n"
    "if redis.call('EXISTS', kk) == 1 or redis.call('HEXISTS', p .. 'tkey_sha', ARGV[3]) == 1 then\n"
    "  return {1}\n"
    "end\n"
    "redis.call('HSET', kk, 'name', ARGV[2], 'sha', ARGV[3], 'rpm', ARGV[4], 'burst', ARGV[5],\n"
    "  'conc', ARGV[6], 'daily', ARGV[7], 'models', ARGV[8], 'exp', ARGV[9], 'cr', ARGV[10],\n"
    "  'up', ARGV[10], 'rv', '0')\n"
    "redis.call('HSET', p .. 'tkey_sha', ARGV[3], ARGV[2])\n"
    "redis.call('ZADD', p .. 'tkeys', 0, ARGV[2])\n"
    "redis.call('INCR', p .. 'keys_version')\n"
    "return {0, redis.call('HMGET', kk, unpack(K))}\n";

/* ARGV[3]: one '1' or '0' per field of PF (set or not). {} none or revoked; {row} */
static const char key_patch_src[] = LUA_KEYS
    "local kk = p .. 'tkey:' .. ARGV[2]\n"
    "if redis.call('HGET', kk, 'rv') ~= '0' then return {} end\n"
    "local PF = {'rpm','burst','conc','daily','models','exp'}\n"
    "for i, f in ipairs(PF) do\n"
    "  if string.sub(ARGV[3], i, i) == '1' then redis.call('HSET', kk, f, ARGV[3 + i]) end\n"
    "end\n"
    "redis.call('HSET', kk, 'up', ARGV[10])\n"
    "redis.call('INCR', p .. 'keys_version')\n"
    "return {redis.call('HMGET', kk, unpack(K))}\n";

/* {} none; {1 if revoked now, row} */
static const char key_revoke_src[] = LUA_KEYS
    "local kk = p .. 'tkey:' .. ARGV[2]\n"
    "local rv = redis.call('HGET', kk, 'rv')\n"
    "if not rv then return {} end\n"
    "local did = 0\n"
    "if rv == '0' then\n"
    "  redis.call('HSET', kk, 'rv', ARGV[3], 'up', ARGV[3])\n"
    "  redis.call('INCR', p .. 'keys_version')\n"
    "  did = 1\n"
    "end\n"
    "return {did, redis.call('HMGET', kk, unpack(K))}\n";

/* {version, {row..last_used, name}..., {last_used of each name}}: ARGV[2] names
 * joined by NUL in ARGV[3] (any number of them in one argument). A key's last use is
 * its newest job's created_at, deleted ones too: the top member of jobs:{key}
 * and deleted:{key} (their lexical order is created_at's). */
static const char keys_list_src[] = LUA_KEYS
    "local function last(n)\n"
    "  local best = 0\n"
    "  for _, zn in ipairs({'jobs:', 'deleted:'}) do\n"
    "    local m = redis.call('ZREVRANGEBYLEX', p .. zn .. n, '+', '-', 'LIMIT', 0, 1)\n"
    "    if m[1] then\n"
    "      local c = (tonumber(string.sub(m[1], 1, 12)) or 0) - 100000000000\n"
    "      if c > best then best = c end\n"
    "    end\n"
    "  end\n"
    "  return best\n"
    "end\n"
    "local v = tonumber(redis.call('GET', p .. 'keys_version') or '0') or 0\n"
    "local rows = {}\n"
    "for _, n in ipairs(redis.call('ZRANGEBYLEX', p .. 'tkeys', '-', '+')) do\n"
    "  local r = redis.pcall('HMGET', p .. 'tkey:' .. n, unpack(K))\n"
    "  if type(r) ~= 'table' or r.err then\n"
    "    rows[#rows + 1] = {n}\n"
    "  elseif r[1] then\n"
    "    r[#K + 1] = last(n)\n"
    "    r[#K + 2] = n\n"
    "    rows[#rows + 1] = r\n"
    "  end\n"
    "end\n"
    "local lu, s, at = {}, ARGV[3], 1\n"
    "for _ = 1, tonumber(ARGV[2]) do\n"
    "  local e = string.find(s, '\\0', at, true) or (#s + 1)\n"
    "  lu[#lu + 1] = last(string.sub(s, at, e - 1))\n"
    "  at = e + 1\n"
    "end\n"
    "return {v, rows, lu}\n";

/* A script, not a GET: see get_src */
static const char keys_version_src[] = LUA_KEYS
    "return tonumber(redis.call('GET', p .. 'keys_version') or '0') or 0\n";

/* The same rows per kind of job: {{day, key, model, jobs, seconds, failed, refunded,
 * kind}...} */
static const char usage_kind_src[] = LUA_HEAD
    "local lo = ARGV[2] == '' and '-' or '[' .. ARGV[2]\n"
    "local hi = ARGV[3] == '' and '+' or '[' .. ARGV[3] .. '\\255'\n"
    "local rows = redis.call('ZRANGEBYLEX', p .. 'usage_kind_rows', lo, hi)\n"
    "local out = {}\n"
    "for _, r in ipairs(rows) do\n"
    "  local a = string.find(r, '\\0', 1, true)\n"
    "  local b = a and string.find(r, '\\0', a + 1, true)\n"
    "  local c = b and string.find(r, '\\0', b + 1, true)\n"
    "  if c then\n"
    "    local day, key = string.sub(r, 1, a - 1), string.sub(r, a + 1, b - 1)\n"
    "    local model, kind = string.sub(r, b + 1, c - 1), string.sub(r, c + 1)\n"
    "    if ARGV[4] == '' or key == ARGV[4] then\n"
    "      local v = redis.call('HMGET', p .. 'usage_kind:' .. day .. ':' .. key .. ':' .. model ..\n"
    "        ':' .. kind, 'jobs', 'seconds', 'failed', 'refunded')\n"
    "      out[#out + 1] = {day, key, model, v[1] or '0', v[2] or '0', v[3] or '0',\n"
    "        v[4] or '0', kind}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Newest jobs first, deleted ones too, their object left out: of every key by
 * seq (P recent), or of one key by (created_at, seq) (its two member sets,
 * merged). A status filter looks at the newest RECENT_SCAN jobs only, so that
 * the script stays bounded (docs/store.md). */
static const char jobs_recent_src[] = LUA_HEAD
    "local RECENT_SCAN = 2000\n"
    "local key, want, lim = ARGV[2], ARGV[3], tonumber(ARGV[4])\n"
    "local n = want == '' and lim or RECENT_SCAN\n"
    "local ids = {}\n"
    "if key == '' then\n"
    "  ids = redis.call('ZREVRANGE', p .. 'recent', 0, n - 1)\n"
    "else\n"
    "  local ms = {}\n"
    "  for _, zn in ipairs({'jobs:', 'deleted:'}) do\n"
    "    for _, m in ipairs(redis.call('ZREVRANGEBYLEX', p .. zn .. key, '+', '-', 'LIMIT', 0, n)) do\n"
    "      ms[#ms + 1] = m\n"
    "    end\n"
    "  end\n"
    "  table.sort(ms, function(x, y) return x > y end)\n"
    "  for _, m in ipairs(ms) do ids[#ids + 1] = string.sub(m, 31) end\n"
    "end\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  if #out >= lim then break end\n"
    "  local r = redis.call('HMGET', p .. 'job:' .. id, unpack(F))\n"
    "  if r[1] and (want == '' or r[9] == want) then\n"
    "    r[15] = ''\n"
    "    out[#out + 1] = r\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ---------------------------------------------------------- characters */

static const char character_put_src[] = LUA_HEAD
    "local ck = p .. 'char:' .. ARGV[2]\n"
    "if redis.call('EXISTS', ck) == 1 then\n"
    "  return redis.error_reply('EXISTS the character is already recorded')\n"
    "end\n"
    "redis.call('HSET', ck, 'id', ARGV[2], 'key', ARGV[3], 'upk', ARGV[4], 'name', ARGV[5],\n"
    "  'cr', ARGV[6], 'obj', ARGV[7])\n"
    "return 1\n";

/* a script, not an HMGET: see get_src */
static const char character_get_src[] = LUA_HEAD
    "return redis.call('HMGET', p .. 'char:' .. ARGV[2], 'id', 'key', 'upk', 'name', 'cr',\n"
    "  'obj')\n";

const char *const rs_script_src[RS_NSCRIPTS] = {
    [RS_GET] = get_src,
    [RS_PUT] = put_src,
    [RS_UPDATE] = update_src,
    [RS_DELETE] = delete_src,
    [RS_LIST] = list_src,
    [RS_CLAIM] = claim_src,
    [RS_REFUND] = refund_src,
    [RS_PRUNE] = prune_src,
    [RS_IDEM_BEGIN] = idem_begin_src,
    [RS_IDEM_FINISH] = idem_finish_src,
    [RS_IDEM_ABORT] = idem_abort_src,
    [RS_USAGE] = usage_src,
    [RS_KEY_PUT] = key_put_src,
    [RS_KEY_PATCH] = key_patch_src,
    [RS_KEY_REVOKE] = key_revoke_src,
    [RS_KEYS_LIST] = keys_list_src,
    [RS_KEYS_VERSION] = keys_version_src,
    [RS_USAGE_KIND] = usage_kind_src,
    [RS_JOBS_RECENT] = jobs_recent_src,
    [RS_CHARACTER_PUT] = character_put_src,
    [RS_CHARACTER_GET] = character_get_src,
};
