/*
 * redis_store.c - the task store shared by a fleet: every coda server and
 * worker pointed at the same Redis (redis://HOST:PORT[/DB][?prefix=NAME&
 * replicas=N]) shares its tasks. On hiredis's synchronous API.
 *
 * Key layout. Every key starts with the hash tag "{NAME}:" (NAME: the
 * prefix, default "coda"), so all of them live in one Cluster slot, and
 * every key a script touches is passed to it in KEYS: a script never
 * builds a key name. That is why a task is not a hash of its own (a claim
 * could not name the hashes of the tasks it is about to find): task
 * fields are columns, one hash per field, keyed by the task id written as
 * 16 hex digits (so that lexical order is numeric order):
 *   {N}:meta     id -> state attempts max_attempts created_at run_at
 *                started_at finished_at token lease_until progress [nonce]:
 *                "B" then 10 or 11 little-endian doubles (struct.pack: a
 *                script unpacks it in one call, where parsing text cost
 *                microseconds per read and per write), or, written by an
 *                older coda, the same numbers as text separated by spaces;
 *                both are read, the next write makes it binary
 *   {N}:name {N}:key {N}:queue {N}:args {N}:error {N}:result   id -> bytes
 *   {N}:w:QUEUE  zset, waiting tasks of QUEUE (queued, delayed, retrying)
 *                by run_at: claims take due members in order
 *   {N}:running  zset, running tasks by lease end (expire() reads it)
 *   {N}:done     zset, succeeded and dead tasks by finished_at (purge:
 *                retention by age, never by count)
 *   {N}:s:0..4   zsets of ids by state, score 0 (read by lex: find, list)
 *   {N}:qi:QUEUE {N}:n:NAME   zsets of ids by queue and by name (find)
 *   {N}:queues   set of queue names; {N}:paused: set of paused ones
 *   {N}:ids      the counter of reserve_ids (INCRBY, floored by the clock of
 *                the server: reserve_lua)
 * An idempotency key needs no key of its own: the engine derives the id
 * from it, and {N}:key says whether an existing id has the same key.
 * Scripts that move a task between queues get the {N}:w: keys of every
 * queue this process knows of ({N}:queues, cached; a script that meets a
 * queue it was not given fails before writing, and the cache is read again).
 * Cost of find(): an index zset read by lex (O(log N + page)), then the
 * tasks of the page in one script call; filters the index does not cover
 * are checked here, which may read further pages.
 *
 * Round trips: begin 0; enqueue, finish, progress(_leased) 0 (buffered);
 * commit 1 script call whatever the batch size (+1 WAIT with replicas=N
 * when the batch has adds); claim 1 (+1 SMEMBERS when a new queue appeared
 * while serving every queue); expire 1; renew 1 per call; release 1; get
 * 1; find 2 per page; reserve_ids 1; purge 3 (candidates, their names and
 * queues, then the script, which checks each again); next_due 1; pause 1.
 * A batch is one command of 13 arguments per add, built on the heap: the
 * engine bounds its size; a batch the server takes longer than the
 * command timeout to run ends CODA__STORE_UNKNOWN (it still runs there).
 *
 * Outcome of a commit: 0 applied; an error before the command was sent
 * whole, or an error reply (phase one refuses before writing; over
 * maxmemory the first write of a batch with adds is refused), nothing
 * applied; CODA__STORE_UNKNOWN when it was sent and no reply came, or when
 * WAIT found fewer replicas than asked (applied on the primary). A batch
 * sent again after that recognises its own tasks by the batch nonce.
 * claim(), expire() and purge() are script calls of their own: they apply
 * at once and a rollback of the batch they were called in does not undo
 * them.
 *
 * Threads: every call but get/find/list/renew comes from the engine's
 * store thread and uses `main`. get, find and list may come from any
 * thread: they use a second connection, `side`, under `side_mu`, taken per
 * page of a find. renew (the heartbeat) has a third, `renew`, under
 * `renew_mu`, so that no read ever delays a renewal. Each connection has
 * its own script hashes. errmsg() gives a thread the message of its own
 * last failure (thread-local), else the last of any thread (`err_mu`).
 *
 * Faults: a connection that fails is dropped; the next call connects
 * again, but not before a backoff (100 ms doubling to 5 s) has passed, so
 * a Redis that is down costs no busy loop; scripts are loaded again on
 * every new connection and after a NOSCRIPT reply. Connect and command
 * timeouts bound every call. Must never: block without a timeout, or keep
 * a batch's writes when its commit failed (phase one of the commit script
 * checks everything that can refuse the batch before it writes).
 */
#include "common/buf.h"
#include "common/idmap.h"
#include "store/store.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define CONNECT_TIMEOUT_MS 1000
#define COMMAND_TIMEOUT_MS 2000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define WAIT_TIMEOUT_MS 1000
#define FIND_PAGE 256
#define ERR_LEN 512
#define STALE_QUEUES                                                                     \
  1 /* commit_once(): the cached queues were stale, nothing written                      \
     */

/* The keys every script gets first, in this order (KEYS[1..16]). */
enum {
  K_META,
  K_NAME,
  K_KEY,
  K_QUEUE,
  K_ARGS,
  K_ERROR,
  K_RESULT,
  K_RUNNING,
  K_DONE,
  K_QUEUES,
  K_PAUSED,
  K_STATE0,
  /* Version 3 (KEYS[18..25]): tasks by queue and state ("Q:STATE" -> n),
   * each queue's totals ("Q:p", "Q:f"), the request that added a task,
   * its cancel request, its failed attempts (JSON), and the nodes (a zset
   * of node ids by when their record lapses). */
  K_COUNTS = K_STATE0 + 6,
  K_TOTALS,
  K_TRACE,
  K_ORIGIN,
  K_RID,
  K_CANCEL,
  K_ERRORS,
  K_NODES,
  K_FIXED
};
static const char *const fixed_names[K_FIXED] = {
    "meta",    "name",   "key",    "queue",  "args",   "error", "result",
    "running", "done",   "queues", "paused", "s:0",    "s:1",   "s:2",
    "s:3",     "s:4",    "s:5",    "counts", "totals", "trace", "origin",
    "rid",     "cancel", "errors", "nodes"};
/* Scripts get the keys of queues and names after the fixed ones. */
#define LUA_DYN "25"
_Static_assert(K_FIXED == 25, "LUA_DYN names the first key after the fixed ones");

/* ---- scripts --------------------------------------------------------------- */

/* Shared by every script: the meta string of a task, read and written;
 * the counters of tasks by queue and state (cnt, bump). A script that
 * moves many tasks (commit, claim) sets DELTA to {} and calls
 * apply_deltas() before it returns: a counter then takes one HINCRBY per
 * batch, not one or two per task. Any other script writes them at once.
 * Likewise the writes (wr): with BUF set to {}, an HSET, ZADD, ZREM or
 * HDEL waits in BUF, and flush() sends each key's with one variadic
 * command (a redis.call per task and key cost more than the write
 * itself), removals first: no op removes what it added itself, so that
 * order keeps each op's effect. A script flushes before it reads what a
 * buffered write may have changed. */
#define LUA_COMMON                                                                       \
  "local BUF, NBUF = nil, 0\n"                                                           \
  "local function newbuf() return {ZREM = {}, HDEL = {}, HSET = {}, ZADD = {}} end\n"    \
  "local function wr(cmd, key, a, b)\n"                                                  \
  "  if not BUF then\n"                                                                  \
  "    if b == nil then return redis.call(cmd, key, a) end\n"                            \
  "    return redis.call(cmd, key, a, b)\n"                                              \
  "  end\n"                                                                              \
  "  local byk = BUF[cmd]\n"                                                             \
  "  local t = byk[key]\n"                                                               \
  "  if not t then t = {n = 0} byk[key] = t end\n"                                       \
  "  local n = t.n + 1\n"                                                                \
  "  t[n] = a\n"                                                                         \
  "  if b ~= nil then n = n + 1 t[n] = b end\n"                                          \
  "  t.n = n\n"                                                                          \
  "  NBUF = NBUF + 1\n"                                                                  \
  "end\n"                                                                                \
  "local function send(cmd, step)\n"                                                     \
  "  for key, t in pairs(BUF[cmd]) do\n"                                                 \
  "    for i = 1, t.n, step do\n"                                                        \
  "      redis.call(cmd, key, unpack(t, i, math.min(i + step - 1, t.n)))\n"              \
  "    end\n"                                                                            \
  "  end\n"                                                                              \
  "end\n"                                                                                \
  "local function flush()\n"                                                             \
  "  if not BUF or NBUF == 0 then return end\n"                                          \
  "  send('ZREM', 500) send('HDEL', 500) send('HSET', 1000) send('ZADD', 1000)\n"        \
  "  BUF, NBUF = newbuf(), 0\n"                                                          \
  "end\n"                                                                                \
  "local function decm(v)\n"                                                             \
  "  if not v then return nil end\n"                                                     \
  "  local m\n"                                                                          \
  "  if #v >= 81 and string.byte(v, 1) == 66 then\n"                                     \
  "    m = {struct.unpack(#v >= 89 and '<ddddddddddd' or '<dddddddddd', v, 2)}\n"        \
  "    m[#m] = nil\n"                                                                    \
  "  else\n"                                                                             \
  "    m = {}\n"                                                                         \
  "    for x in string.gmatch(v, '%S+') do m[#m + 1] = tonumber(x) end\n"                \
  "  end\n"                                                                              \
  "  return m\n"                                                                         \
  "end\n"                                                                                \
  "local function getm(id) return decm(redis.call('HGET', KEYS[1], id)) end\n"           \
  "local function many(key, ids)\n"                                                      \
  "  local out = {}\n"                                                                   \
  "  for k = 1, #ids, 500 do\n"                                                          \
  "    local part = #ids <= 500 and ids or {unpack(ids, k, math.min(k + 499, #ids))}\n"  \
  "    local vals = redis.call('HMGET', key, unpack(part))\n"                            \
  "    for x = 1, #part do out[part[x]] = vals[x] end\n"                                 \
  "  end\n"                                                                              \
  "  return out\n"                                                                       \
  "end\n"                                                                                \
  "local function putm(id, m)\n"                                                         \
  "  local v\n"                                                                          \
  "  if m[11] then\n"                                                                    \
  "    v = 'B' .. struct.pack('<ddddddddddd', m[1], m[2], m[3], m[4], m[5], m[6],\n"     \
  "      m[7], m[8], m[9], m[10], m[11])\n"                                              \
  "  else\n"                                                                             \
  "    v = 'B' .. struct.pack('<dddddddddd', m[1], m[2], m[3], m[4], m[5], m[6],\n"      \
  "      m[7], m[8], m[9], m[10])\n"                                                     \
  "  end\n"                                                                              \
  "  wr('HSET', KEYS[1], id, v)\n"                                                       \
  "  return v\n"                                                                         \
  "end\n"                                                                                \
  "local DELTA = nil\n"                                                                  \
  "local function bump(key, f, d)\n"                                                     \
  "  if not DELTA then redis.call('HINCRBY', key, f, d) return end\n"                    \
  "  local t = DELTA[key]\n"                                                             \
  "  if not t then t = {} DELTA[key] = t end\n"                                          \
  "  t[f] = (t[f] or 0) + d\n"                                                           \
  "end\n"                                                                                \
  "local function apply_deltas()\n"                                                      \
  "  for key, t in pairs(DELTA) do\n"                                                    \
  "    for f, d in pairs(t) do\n"                                                        \
  "      if d ~= 0 then redis.call('HINCRBY', key, f, d) end\n"                          \
  "    end\n"                                                                            \
  "  end\n"                                                                              \
  "  DELTA = nil\n"                                                                      \
  "end\n"                                                                                \
  "local function cnt(q, st, d)\n"                                                       \
  "  if q then bump(KEYS[18], q .. ':' .. st, d) end\n"                                  \
  "end\n"                                                                                \
  "local function move(id, m, st, q)\n"                                                  \
  "  if m[1] ~= st then\n"                                                               \
  "    wr('ZREM', KEYS[12 + m[1]], id)\n"                                                \
  "    wr('ZADD', KEYS[12 + st], 0, id)\n"                                               \
  "    if q == nil then q = redis.call('HGET', KEYS[4], id) end\n"                       \
  "    cnt(q, m[1], -1)\n"                                                               \
  "    cnt(q, st, 1)\n"                                                                  \
  "    m[1] = st\n"                                                                      \
  "  end\n"                                                                              \
  "end\n"                                                                                \
  "local function record(id, v, q)\n"                                                    \
  "  return {id, v, redis.call('HGET', KEYS[2], id), redis.call('HGET', KEYS[3], id),\n" \
  "    q, redis.call('HGET', KEYS[5], id), redis.call('HGET', KEYS[20], id)}\n"          \
  "end\n"

/* A batch. KEYS: the fixed ones, then {N}:w:Q and {N}:qi:Q for each known
 * queue Q, then {N}:n:NAME for each name enqueued. ARGV: nq, the queues,
 * nn, the names, the batch nonce, then the operations:
 *   E id name haskey key queue args max created run_at attempts owned lease_until
 *   F id state attempts run_at started finished progress haserr err hasres res token
 *   P id progress token
 * An outcome or a progress applies only under the task's current token
 * while it runs (0 is no exception: no claim has it); a refused one is
 * returned. Token "-" (progress() of version 1 only) is not fenced: it
 * applies to any task that exists. Phase one checks what refuses
 * the whole batch, before any write; phase two applies in order.
 * The nonce is written with each new task (meta field 11): an id that
 * exists with this batch's nonce but not the same key (no key: tasks
 * without one) was written by an earlier call of the same batch whose
 * reply was lost (store.h, CODA__STORE_UNKNOWN), and counts as written now
 * rather than as taken; the same key is a duplicate, as always. When the batch writes a
 * new task, its first write is an SADD, a command Redis refuses when it is over
 * maxmemory: a script's first write is the only one checked, so an outcome's ZREM first
 * would let every add after it through. Returns {new tasks written, {duplicate ids},
 * {refused id, token, ...}}. */
static const char commit_lua[] = LUA_COMMON
    "local nq = tonumber(ARGV[1])\n"
    "local W, QI, N = {}, {}, {}\n"
    "for i = 1, nq do\n"
    "  W[ARGV[1 + i]] = KEYS[" LUA_DYN " + 2 * i - 1]\n"
    "  QI[ARGV[1 + i]] = KEYS[" LUA_DYN " + 2 * i]\n"
    "end\n"
    "local a = 2 + nq\n"
    "local nn = tonumber(ARGV[a])\n"
    "for j = 1, nn do N[ARGV[a + j]] = KEYS[" LUA_DYN " + 2 * nq + j] end\n"
    "local nonce = tonumber(ARGV[a + nn + 1])\n"
    "local first = a + nn + 2\n"
    "local eids, fids = {}, {}\n"
    "local i = first\n"
    "while i <= #ARGV do\n"
    "  local op, id = ARGV[i], ARGV[i + 1]\n"
    "  if op == 'E' then\n"
    "    if not W[ARGV[i + 5]] then return redis.error_reply('CODASTALE') end\n"
    "    eids[#eids + 1] = id\n"
    "    i = i + 16\n"
    "  elseif op == 'F' then\n"
    "    local st = tonumber(ARGV[i + 2])\n"
    "    if st ~= 2 and st ~= 3 and st ~= 4 and st ~= 5 then\n"
    "      return redis.error_reply('CODABADSTATE ' .. id)\n"
    "    end\n"
    "    fids[#fids + 1] = id\n"
    "    i = i + 13\n"
    "  else\n"
    "    i = i + 4\n"
    "  end\n"
    "end\n"
    "local EM, FQ = many(KEYS[1], eids), many(KEYS[4], fids)\n"
    "for _, q in pairs(FQ) do\n"
    "  if q and not W[q] then return redis.error_reply('CODASTALE') end\n"
    "end\n"
    "local dup, mine, addq = {}, {}, nil\n"
    "i = first\n"
    "while i <= #ARGV do\n"
    "  local op, id = ARGV[i], ARGV[i + 1]\n"
    "  if op == 'E' then\n"
    "    local m = decm(EM[id])\n"
    "    if m then\n"
    "      local k = redis.call('HGET', KEYS[3], id)\n"
    "      if ARGV[i + 3] == '1' and k == ARGV[i + 4] then dup[id] = true\n"
    "      elseif m[11] == nonce then mine[id] = true\n"
    "      else return redis.error_reply('CODAIDTAKEN ' .. id) end\n"
    "    else addq = addq or ARGV[i + 5] end\n"
    "    i = i + 16\n"
    "  elseif op == 'F' then\n"
    "    i = i + 13\n"
    "  else\n"
    "    i = i + 4\n"
    "  end\n"
    "end\n"
    "if addq then redis.call('SADD', KEYS[10], addq) end\n"
    "DELTA = {}\n"
    /* a few ops write at once: the buffer's tables cost more than it saves */
    "if #ARGV - first >= 48 then BUF, NBUF = newbuf(), 0 end\n"
    "local new, dups, refused = 0, {}, {}\n"
    "local function holds(m, token)\n"
    "  return m and m[1] == 1 and m[8] == token\n"
    "end\n"
    "local kind, MC, seen = nil, {}, {}\n"
    "i = first\n"
    "while i <= #ARGV do\n"
    "  local op, id = ARGV[i], ARGV[i + 1]\n"
    "  if op ~= kind or NBUF >= 4000 or seen[id] then\n"
    "    flush()\n"
    "    kind, MC, seen = op, {}, {}\n"
    "  end\n"
    "  seen[id] = true\n"
    "  if op == 'E' then\n"
    "    if dup[id] then\n"
    "      dups[#dups + 1] = id\n"
    "    elseif mine[id] then\n"
    "      new = new + 1\n"
    "    else\n"
    "      local owned = ARGV[i + 11] == '1'\n"
    "      local q = ARGV[i + 5]\n"
    "      local m = {owned and 1 or 0, tonumber(ARGV[i + 10]), tonumber(ARGV[i + 7]),\n"
    "        tonumber(ARGV[i + 8]), tonumber(ARGV[i + 9]), 0, 0, owned and 1 or 0,\n"
    "        owned and tonumber(ARGV[i + 12]) or 0, 0, nonce}\n"
    "      putm(id, m)\n"
    "      wr('HSET', KEYS[2], id, ARGV[i + 2])\n"
    "      if ARGV[i + 3] == '1' then wr('HSET', KEYS[3], id, ARGV[i + 4]) end\n"
    "      wr('HSET', KEYS[4], id, q)\n"
    "      cnt(q, m[1], 1)\n"
    "      if ARGV[i + 13] ~= '' then wr('HSET', KEYS[20], id, ARGV[i + 13]) end\n"
    "      if ARGV[i + 14] ~= '' then wr('HSET', KEYS[21], id, ARGV[i + 14]) end\n"
    "      if ARGV[i + 15] ~= '0' then wr('HSET', KEYS[22], id, ARGV[i + 15]) end\n"
    "      wr('HSET', KEYS[5], id, ARGV[i + 6])\n"
    "      wr('ZADD', KEYS[12 + m[1]], 0, id)\n"
    "      wr('ZADD', QI[q], 0, id)\n"
    "      wr('ZADD', N[ARGV[i + 2]], 0, id)\n"
    "      if q ~= addq then redis.call('SADD', KEYS[10], q) end\n"
    "      if owned then wr('ZADD', KEYS[8], m[9], id)\n"
    "      else wr('ZADD', W[q], m[5], id) end\n"
    "      new = new + 1\n"
    "    end\n"
    "    i = i + 16\n"
    "  elseif op == 'F' then\n"
    "    if MC[id] == nil then\n"
    "      local ids, j = {}, i\n"
    "      while j <= #ARGV and ARGV[j] == 'F' and #ids < 500 do\n"
    "        local x = ARGV[j + 1]\n"
    "        if (seen[x] and x ~= id) or MC[x] ~= nil then break end\n"
    "        MC[x] = false\n"
    "        ids[#ids + 1] = x\n"
    "        j = j + 13\n"
    "      end\n"
    "      local vals = redis.call('HMGET', KEYS[1], unpack(ids))\n"
    "      for x = 1, #ids do MC[ids[x]] = vals[x] end\n"
    "    end\n"
    "    local m = decm(MC[id])\n"
    "    local token = tonumber(ARGV[i + 12])\n"
    "    if holds(m, token) then\n"
    "      local q = FQ[id] or redis.call('HGET', KEYS[4], id)\n"
    "      wr('ZREM', KEYS[8], id)\n"
    "      wr('ZREM', KEYS[9], id)\n"
    "      if q and W[q] then wr('ZREM', W[q], id) end\n"
    "      local st = tonumber(ARGV[i + 2])\n"
    "      if st == 3 and redis.call('HEXISTS', KEYS[23], id) == 1 then st = 5 end\n"
    "      move(id, m, st, q)\n"
    "      if q then bump(KEYS[19], q .. (st == 2 and ':p' or ':f'), 1) end\n"
    "      if st ~= 2 then\n"
    "        local e = redis.call('HGET', KEYS[24], id)\n"
    "        local list = e and cjson.decode(e) or {}\n"
    "        list[#list + 1] = {tonumber(ARGV[i + 3]), tonumber(ARGV[i + 6]),\n"
    "          ARGV[i + 8] == '1' and ARGV[i + 9] or ''}\n"
    "        while #list > 10 do table.remove(list, 1) end\n"
    "        wr('HSET', KEYS[24], id, cjson.encode(list))\n"
    "      end\n"
    "      m[2] = tonumber(ARGV[i + 3])\n"
    "      m[5] = tonumber(ARGV[i + 4])\n"
    "      m[6] = tonumber(ARGV[i + 5])\n"
    "      m[7] = tonumber(ARGV[i + 6])\n"
    "      m[9] = 0\n"
    "      m[10] = tonumber(ARGV[i + 7])\n"
    "      putm(id, m)\n"
    "      if ARGV[i + 8] == '1' then wr('HSET', KEYS[6], id, ARGV[i + 9])\n"
    "      else wr('HDEL', KEYS[6], id) end\n"
    "      if ARGV[i + 10] == '1' then wr('HSET', KEYS[7], id, ARGV[i + 11])\n"
    "      else wr('HDEL', KEYS[7], id) end\n"
    "      if st == 3 and q and W[q] then wr('ZADD', W[q], m[5], id)\n"
    "      elseif st == 2 or st == 4 or st == 5 then wr('ZADD', KEYS[9], m[7], id) end\n"
    "    else\n"
    "      refused[#refused + 1] = id\n"
    "      refused[#refused + 1] = ARGV[i + 12]\n"
    "    end\n"
    "    i = i + 13\n"
    "  else\n"
    "    flush()\n"
    "    local m = getm(id)\n"
    "    local unfenced = ARGV[i + 3] == '-'\n"
    "    if (unfenced and m) or holds(m, tonumber(ARGV[i + 3])) then\n"
    "      m[10] = tonumber(ARGV[i + 2])\n"
    "      putm(id, m)\n"
    "    elseif not unfenced then\n"
    "      refused[#refused + 1] = id\n"
    "      refused[#refused + 1] = ARGV[i + 3]\n"
    "    end\n"
    "    i = i + 4\n"
    "  end\n"
    "end\n"
    "flush()\n"
    "apply_deltas()\n"
    "return {new, dups, refused}\n";

/* KEYS: the fixed ones, then {N}:w:Q of each served queue in order of
 * preference. ARGV: now, lease_until, max, nq, the queues. Returns
 * {number of known queues, record, ...}. */
static const char claim_lua[] = LUA_COMMON
    "local now, lease, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local nq = tonumber(ARGV[4])\n"
    "local out = {redis.call('SCARD', KEYS[10])}\n"
    "local n = 0\n"
    "DELTA = {}\n"
    "for i = 1, nq do\n"
    "  if n >= max then break end\n"
    "  if redis.call('SISMEMBER', KEYS[11], ARGV[4 + i]) == 0 then\n"
    "    local ids = redis.call('ZRANGEBYSCORE', KEYS[" LUA_DYN
    " + i], '-inf', now, 'LIMIT', 0, max - n)\n"
    "    if #ids > 0 then\n"
    "      redis.call('ZREMRANGEBYRANK', KEYS[" LUA_DYN " + i], 0, #ids - 1)\n"
    "      if #ids > 2 and not BUF then BUF, NBUF = newbuf(), 0 end\n"
    "      local M, Q, NM = many(KEYS[1], ids), many(KEYS[4], ids), many(KEYS[2], ids)\n"
    "      local K, A, T = many(KEYS[3], ids), many(KEYS[5], ids), many(KEYS[20], ids)\n"
    "      for _, id in ipairs(ids) do\n"
    "        local m = decm(M[id])\n"
    "        if m then\n"
    "          local q = Q[id]\n"
    "          move(id, m, 1, q)\n"
    "          m[2] = m[2] + 1\n"
    "          m[8] = m[8] + 1\n"
    "          m[9] = lease\n"
    "          local v = putm(id, m)\n"
    "          wr('ZADD', KEYS[8], lease, id)\n"
    "          out[#out + 1] = {id, v, NM[id], K[id], q, A[id], T[id]}\n"
    "          n = n + 1\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "flush()\n"
    "apply_deltas()\n"
    "return out\n";

/* KEYS: the fixed ones. ARGV: now, lease_until, max. Returns records. */
static const char expire_lua[] =
    LUA_COMMON "local ids = redis.call('ZRANGEBYSCORE', KEYS[8], '-inf', '(' .. ARGV[1], "
               "'LIMIT', 0,\n"
               "  tonumber(ARGV[3]))\n"
               "local out = {}\n"
               "for _, id in ipairs(ids) do\n"
               "  local m = getm(id)\n"
               "  if m and m[1] == 1 then\n"
               "    m[8] = m[8] + 1\n"
               "    m[9] = tonumber(ARGV[2])\n"
               "    local v = putm(id, m)\n"
               "    redis.call('ZADD', KEYS[8], m[9], id)\n"
               "    out[#out + 1] = record(id, v, redis.call('HGET', KEYS[4], id))\n"
               "  else\n"
               "    redis.call('ZREM', KEYS[8], id)\n"
               "  end\n"
               "end\n"
               "return out\n";

/* KEYS: the fixed ones. ARGV: lease_until, then id token pairs. Returns
 * 0 (extended) or 1 (lost) per pair. A renewal rewrites a meta string of
 * the same size and a score: it must go on when Redis is over maxmemory
 * (noeviction), or every long task of the fleet loses its lease at once.
 * Hence the allow-oom flag (Redis 7 script flags); an older Redis, which
 * cannot load a script with flags, gets renew_plain_lua instead. */
#define RENEW_BODY                                                                       \
  LUA_COMMON "local lease = tonumber(ARGV[1])\n"                                         \
             "local out = {}\n"                                                          \
             "for i = 2, #ARGV, 2 do\n"                                                  \
             "  local id = ARGV[i]\n"                                                    \
             "  local m = getm(id)\n"                                                    \
             "  if m and m[1] == 1 and m[8] == tonumber(ARGV[i + 1]) then\n"             \
             "    m[9] = lease\n"                                                        \
             "    putm(id, m)\n"                                                         \
             "    redis.call('ZADD', KEYS[8], lease, id)\n"                              \
             "    out[#out + 1] = redis.call('HEXISTS', KEYS[23], id) == 1 and 2 or 0\n" \
             "  else\n"                                                                  \
             "    out[#out + 1] = 1\n"                                                   \
             "  end\n"                                                                   \
             "end\n"                                                                     \
             "return out\n"
static const char renew_lua[] = "#!lua flags=allow-oom\n" RENEW_BODY;
static const char renew_plain_lua[] = RENEW_BODY;

/* KEYS: the fixed ones. ARGV: ids. Returns per id false (unknown) or
 * {id, meta, name, key, queue, error, result}, read atomically. */
static const char read_lua[] =
    "local out = {}\n"
    "for i = 1, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  local m = redis.call('HGET', KEYS[1], id)\n"
    "  if m then\n"
    "    out[i] = {id, m, redis.call('HGET', KEYS[2], id), redis.call('HGET', KEYS[3], "
    "id),\n"
    "      redis.call('HGET', KEYS[4], id), redis.call('HGET', KEYS[6], id),\n"
    "      redis.call('HGET', KEYS[7], id), redis.call('HGET', KEYS[5], id),\n"
    "      redis.call('HGET', KEYS[20], id), redis.call('HGET', KEYS[21], id),\n"
    "      redis.call('HGET', KEYS[22], id), redis.call('HEXISTS', KEYS[23], id),\n"
    "      redis.call('HGET', KEYS[24], id)}\n"
    "  else\n"
    "    out[i] = false\n"
    "  end\n"
    "end\n"
    "return out\n";

/* KEYS: the fixed ones, {N}:qi:Q per queue, {N}:n:NAME per name. ARGV:
 * before, nq, queues, nn, names, ids. Deletes each id still finished
 * before `before`; returns how many. A task whose meta, queue or name is
 * missing (written by hand, or half deleted) is deleted all the same: left
 * in {N}:done it would be the oldest candidate of every purge. */
static const char purge_lua[] = LUA_COMMON
    "local before = tonumber(ARGV[1])\n"
    "local nq = tonumber(ARGV[2])\n"
    "local QI, N = {}, {}\n"
    "for i = 1, nq do QI[ARGV[2 + i]] = KEYS[" LUA_DYN " + i] end\n"
    "local a = 3 + nq\n"
    "local nn = tonumber(ARGV[a])\n"
    "for j = 1, nn do N[ARGV[a + j]] = KEYS[" LUA_DYN " + nq + j] end\n"
    "local n = 0\n"
    "for i = a + nn + 1, #ARGV do\n"
    "  local id = ARGV[i]\n"
    "  local f = redis.call('ZSCORE', KEYS[9], id)\n"
    "  if f and tonumber(f) < before then\n"
    "    local m = getm(id)\n"
    "    local q = redis.call('HGET', KEYS[4], id)\n"
    "    local name = redis.call('HGET', KEYS[2], id)\n"
    "    if m and q and name and QI[q] and N[name] then\n"
    "      for k = 1, 7 do redis.call('HDEL', KEYS[k], id) end\n"
    "      for k = 20, 24 do redis.call('HDEL', KEYS[k], id) end\n"
    "      redis.call('HINCRBY', KEYS[18], q .. ':' .. m[1], -1)\n"
    "      redis.call('ZREM', KEYS[9], id)\n"
    "      redis.call('ZREM', KEYS[12 + m[1]], id)\n"
    "      redis.call('ZREM', QI[q], id)\n"
    "      redis.call('ZREM', N[name], id)\n"
    "      n = n + 1\n"
    "    elseif not (m and q and name) then\n"
    "      for k = 1, 7 do redis.call('HDEL', KEYS[k], id) end\n"
    "      for k = 20, 24 do redis.call('HDEL', KEYS[k], id) end\n"
    "      if m and q then redis.call('HINCRBY', KEYS[18], q .. ':' .. m[1], -1) end\n"
    "      redis.call('ZREM', KEYS[9], id)\n"
    "      if m and KEYS[12 + m[1]] then redis.call('ZREM', KEYS[12 + m[1]], id) end\n"
    "      if q and QI[q] then redis.call('ZREM', QI[q], id) end\n"
    "      if name and N[name] then redis.call('ZREM', N[name], id) end\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return n\n";

/* KEYS: the fixed ones, then {N}:w:Q of each known queue. ARGV: nq, the
 * queues, then id token pairs. Each task still running under its token
 * goes back to its waiting set, due at its run_at (it was due when
 * claimed), the claim not counted as an attempt: queued, or failed if
 * attempts remain from before. Returns how many. */
static const char release_lua[] =
    LUA_COMMON "local nq = tonumber(ARGV[1])\n"
               "local W = {}\n"
               "for i = 1, nq do W[ARGV[1 + i]] = KEYS[" LUA_DYN " + i] end\n"
               "local held = {}\n"
               "for i = 2 + nq, #ARGV, 2 do\n"
               "  local m = getm(ARGV[i])\n"
               "  if m and m[1] == 1 and m[8] == tonumber(ARGV[i + 1]) then\n"
               "    local q = redis.call('HGET', KEYS[4], ARGV[i])\n"
               "    if not (q and W[q]) then return redis.error_reply('CODASTALE') end\n"
               "    held[#held + 1] = {ARGV[i], m, q}\n"
               "  end\n"
               "end\n"
               "for _, h in ipairs(held) do\n"
               "  local id, m = h[1], h[2]\n"
               "  redis.call('ZREM', KEYS[8], id)\n"
               "  m[2] = math.max(m[2] - 1, 0)\n"
               "  m[9] = 0\n"
               "  if redis.call('HEXISTS', KEYS[23], id) == 1 then\n"
               "    local t = redis.call('TIME')\n"
               "    move(id, m, 5, h[3])\n"
               "    m[7] = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
               "    putm(id, m)\n"
               "    redis.call('ZADD', KEYS[9], m[7], id)\n"
               "  else\n"
               "    move(id, m, m[2] > 0 and 3 or 0, h[3])\n"
               "    putm(id, m)\n"
               "    redis.call('ZADD', W[h[3]], m[5], id)\n"
               "  end\n"
               "end\n"
               "return #held\n";

/* An operator's action on one task (store.h version 3). KEYS: the fixed
 * ones, then {N}:w:Q, {N}:qi:Q and {N}:n:NAME of the task's queue and
 * name, which ARGV gives too (checked: the caller read them before). ARGV:
 * op (R retry, C cancel, D delete), id, now, queue, name, the state the
 * task must be in ("-": any). Returns 0 (done), 1 (cancel of a running
 * task: requested), -1 (no such task) or -2 (its state does not allow it). */
static const char admin_lua[] = LUA_COMMON
    "local op, id, now = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local m = getm(id)\n"
    "if not m then return -1 end\n"
    "local q = redis.call('HGET', KEYS[4], id) or ''\n"
    "local name = redis.call('HGET', KEYS[2], id) or ''\n"
    "if q ~= ARGV[4] or name ~= ARGV[5] then return redis.error_reply('CODASTALE') end\n"
    "if ARGV[6] ~= '-' and m[1] ~= tonumber(ARGV[6]) then return -2 end\n"
    "local W, QI, N = KEYS[" LUA_DYN " + 1], KEYS[" LUA_DYN " + 2], KEYS[" LUA_DYN
    " + 3]\n"
    "if op == 'R' then\n"
    "  local st = m[1]\n"
    "  if not (st == 3 or st == 4 or st == 5 or (st == 0 and m[5] > now)) then return -2 "
    "end\n"
    "  redis.call('ZREM', KEYS[9], id)\n"
    "  move(id, m, 0)\n"
    "  m[5] = now\n"
    "  m[7] = 0\n"
    "  if m[2] >= m[3] then m[3] = m[2] + 1 end\n"
    "  putm(id, m)\n"
    "  redis.call('HDEL', KEYS[23], id)\n"
    "  redis.call('ZADD', W, now, id)\n"
    "  return 0\n"
    "elseif op == 'C' then\n"
    "  if m[1] == 1 then\n"
    "    redis.call('HSET', KEYS[23], id, '1')\n"
    "    return 1\n"
    "  end\n"
    "  if m[1] ~= 0 and m[1] ~= 3 then return -2 end\n"
    "  redis.call('ZREM', W, id)\n"
    "  move(id, m, 5)\n"
    "  m[7] = now\n"
    "  putm(id, m)\n"
    "  redis.call('ZADD', KEYS[9], now, id)\n"
    "  return 0\n"
    "end\n"
    "if m[1] == 1 then return -2 end\n"
    "redis.call('HINCRBY', KEYS[18], q .. ':' .. m[1], -1)\n"
    "for k = 1, 7 do redis.call('HDEL', KEYS[k], id) end\n"
    "for k = 20, 24 do redis.call('HDEL', KEYS[k], id) end\n"
    "redis.call('ZREM', KEYS[9], id)\n"
    "redis.call('ZREM', KEYS[12 + m[1]], id)\n"
    "redis.call('ZREM', W, id)\n"
    "redis.call('ZREM', QI, id)\n"
    "redis.call('ZREM', N, id)\n"
    "return 0\n";

/* KEYS: {N}:ids. ARGV: count. The id counter never starts again below
 * the server's clock in seconds times 2^20 (one id block per second, and
 * under 2^53: exact in Lua, under CODA__KEY_ID_BIT): a Redis that comes back
 * empty (no persistence, a failover that lost the counter) does not hand
 * out again the blocks of the seconds before, as long as the fleet did not
 * reserve blocks faster than one a second. Returns the new counter. */
static const char reserve_lua[] =
    "local t = redis.call('TIME')\n"
    "local floor = tonumber(t[1]) * 1048576\n"
    "local cur = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
    "if cur < floor then redis.call('SET', KEYS[1], string.format('%.0f', floor)) end\n"
    "return redis.call('INCRBY', KEYS[1], ARGV[1])\n";

enum {
  S_COMMIT,
  S_CLAIM,
  S_EXPIRE,
  S_RENEW,
  S_READ,
  S_PURGE,
  S_RELEASE,
  S_RESERVE,
  S_ADMIN,
  S_COUNT
};
static const char *const scripts[S_COUNT] = {commit_lua,  claim_lua,   expire_lua,
                                             renew_lua,   read_lua,    purge_lua,
                                             release_lua, reserve_lua, admin_lua};

/* ---- the store --------------------------------------------------------------- */

/* A connection, dropped on any I/O error and made again after a backoff.
 * Each has its own script hashes: it is used by one thread at a time (the
 * store thread, or a caller under its mutex), and the hashes are written
 * when it loads the scripts. */
typedef struct conn {
  redisContext *c;
  const char *name; /* CLIENT SETNAME: coda-main, coda-side, coda-renew */
  int64_t next_try; /* monotonic ms: no connect attempt before */
  int backoff_ms;
  char sha[S_COUNT][41];
  char last_err[ERR_LEN]; /* why it was dropped: said again during the backoff */
} conn;

/* Arguments of one command, binary-safe, kept as offsets into `bytes` so
 * that the buffer may move while it grows. */
typedef struct args {
  coda__buf bytes;
  size_t *off, *len;
  int n, cap;
} args;

typedef struct names {
  char **v;
  int n, cap;
} names;

typedef struct redis_store {
  coda__store base;
  char host[256];
  int port, db, replicas;
  char keys[K_FIXED][160];
  char ids_key[160];
  char tag[80]; /* "{NAME}:" */
  conn main;    /* the store thread's */
  conn side;    /* get, find, list: under side_mu */
  conn renew;   /* renew (the heartbeat): under renew_mu, never behind a find */
  uv_mutex_t side_mu;
  uv_mutex_t renew_mu;
  uv_mutex_t err_mu;
  unsigned long gen; /* tells this store's thread-local error from another's */
  char err[ERR_LEN];
  char warning[ERR_LEN];
  /* Written with each new task; kept while a commit of adds ended
   * CODA__STORE_UNKNOWN, so that the batch sent again knows its own. */
  char nonce[24];
  /* The open batch. */
  args ops;
  names batch_names;     /* distinct names enqueued */
  names batch_queues;    /* queues enqueued in not yet known: known after commit */
  coda__idmap batch_ids; /* id -> 1 + index in ops of its 'E' */
  int batch_adds;
  /* Results of the last commit. */
  uint64_t *dups;
  int ndups, dups_cap;
  coda__lease *refused;
  int nrefused, refused_cap;
  /* Queues: known ones (cached {N}:queues) and served ones. */
  names known;
  names served;
  int serve_all;
} redis_store;

static const coda__store_methods redis_methods;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The last error of this thread on store number tl_gen. A caller reads
 * errmsg() after its own call failed: with one message per store, a get()
 * or renew() failing on another thread would replace the message of the
 * store thread's commit before it is logged. s->err keeps the last error
 * of any thread, for a thread that has none of its own. */
static _Thread_local unsigned long tl_gen;
static _Thread_local char tl_err[ERR_LEN];
static atomic_ulong store_gens;

static void set_err(redis_store *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tl_err, sizeof tl_err, fmt, ap);
  va_end(ap);
  tl_gen = s->gen;
  uv_mutex_lock(&s->err_mu);
  memcpy(s->err, tl_err, sizeof s->err);
  uv_mutex_unlock(&s->err_mu);
}

/* Valid until this thread's next call of the store. */
static const char *redis_errmsg(coda__store *base) {
  static _Thread_local char copy[ERR_LEN];
  redis_store *s = (redis_store *)base;
  if (tl_gen == s->gen)
    return tl_err;
  uv_mutex_lock(&s->err_mu);
  snprintf(copy, sizeof copy, "%s", s->err[0] ? s->err : s->warning);
  uv_mutex_unlock(&s->err_mu);
  return copy;
}

/* ---- argument vectors ------------------------------------------------------------ */

static int args_push(args *a, const void *p, size_t n) {
  if (a->n == a->cap) {
    int cap = a->cap ? a->cap * 2 : 64;
    size_t *off = realloc(a->off, (size_t)cap * sizeof *off);
    if (!off)
      return CODA_ENOMEM;
    a->off = off;
    size_t *len = realloc(a->len, (size_t)cap * sizeof *len);
    if (!len)
      return CODA_ENOMEM;
    a->len = len;
    a->cap = cap;
  }
  a->off[a->n] = a->bytes.len;
  a->len[a->n] = n;
  if (coda__buf_append(&a->bytes, n ? p : "", n) != 0)
    return CODA_ENOMEM;
  a->n++;
  return 0;
}

static int args_str(args *a, const char *str) { return args_push(a, str, strlen(str)); }

static int args_fmt(args *a, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  return args_push(a, tmp, (size_t)n);
}

static int args_id(args *a, uint64_t id) { return args_fmt(a, "%016" PRIx64, id); }
static int args_i64(args *a, int64_t v) { return args_fmt(a, "%" PRId64, v); }

static int args_all(args *a, const args *from) {
  for (int i = 0; i < from->n; i++)
    if (args_push(a, from->bytes.base + from->off[i], from->len[i]) != 0)
      return CODA_ENOMEM;
  return 0;
}

static void args_reset(args *a) {
  a->n = 0;
  a->bytes.len = 0;
}

static void args_free(args *a) {
  coda__buf_free(&a->bytes);
  free(a->off);
  free(a->len);
  memset(a, 0, sizeof *a);
}

/* ---- lists of names -----------------------------------------------------------------
 */

static int names_find(const names *l, const char *v) {
  for (int i = 0; i < l->n; i++)
    if (strcmp(l->v[i], v) == 0)
      return i;
  return -1;
}

static int names_add(names *l, const char *v) {
  if (names_find(l, v) >= 0)
    return 0;
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 8;
    char **p = realloc(l->v, (size_t)cap * sizeof *p);
    if (!p)
      return CODA_ENOMEM;
    l->v = p;
    l->cap = cap;
  }
  if (!(l->v[l->n] = strdup(v)))
    return CODA_ENOMEM;
  l->n++;
  return 0;
}

static void names_clear(names *l) {
  for (int i = 0; i < l->n; i++)
    free(l->v[i]);
  l->n = 0;
}

static void names_free(names *l) {
  names_clear(l);
  free(l->v);
  memset(l, 0, sizeof *l);
}

/* ---- connections ------------------------------------------------------------------- */

/* Called right after set_err() said why (the message is kept for the
 * backoff's refusals). */
static void link_drop(conn *l) {
  snprintf(l->last_err, sizeof l->last_err, "%s", tl_err);
  if (l->c)
    redisFree(l->c);
  l->c = NULL;
  l->next_try = mono_ms() + l->backoff_ms;
  l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
}

/* Sends one command and reads its reply; NULL (and the link dropped, err
 * set) on an I/O error or out of memory. *sent (may be NULL) says whether
 * the whole command had left, so that the server may have run it: a reply
 * that then fails to come (timeout, broken link) leaves its effect
 * unknown, where a command not sent whole was never run. The argument
 * vector is on the heap: a batch has millions of arguments. */
/* Queues command `a` in l's output buffer (sent with the next write): 0,
 * or CODA_ENOMEM. */
static int link_append(conn *l, const args *a) {
  const char **v = malloc((size_t)(a->n ? a->n : 1) * sizeof *v);
  int ok = v != NULL;
  for (int i = 0; ok && i < a->n; i++)
    v[i] = a->bytes.base + a->off[i];
  ok = ok && redisAppendCommandArgv(l->c, a->n, v, a->len) == REDIS_OK;
  free(v);
  return ok ? 0 : CODA_ENOMEM;
}

static redisReply *link_command_sent(redis_store *s, conn *l, const args *a, int *sent) {
  int done = 0, ok = link_append(l, a) == 0;
  if (sent)
    *sent = 0;
  while (ok && !done)
    ok = redisBufferWrite(l->c, &done) == REDIS_OK;
  if (sent)
    *sent = ok;
  void *r = NULL;
  if (ok && redisGetReply(l->c, &r) != REDIS_OK)
    r = NULL;
  if (!r) {
    set_err(s, "redis %s:%d: %s", s->host, s->port,
            l->c->err ? l->c->errstr
            : ok      ? "connection lost"
                      : "out of memory");
    link_drop(l); /* whatever was queued is out of step with the replies */
  }
  return r;
}

static redisReply *link_command(redis_store *s, conn *l, const args *a) {
  return link_command_sent(s, l, a, NULL);
}

/* A command of string arguments (at most 8). */
static redisReply *link_simple(redis_store *s, conn *l, int argc, ...) {
  args a = {0};
  va_list ap;
  va_start(ap, argc);
  int rc = 0;
  for (int i = 0; i < argc && rc == 0; i++)
    rc = args_str(&a, va_arg(ap, const char *));
  va_end(ap);
  redisReply *r = rc == 0 ? link_command(s, l, &a) : NULL;
  args_free(&a);
  return r;
}

/* The reply, or NULL with err set for an error reply (which is freed). */
static redisReply *check_reply(redis_store *s, redisReply *r, const char *what) {
  if (r && r->type == REDIS_REPLY_ERROR) {
    set_err(s, "redis %s: %s", what, r->str);
    freeReplyObject(r);
    return NULL;
  }
  return r;
}

/* SCRIPT LOAD of each script into l->sha; a Redis older than 7 refuses
 * the flags line of renew_lua and gets the script without it. */
static int load_scripts(redis_store *s, conn *l) {
  for (int i = 0; i < S_COUNT; i++) {
    redisReply *r = link_simple(s, l, 3, "SCRIPT", "LOAD", scripts[i]);
    if (r && r->type == REDIS_REPLY_ERROR && i == S_RENEW) {
      freeReplyObject(r);
      r = link_simple(s, l, 3, "SCRIPT", "LOAD", renew_plain_lua);
    }
    if (!(r = check_reply(s, r, "SCRIPT LOAD")))
      return CODA_ESTORE;
    if (r->type == REDIS_REPLY_STRING && r->len == 40)
      memcpy(l->sha[i], r->str, 41);
    freeReplyObject(r);
  }
  return 0;
}

static int link_open(redis_store *s, conn *l) {
  struct timeval ct = {CONNECT_TIMEOUT_MS / 1000, (CONNECT_TIMEOUT_MS % 1000) * 1000};
  struct timeval wt = {COMMAND_TIMEOUT_MS / 1000, (COMMAND_TIMEOUT_MS % 1000) * 1000};
  l->c = redisConnectWithTimeout(s->host, s->port, ct);
  if (!l->c || l->c->err) {
    set_err(s, "cannot connect to redis %s:%d: %s", s->host, s->port,
            l->c ? l->c->errstr : "out of memory");
    link_drop(l);
    return CODA_ESTORE;
  }
  redisSetTimeout(l->c, wt);
  redisEnableKeepAlive(l->c);
  redisReply *named = link_simple(s, l, 3, "CLIENT", "SETNAME", l->name);
  if (!named)
    return CODA_ESTORE;   /* dropped */
  freeReplyObject(named); /* an error (CLIENT disabled) does not matter */
  if (s->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", s->db);
    redisReply *r = check_reply(s, link_simple(s, l, 2, "SELECT", db), "SELECT");
    if (!r) {
      link_drop(l);
      return CODA_ESTORE;
    }
    freeReplyObject(r);
  }
  if (load_scripts(s, l) != 0) {
    link_drop(l);
    return CODA_ESTORE;
  }
  l->backoff_ms = BACKOFF_FIRST_MS;
  return 0;
}

/* 0 when the link is up (connected again if its backoff has passed). */
static int link_ready(redis_store *s, conn *l) {
  if (l->c)
    return 0;
  int64_t now = mono_ms();
  if (now < l->next_try) {
    char why[ERR_LEN];
    snprintf(why, sizeof why, "%s", l->last_err);
    set_err(s, "%.400s (next try in %d ms)", why, (int)(l->next_try - now));
    return CODA_ESTORE;
  }
  return link_open(s, l);
}

/* An error reply as a CODA_E* code: out of memory on the server is a
 * limit (what was written does not fit), the rest a store error. */
static int reply_error_code(const redisReply *r) {
  return strncmp(r->str, "OOM", 3) == 0 ? CODA_ELIMIT : CODA_ESTORE;
}

/* EVALSHA of script `which` with KEYS `keys` and ARGV `argv`; once more
 * after loading the scripts again on NOSCRIPT (a SCRIPT FLUSH, a restarted
 * or failed-over server). *out: the reply, to free. CODA__STORE_UNKNOWN
 * when the call was sent and no reply came (only for the commit, which
 * tells the engine; for the rest an error: a claim that landed unseen
 * comes back through expire()). */
/* The EVALSHA command of script `which` into *a. */
static int script_args(const conn *l, int which, const args *keys, const args *argv,
                       args *a) {
  int rc = args_str(a, "EVALSHA");
  rc = rc ? rc : args_str(a, l->sha[which]);
  rc = rc ? rc : args_fmt(a, "%d", keys->n);
  rc = rc ? rc : args_all(a, keys);
  return rc ? rc : args_all(a, argv);
}

static int run_script_sent(redis_store *s, conn *l, int which, const args *keys,
                           const args *argv, redisReply **out) {
  *out = NULL;
  int rc = link_ready(s, l);
  if (rc)
    return rc;
  args a = {0};
  rc = script_args(l, which, keys, argv, &a);
  if (rc) {
    args_free(&a);
    set_err(s, "redis store: out of memory");
    return rc;
  }
  for (int attempt = 0;; attempt++) {
    int sent = 0;
    redisReply *r = link_command_sent(s, l, &a, &sent);
    if (!r) {
      rc = sent ? CODA__STORE_UNKNOWN : CODA_ESTORE;
      break;
    }
    if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0 &&
        attempt == 0) {
      freeReplyObject(r);
      if ((rc = load_scripts(s, l)) != 0)
        break;
      continue;
    }
    if (r->type == REDIS_REPLY_ERROR) {
      set_err(s, "redis: %s", r->str);
      rc = reply_error_code(r);
      *out = r; /* the caller may read the error */
      break;
    }
    *out = r;
    rc = 0;
    break;
  }
  args_free(&a);
  return rc;
}

static int run_script(redis_store *s, conn *l, int which, const args *keys,
                      const args *argv, redisReply **out) {
  int rc = run_script_sent(s, l, which, keys, argv, out);
  return rc == CODA__STORE_UNKNOWN ? CODA_ESTORE : rc;
}

/* ---- keys ----------------------------------------------------------------------------
 */

static int fixed_keys(const redis_store *s, args *k) {
  for (int i = 0; i < K_FIXED; i++)
    if (args_str(k, s->keys[i]) != 0)
      return CODA_ENOMEM;
  return 0;
}

/* "{N}:<kind><name>", e.g. "{coda}:w:default". */
static int key_of(const redis_store *s, args *k, const char *kind, const char *name) {
  size_t tn = strlen(s->tag), kn = strlen(kind), nn = strlen(name);
  char *p = malloc(tn + kn + nn + 1);
  if (!p)
    return CODA_ENOMEM;
  memcpy(p, s->tag, tn);
  memcpy(p + tn, kind, kn);
  memcpy(p + tn + kn, name, nn + 1);
  int rc = args_push(k, p, tn + kn + nn);
  free(p);
  return rc;
}

/* The names in {N}:queues, into s->known (replaced: it must match SCARD,
 * which claims compare it with). */
static int refresh_known(redis_store *s) {
  int rc = link_ready(s, &s->main);
  if (rc)
    return rc;
  char key[200];
  snprintf(key, sizeof key, "%s", s->keys[K_QUEUES]);
  redisReply *r =
      check_reply(s, link_simple(s, &s->main, 2, "SMEMBERS", key), "SMEMBERS");
  if (!r)
    return CODA_ESTORE;
  rc = 0;
  names_clear(&s->known);
  for (size_t i = 0; rc == 0 && r->type == REDIS_REPLY_ARRAY && i < r->elements; i++)
    rc = names_add(&s->known, r->element[i]->str);
  freeReplyObject(r);
  return rc;
}

/* ---- records
 * --------------------------------------------------------------------------- */

static uint64_t parse_id(const redisReply *r) {
  return r && r->type == REDIS_REPLY_STRING ? strtoull(r->str, NULL, 16) : 0;
}

static const char *str_or_null(const redisReply *r) {
  return r && r->type == REDIS_REPLY_STRING ? r->str : NULL;
}

/* What parse_record() allocated for a record read with its outcome. */
static void record_done(coda__task_record *r) {
  free((void *)r->errors);
  r->errors = NULL;
}

/* The fields of a task's meta, binary or text (the key layout above):
 * state attempts max_attempts created_at run_at started_at finished_at
 * token lease_until as integers, then progress. 0, or -1 when it does not
 * read (or a field is out of range). */
#define META_INTS 9
static int decode_meta(const redisReply *r, long long v[META_INTS], double *progress) {
  if (!r || r->type != REDIS_REPLY_STRING)
    return -1;
  if (r->len >= 81 && r->str[0] == 'B') {
    double f[META_INTS + 1];
    for (int i = 0; i <= META_INTS; i++) {
      uint64_t bits = 0;
      for (int k = 7; k >= 0; k--)
        bits = bits << 8 | (unsigned char)r->str[1 + 8 * i + k];
      memcpy(&f[i], &bits, sizeof f[i]);
    }
    for (int i = 0; i < META_INTS; i++) {
      if (!(f[i] > -9.0e18 && f[i] < 9.0e18)) /* NaN too */
        return -1;
      v[i] = (long long)f[i];
    }
    *progress = f[META_INTS];
    return 0;
  }
  return sscanf(r->str, "%lld %lld %lld %lld %lld %lld %lld %lld %lld %lf", &v[0], &v[1],
                &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], progress) == 10
             ? 0
             : -1;
}

/* A record from {id, meta, name, key, queue, args-or-error, [result]}:
 * pointers into the reply, which must outlive it. */
static int parse_record(const redisReply *t, int with_outcome, coda__task_record *r) {
  if (!t || t->type != REDIS_REPLY_ARRAY || t->elements < 6)
    return CODA_ESTORE;
  long long v[META_INTS];
  double progress;
  if (decode_meta(t->element[1], v, &progress) != 0)
    return CODA_ESTORE;
  long long state = v[0], attempts = v[1], max = v[2], created = v[3], run_at = v[4],
            started = v[5], finished = v[6], token = v[7];
  *r = (coda__task_record){.id = parse_id(t->element[0]),
                           .name = str_or_null(t->element[2]),
                           .key = str_or_null(t->element[3]),
                           .queue = str_or_null(t->element[4]),
                           .state = (coda_task_state)state,
                           .attempts = (int)attempts,
                           .max_attempts = (int)max,
                           .created_at = created,
                           .run_at = run_at,
                           .started_at = started,
                           .finished_at = finished,
                           .progress = progress,
                           .lease = (uint64_t)token};
  if (!r->name)
    r->name = "";
  if (with_outcome) {
    r->error = str_or_null(t->element[5]);
    if (t->elements > 6 && t->element[6]->type == REDIS_REPLY_STRING) {
      r->result = t->element[6]->str;
      r->result_len = t->element[6]->len;
    }
    if (t->elements > 12) { /* version 3: read_lua */
      if (t->element[7]->type == REDIS_REPLY_STRING) {
        r->args = t->element[7]->str;
        r->args_len = t->element[7]->len;
      }
      r->trace = str_or_null(t->element[8]);
      r->origin = str_or_null(t->element[9]);
      const char *rid = str_or_null(t->element[10]);
      r->request_id = rid ? strtoull(rid, NULL, 10) : 0;
      r->cancel_requested =
          t->element[11]->type == REDIS_REPLY_INTEGER && t->element[11]->integer == 1;
      /* The history is parsed into a block of its own: the caller frees
       * r->errors (record_done()). */
      const redisReply *e = t->element[12];
      coda_task_error *errors = NULL;
      if (e->type == REDIS_REPLY_STRING)
        r->n_errors = coda__errors_from_json(e->str, e->len, &errors);
      r->errors = errors;
    }
  } else {
    if (t->element[5]->type == REDIS_REPLY_STRING) {
      r->args = t->element[5]->str;
      r->args_len = t->element[5]->len;
    }
    /* A claim's record also has the traceparent (record() in LUA_COMMON):
     * the attempt's log lines carry it wherever it runs. */
    if (t->elements > 6)
      r->trace = str_or_null(t->element[6]);
  }
  return 0;
}

/* ---- opening
 * --------------------------------------------------------------------------- */

static int valid_prefix(const char *p) {
  if (!*p)
    return 0;
  for (; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
          (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' || *p == '.'))
      return 0;
  return 1;
}

/* Reads one query parameter (prefix or replicas) of the URI. */
static int parse_param(redis_store *s, const char *p, size_t n, char *prefix,
                       size_t cap) {
  if (n > 7 && strncmp(p, "prefix=", 7) == 0 && n - 7 < cap) {
    memcpy(prefix, p + 7, n - 7);
    prefix[n - 7] = '\0';
    return valid_prefix(prefix) ? 0 : -1;
  }
  if (n > 9 && strncmp(p, "replicas=", 9) == 0) {
    char num[16];
    if (n - 9 >= sizeof num)
      return -1;
    memcpy(num, p + 9, n - 9);
    num[n - 9] = '\0';
    char *end;
    long v = strtol(num, &end, 10);
    if (*end || v < 0 || v > 100)
      return -1;
    s->replicas = (int)v;
    return 0;
  }
  return -1;
}

/* redis://HOST:PORT[/DB][?prefix=NAME&replicas=N]; HOST may be [v6]. */
static int parse_uri(redis_store *s, const char *uri, char *prefix, size_t cap) {
  if (strncmp(uri, "redis://", 8) != 0)
    return -1;
  const char *p = uri + 8, *end;
  if (*p == '[') {
    end = strchr(p, ']');
    if (!end || (size_t)(end - p - 1) >= sizeof s->host)
      return -1;
    memcpy(s->host, p + 1, (size_t)(end - p - 1));
    s->host[end - p - 1] = '\0';
    p = end + 1;
  } else {
    size_t n = strcspn(p, ":/?");
    if (n == 0 || n >= sizeof s->host)
      return -1;
    memcpy(s->host, p, n);
    s->host[n] = '\0';
    p += n;
  }
  s->port = 6379;
  if (*p == ':') {
    char *e;
    long port = strtol(p + 1, &e, 10);
    if (e == p + 1 || port <= 0 || port > 65535)
      return -1;
    s->port = (int)port;
    p = e;
  }
  if (*p == '/' && p[1] && p[1] != '?') {
    char *e;
    long db = strtol(p + 1, &e, 10);
    if (e == p + 1 || db < 0 || db > 1000000)
      return -1;
    s->db = (int)db;
    p = e;
  } else if (*p == '/') {
    p++;
  }
  snprintf(prefix, cap, "coda");
  if (*p == '?') {
    for (p++; *p;) {
      size_t n = strcspn(p, "&");
      if (parse_param(s, p, n, prefix, cap) != 0)
        return -1;
      p += n;
      if (*p == '&')
        p++;
    }
  }
  return *p ? -1 : 0;
}

/* Keys must not be evicted: a policy that may evict them is refused; a
 * volatile-* one evicts only keys with a TTL (coda sets none) and is
 * accepted with a warning; where CONFIG is disabled (managed Redis) the
 * policy cannot be read, and the warning says to check it. */
static int check_eviction(redis_store *s) {
  redisReply *r = link_simple(s, &s->main, 3, "CONFIG", "GET", "maxmemory-policy");
  if (!r)
    return CODA_ESTORE;
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    snprintf(
        s->warning, sizeof s->warning,
        "redis store: cannot read maxmemory-policy (%s): make sure it is noeviction, or "
        "tasks may be evicted and lost",
        r->str);
  } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
             r->element[1]->type == REDIS_REPLY_STRING) {
    const char *policy = r->element[1]->str;
    if (strncmp(policy, "volatile-", 9) == 0) {
      snprintf(
          s->warning, sizeof s->warning,
          "redis store: maxmemory-policy is %s; coda sets no TTL so its keys are not "
          "evicted, but noeviction is the safe setting",
          policy);
    } else if (strcmp(policy, "noeviction") != 0) {
      set_err(s,
              "redis %s:%d has maxmemory-policy %s, which can evict task keys and lose "
              "tasks: set maxmemory-policy noeviction (CONFIG SET maxmemory-policy "
              "noeviction, and in redis.conf)",
              s->host, s->port, policy);
      rc = CODA_ESTORE;
    }
  }
  freeReplyObject(r);
  return rc;
}

static void redis_close(coda__store *base);

/* A random number below 2^52 (exact in a Lua number), as decimal text. */
static void new_nonce(redis_store *s) {
  uint64_t v = 0;
  if (uv_random(NULL, NULL, &v, sizeof v, 0, NULL) != 0)
    v = (uint64_t)mono_ms() ^ ((uint64_t)(uintptr_t)s << 16) ^ (uint64_t)time(NULL) << 32;
  v &= (UINT64_C(1) << 52) - 1;
  snprintf(s->nonce, sizeof s->nonce, "%" PRIu64, v ? v : 1);
}

int coda__redis_store_open(const char *uri, coda__store **out, char *err, size_t errlen) {
  *out = NULL;
  redis_store *s = calloc(1, sizeof *s);
  if (!s)
    return CODA_ENOMEM;
  s->base.m = &redis_methods;
  uv_mutex_init(&s->side_mu);
  uv_mutex_init(&s->renew_mu);
  uv_mutex_init(&s->err_mu);
  s->gen = atomic_fetch_add(&store_gens, 1) + 1;
  s->main.backoff_ms = s->side.backoff_ms = s->renew.backoff_ms = BACKOFF_FIRST_MS;
  s->main.name = "coda-main";
  s->side.name = "coda-side";
  s->renew.name = "coda-renew";
  new_nonce(s);
  s->serve_all = 1;
  char prefix[64];
  if (parse_uri(s, uri, prefix, sizeof prefix) != 0) {
    snprintf(err, errlen,
             "bad redis URI \"%s\" (use redis://HOST:PORT[/DB][?prefix=NAME&replicas=N]; "
             "NAME of letters, digits, _ - .)",
             uri);
    redis_close(&s->base);
    return CODA_ESTORE;
  }
  snprintf(s->tag, sizeof s->tag, "{%s}:", prefix);
  for (int i = 0; i < K_FIXED; i++)
    snprintf(s->keys[i], sizeof s->keys[i], "%s%s", s->tag, fixed_names[i]);
  snprintf(s->ids_key, sizeof s->ids_key, "%sids", s->tag);
  int rc = link_open(s, &s->main);
  if (rc == 0)
    rc = check_eviction(s);
  if (rc == 0)
    rc = refresh_known(s);
  if (rc == 0)
    rc = link_open(s, &s->side);
  if (rc == 0)
    rc = link_open(s, &s->renew);
  if (rc) {
    snprintf(err, errlen, "%s", s->err);
    redis_close(&s->base);
    return CODA_ESTORE;
  }
  *out = &s->base;
  return 0;
}

static void redis_close(coda__store *base) {
  redis_store *s = (redis_store *)base;
  if (s->main.c)
    redisFree(s->main.c);
  if (s->side.c)
    redisFree(s->side.c);
  if (s->renew.c)
    redisFree(s->renew.c);
  args_free(&s->ops);
  names_free(&s->batch_names);
  names_free(&s->batch_queues);
  names_free(&s->known);
  names_free(&s->served);
  coda__idmap_free(&s->batch_ids);
  free(s->dups);
  free(s->refused);
  uv_mutex_destroy(&s->side_mu);
  uv_mutex_destroy(&s->renew_mu);
  uv_mutex_destroy(&s->err_mu);
  free(s);
}

/* ---- batches
 * ---------------------------------------------------------------------------- */

static int redis_recover(coda__store *base, int64_t now) {
  (void)base;
  (void)now;
  return 0; /* shared: tasks of a dead process come back through expire() */
}

static void forget_batch(redis_store *s) {
  args_reset(&s->ops);
  names_clear(&s->batch_names);
  names_clear(&s->batch_queues);
  coda__idmap_free(&s->batch_ids);
  memset(&s->batch_ids, 0, sizeof s->batch_ids);
  s->batch_adds = 0;
}

static int redis_begin(coda__store *base) {
  redis_store *s = (redis_store *)base;
  forget_batch(s);
  s->ndups = s->nrefused = 0;
  return 0;
}

static void redis_rollback(coda__store *base) { forget_batch((redis_store *)base); }

/* The same id twice in one batch: the batch itself tells a duplicate
 * (same key) from a collision, as a store that wrote at once would. */
static int batch_collision(redis_store *s, const coda__task_record *r) {
  uintptr_t at = (uintptr_t)coda__idmap_get(&s->batch_ids, r->id);
  if (!at)
    return 0;
  int has_key = s->ops.bytes.base[s->ops.off[at - 1 + 3]] == '1';
  size_t kl = s->ops.len[at - 1 + 4];
  const char *k = s->ops.bytes.base + s->ops.off[at - 1 + 4];
  if (has_key && r->key && strlen(r->key) == kl && memcmp(k, r->key, kl) == 0)
    return CODA_EEXIST;
  set_err(s, "redis store: id %" PRIu64 " taken by another key", r->id);
  return CODA_ESTORE;
}

static int redis_enqueue(coda__store *base, const coda__task_record *r, int owned,
                         int64_t lease_until) {
  redis_store *s = (redis_store *)base;
  int rc = batch_collision(s, r);
  if (rc)
    return rc;
  const char *queue = r->queue ? r->queue : "default";
  int at = s->ops.n;
  args *a = &s->ops;
  rc = args_str(a, "E");
  rc = rc ? rc : args_id(a, r->id);
  rc = rc ? rc : args_str(a, r->name);
  rc = rc ? rc : args_str(a, r->key ? "1" : "0");
  rc = rc ? rc : args_str(a, r->key ? r->key : "");
  rc = rc ? rc : args_str(a, queue);
  rc = rc ? rc : args_push(a, r->args, r->args_len);
  rc = rc ? rc : args_i64(a, r->max_attempts);
  rc = rc ? rc : args_i64(a, r->created_at);
  rc = rc ? rc : args_i64(a, r->run_at);
  rc = rc ? rc : args_i64(a, r->attempts);
  rc = rc ? rc : args_str(a, owned ? "1" : "0");
  rc = rc ? rc : args_i64(a, owned ? lease_until : 0);
  rc = rc ? rc : args_str(a, r->trace ? r->trace : "");
  rc = rc ? rc : args_str(a, r->origin ? r->origin : "");
  rc = rc ? rc : args_fmt(a, "%" PRIu64, r->request_id);
  rc = rc ? rc : names_add(&s->batch_names, r->name);
  if (rc == 0 && names_find(&s->known, queue) < 0)
    rc = names_add(&s->batch_queues, queue);
  rc = rc ? rc : coda__idmap_put(&s->batch_ids, r->id, (void *)(uintptr_t)(at + 1));
  if (rc) {
    set_err(s, "redis store: out of memory");
    return CODA_ENOMEM;
  }
  s->batch_adds++;
  return 0;
}

static int push_outcome(args *a, const coda__task_record *r) {
  int rc = args_str(a, "F");
  rc = rc ? rc : args_id(a, r->id);
  rc = rc ? rc : args_i64(a, r->state);
  rc = rc ? rc : args_i64(a, r->attempts);
  rc = rc ? rc : args_i64(a, r->run_at);
  rc = rc ? rc : args_i64(a, r->started_at);
  rc = rc ? rc : args_i64(a, r->finished_at);
  rc = rc ? rc : args_fmt(a, "%.17g", r->progress);
  rc = rc ? rc : args_str(a, r->error ? "1" : "0");
  rc = rc ? rc : args_str(a, r->error ? r->error : "");
  rc = rc ? rc : args_str(a, r->result ? "1" : "0");
  rc = rc ? rc : args_push(a, r->result, r->result ? r->result_len : 0);
  rc = rc ? rc : args_fmt(a, "%" PRIu64, r->lease);
  return rc;
}

static int redis_finish(coda__store *base, const coda__task_record *r) {
  redis_store *s = (redis_store *)base;
  if (r->state != CODA_STATE_SUCCEEDED && r->state != CODA_STATE_FAILED &&
      r->state != CODA_STATE_DEAD && r->state != CODA_STATE_CANCELLED) {
    /* A queued or running "outcome" would leave the task in no waiting
     * set, never claimed again. */
    set_err(s, "redis store: task %" PRIu64 ": an outcome cannot be state %d", r->id,
            (int)r->state);
    return CODA_EINVAL;
  }
  if (push_outcome(&s->ops, r) != 0) {
    set_err(s, "redis store: out of memory");
    return CODA_ENOMEM;
  }
  return 0;
}

/* token NULL: not fenced (progress() of version 1). */
static int push_progress(redis_store *s, uint64_t id, double progress,
                         const uint64_t *token) {
  args *a = &s->ops;
  int rc = args_str(a, "P");
  rc = rc ? rc : args_id(a, id);
  rc = rc ? rc : args_fmt(a, "%.17g", progress);
  rc = rc ? rc : token ? args_fmt(a, "%" PRIu64, *token) : args_str(a, "-");
  if (rc) {
    set_err(s, "redis store: out of memory");
    return CODA_ENOMEM;
  }
  return 0;
}

static int redis_progress(coda__store *base, uint64_t id, double progress) {
  return push_progress((redis_store *)base, id, progress, NULL);
}

static int redis_progress_leased(coda__store *base, const coda__lease *l,
                                 double progress) {
  return push_progress((redis_store *)base, l->id, progress, &l->lease);
}

/* The queue keys and names of one queue for the commit script. */
static int commit_queue(redis_store *s, args *keys, args *argv, const char *q) {
  int rc = key_of(s, keys, "w:", q);
  rc = rc ? rc : key_of(s, keys, "qi:", q);
  return rc ? rc : args_str(argv, q);
}

/* KEYS and the ARGV header of the commit script for the open batch: the
 * known queues and the batch's new ones (known once the commit wrote
 * them: a batch that fails must not leave them in `known`, or it would
 * stay above SCARD and every claim would read the queues again). */
static int commit_args(redis_store *s, args *keys, args *argv) {
  int extra = 0;
  for (int i = 0; i < s->batch_queues.n; i++)
    extra += names_find(&s->known, s->batch_queues.v[i]) < 0;
  int rc = fixed_keys(s, keys);
  rc = rc ? rc : args_fmt(argv, "%d", s->known.n + extra);
  for (int i = 0; rc == 0 && i < s->known.n; i++)
    rc = commit_queue(s, keys, argv, s->known.v[i]);
  for (int i = 0; rc == 0 && i < s->batch_queues.n; i++)
    if (names_find(&s->known, s->batch_queues.v[i]) < 0)
      rc = commit_queue(s, keys, argv, s->batch_queues.v[i]);
  rc = rc ? rc : args_fmt(argv, "%d", s->batch_names.n);
  for (int i = 0; rc == 0 && i < s->batch_names.n; i++) {
    rc = key_of(s, keys, "n:", s->batch_names.v[i]);
    rc = rc ? rc : args_str(argv, s->batch_names.v[i]);
  }
  rc = rc ? rc : args_str(argv, s->nonce);
  return rc ? rc : args_all(argv, &s->ops);
}

static int keep_results(redis_store *s, const redisReply *r) {
  const redisReply *d = r->element[1], *f = r->element[2];
  if (d->elements > (size_t)s->dups_cap) {
    uint64_t *p = realloc(s->dups, d->elements * sizeof *p);
    if (!p)
      return CODA_ENOMEM;
    s->dups = p;
    s->dups_cap = (int)d->elements;
  }
  for (size_t i = 0; i < d->elements; i++)
    s->dups[s->ndups++] = parse_id(d->element[i]);
  size_t nref = f->elements / 2;
  if (nref > (size_t)s->refused_cap) {
    coda__lease *p = realloc(s->refused, nref * sizeof *p);
    if (!p)
      return CODA_ENOMEM;
    s->refused = p;
    s->refused_cap = (int)nref;
  }
  for (size_t i = 0; i < nref; i++)
    s->refused[s->nrefused++] = (coda__lease){
        parse_id(f->element[2 * i]), strtoull(f->element[2 * i + 1]->str, NULL, 10)};
  return 0;
}

/* With replicas=N: new tasks count as written once N replicas have them.
 * Called after the batch was applied: a failure here is an unknown
 * outcome (written on the primary, maybe lost with it), not a refusal. */
static int wait_replicas(redis_store *s) {
  char n[16], ms[16];
  snprintf(n, sizeof n, "%d", s->replicas);
  snprintf(ms, sizeof ms, "%d", WAIT_TIMEOUT_MS);
  redisReply *r = check_reply(s, link_simple(s, &s->main, 3, "WAIT", n, ms), "WAIT");
  if (!r)
    return CODA__STORE_UNKNOWN;
  long long acks = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  freeReplyObject(r);
  if (acks < s->replicas) {
    set_err(
        s,
        "redis store: new tasks not acknowledged by %d replicas within %d ms (%lld did); "
        "written on the primary only",
        s->replicas, WAIT_TIMEOUT_MS, acks);
    return CODA__STORE_UNKNOWN;
  }
  return 0;
}

/* After a commit that may have written the batch's new queues. */
static void known_add_batch(redis_store *s) {
  for (int i = 0; i < s->batch_queues.n; i++)
    if (names_add(&s->known, s->batch_queues.v[i]) != 0)
      return;
}

/* The text of an error a script raised: Redis may put "ERR " before it. */
static const char *script_error(const redisReply *r) {
  return strncmp(r->str, "ERR ", 4) == 0 ? r->str + 4 : r->str;
}

static void unknown_err(redis_store *s) {
  char why[ERR_LEN];
  snprintf(why, sizeof why, "%s", tl_err);
  set_err(s, "%.400s, after the batch was sent: whether it was applied is unknown", why);
}

/* One commit script call; STALE_QUEUES when the queues known here were
 * stale (nothing was written). */
static int commit_once(redis_store *s, long long *written) {
  args keys = {0}, argv = {0};
  redisReply *r = NULL;
  int rc = commit_args(s, &keys, &argv);
  if (rc)
    set_err(s, "redis store: out of memory");
  else
    rc = run_script_sent(s, &s->main, S_COMMIT, &keys, &argv, &r);
  args_free(&keys);
  args_free(&argv);
  const char *why = rc && r ? script_error(r) : "";
  if (strcmp(why, "CODASTALE") == 0)
    rc = STALE_QUEUES;
  else if (strncmp(why, "CODAIDTAKEN ", 12) == 0)
    set_err(s, "redis store: id %" PRIu64 " taken by another key",
            strtoull(why + 12, NULL, 16));
  else if (strncmp(why, "CODABADSTATE ", 13) == 0)
    set_err(s,
            "redis store: task %" PRIu64 ": an outcome must be succeeded, failed or dead",
            strtoull(why + 13, NULL, 16));
  else if (rc == CODA__STORE_UNKNOWN)
    unknown_err(s);
  else if (rc && rc == CODA_ELIMIT)
    set_err(s,
            "redis is out of memory (maxmemory): nothing of the batch was written (%s)",
            r->str);
  if (rc == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements != 3)) {
    set_err(s, "redis store: unexpected reply to a commit");
    rc = CODA_ESTORE;
  }
  if (rc == 0) {
    *written = r->element[0]->integer;
    if ((rc = keep_results(s, r)) != 0) {
      /* Applied, but which adds were duplicates is lost. */
      set_err(
          s, "redis store: out of memory reading the reply of a commit that was applied");
      rc = CODA__STORE_UNKNOWN;
    }
  }
  if (r)
    freeReplyObject(r);
  return rc;
}

static int redis_commit(coda__store *base) {
  redis_store *s = (redis_store *)base;
  s->ndups = s->nrefused = 0;
  if (s->ops.n == 0)
    return 0;
  long long written = 0;
  int rc = commit_once(s, &written);
  if (rc == STALE_QUEUES && (rc = refresh_known(s)) == 0)
    rc = commit_once(s, &written);
  if (rc == STALE_QUEUES) {
    set_err(s, "redis store: the queues changed twice during one commit");
    rc = CODA_ESTORE;
  }
  /* Every batch with adds waits, whether or not it wrote them now: a
   * duplicate or a task of this batch found written may be one that a
   * commit whose reply was lost left on the primary alone. */
  if (rc == 0 && s->batch_adds > 0 && s->replicas > 0)
    rc = wait_replicas(s);
  if (rc == 0)
    known_add_batch(s); /* on failure claims see SCARD differ and read them */
  /* Adds known written: a later batch cannot be this one sent again. Any
   * failure keeps the nonce, so that the batch sent again after an unknown
   * outcome still knows its own, however many failed tries come between. */
  if (s->batch_adds > 0 && rc == 0)
    new_nonce(s);
  forget_batch(s);
  return rc;
}

static int redis_duplicates(coda__store *base, uint64_t *out, int max) {
  redis_store *s = (redis_store *)base;
  int n = s->ndups < max ? s->ndups : max;
  if (n > 0)
    memcpy(out, s->dups, (size_t)n * sizeof *out);
  return n;
}

static int redis_refused(coda__store *base, coda__lease *out, int max) {
  redis_store *s = (redis_store *)base;
  int n = s->nrefused < max ? s->nrefused : max;
  if (n > 0)
    memcpy(out, s->refused, (size_t)n * sizeof *out);
  return n;
}

/* ---- claims, expiry, leases ---------------------------------------------------------
 */

/* A claimed task whose record does not parse, reduced to what the engine
 * needs to write it dead: its id and the token of the claim (the eighth
 * field of its meta), under no name, which no task definition has: the
 * engine marks it dead ("no task of that name") under that token, as for
 * a task it does not know. Skipped, it would stay claimed and come back
 * every lease. 0, or -1 when not even that can be read. */
static int salvage_record(const redisReply *t, coda__task_record *r) {
  if (!t || t->type != REDIS_REPLY_ARRAY || t->elements < 2)
    return -1;
  const char *meta = str_or_null(t->element[1]);
  uint64_t id = parse_id(t->element[0]);
  if (!meta || !id)
    return -1;
  unsigned long long token;
  long long v[META_INTS];
  double progress;
  if (t->element[1]->len >= 81 && meta[0] == 'B') {
    if (decode_meta(t->element[1], v, &progress) != 0 || v[7] <= 0)
      return -1;
    token = (unsigned long long)v[7];
  } else {
    const char *p = meta;
    for (int field = 1; field < 8 && *p; field++) {
      p += strcspn(p, " ");
      p += strspn(p, " ");
    }
    char *end;
    token = strtoull(p, &end, 10);
    if (end == p || token == 0)
      return -1;
  }
  *r = (coda__task_record){.id = id,
                           .name = "",
                           .state = CODA_STATE_RUNNING,
                           .attempts = 1,
                           .max_attempts = 1,
                           .queue = t->elements > 4 ? str_or_null(t->element[4]) : NULL,
                           .lease = token};
  return 0;
}

static int deliver_records(redis_store *s, const redisReply *r, size_t from,
                           coda__claim_fn fn, void *user) {
  int n = 0;
  for (size_t i = from; i < r->elements; i++) {
    coda__task_record rec;
    if (parse_record(r->element[i], 0, &rec) != 0) {
      set_err(s, "redis store: a claimed task's record does not parse: handed over "
                 "without a name, to be written dead");
      if (salvage_record(r->element[i], &rec) != 0)
        continue;
    }
    fn(user, &rec);
    n++;
  }
  return n;
}

static int claim_once(redis_store *s, int64_t now, int64_t lease_until, int max,
                      coda__claim_fn fn, void *user, int *stale) {
  const names *q = s->serve_all ? &s->known : &s->served;
  args keys = {0}, argv = {0};
  int rc = fixed_keys(s, &keys);
  rc = rc ? rc : args_i64(&argv, now);
  rc = rc ? rc : args_i64(&argv, lease_until);
  rc = rc ? rc : args_i64(&argv, max);
  rc = rc ? rc : args_i64(&argv, q->n);
  for (int i = 0; rc == 0 && i < q->n; i++) {
    rc = key_of(s, &keys, "w:", q->v[i]);
    rc = rc ? rc : args_str(&argv, q->v[i]);
  }
  redisReply *r = NULL;
  if (rc == 0)
    rc = run_script(s, &s->main, S_CLAIM, &keys, &argv, &r);
  args_free(&keys);
  args_free(&argv);
  if (rc == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements < 1)) {
    set_err(s, "redis store: unexpected reply to a claim");
    rc = CODA_ESTORE;
  }
  int n = rc;
  if (rc == 0) {
    *stale = s->serve_all && r->element[0]->integer != s->known.n;
    n = deliver_records(s, r, 1, fn, user);
  }
  if (r)
    freeReplyObject(r);
  return n;
}

static int redis_claim(coda__store *base, int64_t now, int64_t lease_until, int max,
                       coda__claim_fn fn, void *user) {
  redis_store *s = (redis_store *)base;
  int stale = 0;
  int n = claim_once(s, now, lease_until, max, fn, user, &stale);
  if (n >= 0 && stale && refresh_known(s) == 0 && n < max) {
    int more = claim_once(s, now, lease_until, max - n, fn, user, &stale);
    n = more < 0 ? n : n + more;
  }
  return n;
}

static int redis_expire(coda__store *base, int64_t now, int64_t lease_until, int max,
                        coda__claim_fn fn, void *user) {
  redis_store *s = (redis_store *)base;
  args keys = {0}, argv = {0};
  int rc = fixed_keys(s, &keys);
  rc = rc ? rc : args_i64(&argv, now);
  rc = rc ? rc : args_i64(&argv, lease_until);
  rc = rc ? rc : args_i64(&argv, max);
  redisReply *r = NULL;
  if (rc == 0)
    rc = run_script(s, &s->main, S_EXPIRE, &keys, &argv, &r);
  args_free(&keys);
  args_free(&argv);
  int n = rc;
  if (rc == 0)
    n = r->type == REDIS_REPLY_ARRAY ? deliver_records(s, r, 0, fn, user) : CODA_ESTORE;
  if (r)
    freeReplyObject(r);
  return n;
}

static int redis_renew(coda__store *base, const coda__lease *l, int n,
                       int64_t lease_until, unsigned char *lost) {
  redis_store *s = (redis_store *)base;
  if (n <= 0)
    return 0;
  args keys = {0}, argv = {0};
  int rc = fixed_keys(s, &keys);
  rc = rc ? rc : args_i64(&argv, lease_until);
  for (int i = 0; rc == 0 && i < n; i++) {
    rc = args_id(&argv, l[i].id);
    rc = rc ? rc : args_fmt(&argv, "%" PRIu64, l[i].lease);
  }
  redisReply *r = NULL;
  uv_mutex_lock(&s->renew_mu);
  if (rc == 0)
    rc = run_script(s, &s->renew, S_RENEW, &keys, &argv, &r);
  uv_mutex_unlock(&s->renew_mu);
  args_free(&keys);
  args_free(&argv);
  if (rc == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)n)) {
    set_err(s, "redis store: unexpected reply to a renewal");
    rc = CODA_ESTORE;
  }
  for (int i = 0; rc == 0 && i < n; i++)
    lost[i] =
        (unsigned char)(r->element[i]->integer == 2 ? 2 : r->element[i]->integer != 0);
  if (r)
    freeReplyObject(r);
  return rc;
}

static int release_once(redis_store *s, const coda__lease *l, int n) {
  args keys = {0}, argv = {0};
  int rc = fixed_keys(s, &keys);
  rc = rc ? rc : args_i64(&argv, s->known.n);
  for (int i = 0; rc == 0 && i < s->known.n; i++) {
    rc = key_of(s, &keys, "w:", s->known.v[i]);
    rc = rc ? rc : args_str(&argv, s->known.v[i]);
  }
  for (int i = 0; rc == 0 && i < n; i++) {
    rc = args_id(&argv, l[i].id);
    rc = rc ? rc : args_fmt(&argv, "%" PRIu64, l[i].lease);
  }
  redisReply *r = NULL;
  if (rc)
    set_err(s, "redis store: out of memory");
  else
    rc = run_script(s, &s->main, S_RELEASE, &keys, &argv, &r);
  args_free(&keys);
  args_free(&argv);
  if (rc && r && strcmp(script_error(r), "CODASTALE") == 0)
    rc = STALE_QUEUES;
  if (r)
    freeReplyObject(r);
  return rc;
}

/* store.h release(): one script call (twice when a queue is new here). */
static int redis_release(coda__store *base, const coda__lease *l, int n) {
  redis_store *s = (redis_store *)base;
  if (n <= 0)
    return 0;
  int rc = release_once(s, l, n);
  if (rc == STALE_QUEUES && (rc = refresh_known(s)) == 0)
    rc = release_once(s, l, n);
  if (rc == STALE_QUEUES) {
    set_err(s, "redis store: the queues changed twice during one release");
    rc = CODA_ESTORE;
  }
  return rc;
}

static int redis_serve(coda__store *base, const char *const *queues, int n) {
  redis_store *s = (redis_store *)base;
  names_clear(&s->served);
  s->serve_all = n == 0;
  for (int i = 0; i < n; i++)
    if (names_add(&s->served, queues[i]) != 0)
      return CODA_ENOMEM;
  return 0;
}

static int redis_pause(coda__store *base, const char *queue, int paused) {
  redis_store *s = (redis_store *)base;
  int rc = link_ready(s, &s->main);
  if (rc)
    return rc;
  redisReply *r = check_reply(
      s, link_simple(s, &s->main, 3, paused ? "SADD" : "SREM", s->keys[K_PAUSED], queue),
      "pause");
  if (!r)
    return CODA_ESTORE;
  freeReplyObject(r);
  return 0;
}

/* The paused set, read on the store thread's link at every poll (store.h:
 * so that a task added here in a queue paused by another process is
 * written unclaimed rather than run at once). */
static int redis_paused(coda__store *base, char *buf, size_t cap) {
  redis_store *s = (redis_store *)base;
  int rc = link_ready(s, &s->main);
  if (rc)
    return rc;
  redisReply *r = check_reply(
      s, link_simple(s, &s->main, 2, "SMEMBERS", s->keys[K_PAUSED]), "SMEMBERS");
  if (!r)
    return CODA_ESTORE;
  if (r->type != REDIS_REPLY_ARRAY) {
    freeReplyObject(r);
    set_err(s, "redis store: unexpected reply to SMEMBERS");
    return CODA_ESTORE;
  }
  size_t len = 0;
  if (cap)
    buf[0] = '\0';
  for (size_t i = 0; rc == 0 && i < r->elements; i++) {
    const redisReply *e = r->element[i];
    size_t need = (i ? 1 : 0) + e->len;
    if (e->type != REDIS_REPLY_STRING || len + need >= cap) {
      rc = CODA_ELIMIT;
      break;
    }
    if (i)
      buf[len++] = ',';
    memcpy(buf + len, e->str, e->len);
    len += e->len;
    buf[len] = '\0';
  }
  rc = rc ? rc : (int)r->elements;
  freeReplyObject(r);
  return rc;
}

/* ---- reading
 * ---------------------------------------------------------------------------- */

/* The tasks of `ids` (hex strings in argv), read atomically on the side
 * link. Caller holds side_mu. */
static int read_tasks(redis_store *s, const args *ids, redisReply **out) {
  args keys = {0};
  int rc = fixed_keys(s, &keys);
  if (rc == 0)
    rc = run_script(s, &s->side, S_READ, &keys, ids, out);
  args_free(&keys);
  if (rc == 0 &&
      ((*out)->type != REDIS_REPLY_ARRAY || (*out)->elements != (size_t)ids->n)) {
    set_err(s, "redis store: unexpected reply to a read");
    rc = CODA_ESTORE;
  }
  return rc;
}

static int redis_get(coda__store *base, uint64_t id, coda_task_info **out) {
  redis_store *s = (redis_store *)base;
  args ids = {0};
  redisReply *r = NULL;
  int rc = args_id(&ids, id);
  uv_mutex_lock(&s->side_mu);
  if (rc == 0)
    rc = read_tasks(s, &ids, &r);
  uv_mutex_unlock(&s->side_mu);
  args_free(&ids);
  if (rc == 0) {
    coda__task_record rec;
    const redisReply *t = r->element[0];
    if (t->type != REDIS_REPLY_ARRAY)
      rc = CODA_ENOTFOUND;
    else if (parse_record(t, 1, &rec) != 0)
      rc = CODA_ESTORE;
    else {
      rc = (*out = coda__task_info_from_record(&rec)) ? 0 : CODA_ENOMEM;
      record_done(&rec);
    }
  }
  if (r)
    freeReplyObject(r);
  return rc;
}

/* The index find() walks: the most selective one its filter names. */
static int find_index(const redis_store *s, const coda__task_filter *f, args *keys) {
  if (f->name)
    return key_of(s, keys, "n:", f->name);
  if (f->queue)
    return key_of(s, keys, "qi:", f->queue);
  if (f->state >= 0 && f->state <= CODA_STATE_CANCELLED)
    return args_str(keys, s->keys[K_STATE0 + f->state]);
  for (int st = 0; st <= CODA_STATE_CANCELLED; st++) /* every state: merged */
    if (args_str(keys, s->keys[K_STATE0 + st]) != 0)
      return CODA_ENOMEM;
  return 0;
}

static int by_hex(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The next ids of the index keys above `after` (16 hex digits), merged,
 * into ids (at most `page`). Caller holds side_mu. */
static int next_ids(redis_store *s, const args *index, const char *after, int page,
                    args *ids) {
  int rc = link_ready(s, &s->side);
  if (rc)
    return rc;
  char from[24], limit[16];
  snprintf(from, sizeof from, "(%s", after);
  snprintf(limit, sizeof limit, "%d", page);
  for (int i = 0; i < index->n; i++) {
    const char *key = index->bytes.base + index->off[i];
    const char *v[] = {"ZRANGEBYLEX", key, from, "+", "LIMIT", "0", limit};
    size_t len[] = {11, index->len[i], strlen(from), 1, 5, 1, strlen(limit)};
    if (redisAppendCommandArgv(s->side.c, 7, v, len) != REDIS_OK) {
      set_err(s, "redis store: out of memory");
      link_drop(&s->side); /* the commands queued before are out of step */
      return CODA_ENOMEM;
    }
  }
  char **all = NULL;
  int nall = 0;
  redisReply *replies[6] = {0};
  for (int i = 0; i < index->n; i++) {
    void *r = NULL;
    if (redisGetReply(s->side.c, &r) != REDIS_OK) {
      set_err(s, "redis %s:%d: %s", s->host, s->port, s->side.c->errstr);
      link_drop(&s->side);
      rc = CODA_ESTORE;
      break;
    }
    replies[i] = r;
    if (replies[i]->type != REDIS_REPLY_ARRAY)
      rc = CODA_ESTORE;
  }
  for (int i = 0; rc == 0 && i < index->n; i++)
    nall += (int)replies[i]->elements;
  if (rc == 0 && nall && !(all = malloc((size_t)nall * sizeof *all)))
    rc = CODA_ENOMEM;
  nall = 0;
  for (int i = 0; rc == 0 && i < index->n; i++)
    for (size_t j = 0; j < replies[i]->elements; j++)
      all[nall++] = replies[i]->element[j]->str;
  if (rc == 0 && index->n > 1)
    qsort(all, (size_t)nall, sizeof *all, by_hex);
  for (int i = 0; rc == 0 && i < nall && i < page; i++)
    rc = args_str(ids, all[i]);
  free(all);
  for (int i = 0; i < index->n; i++)
    if (replies[i])
      freeReplyObject(replies[i]);
  return rc;
}

static int matches(const coda__task_filter *f, const coda__task_record *r) {
  if (f->state >= 0 && (int)r->state != f->state)
    return 0;
  if (f->queue && (!r->queue || strcmp(f->queue, r->queue) != 0))
    return 0;
  return !f->name || strcmp(f->name, r->name) == 0;
}

/* One page of gather(): the next ids of the index and their tasks, under
 * side_mu (taken per page, so that a get() waits for one page at most). */
static int gather_page(redis_store *s, const args *index, const char *after, args *ids,
                       redisReply **r) {
  uv_mutex_lock(&s->side_mu);
  int rc = next_ids(s, index, after, FIND_PAGE, ids);
  if (rc == 0 && ids->n > 0)
    rc = read_tasks(s, ids, r);
  uv_mutex_unlock(&s->side_mu);
  return rc;
}

/* Pages through the index until `limit` tasks matched or it ends. */
static int gather(redis_store *s, const coda__task_filter *f, coda__info_list *out) {
  args index = {0}, ids = {0};
  char after[20];
  snprintf(after, sizeof after, "%016" PRIx64, f->after_id);
  int rc = find_index(s, f, &index);
  while (rc == 0 && out->n < f->limit) {
    args_reset(&ids);
    redisReply *r = NULL;
    rc = gather_page(s, &index, after, &ids, &r);
    if (rc || ids.n == 0) {
      if (r)
        freeReplyObject(r); /* an error reply, or one of the wrong shape */
      break;
    }
    memcpy(after, ids.bytes.base + ids.off[ids.n - 1], 16);
    for (size_t i = 0; rc == 0 && i < r->elements && out->n < f->limit; i++) {
      coda__task_record rec;
      if (r->element[i]->type != REDIS_REPLY_ARRAY ||
          parse_record(r->element[i], 1, &rec) != 0)
        continue; /* deleted since the index was read */
      if (matches(f, &rec))
        rc = coda__info_list_add(out, &rec);
      record_done(&rec);
    }
    freeReplyObject(r);
    if (ids.n < FIND_PAGE)
      break;
  }
  args_free(&index);
  args_free(&ids);
  return rc;
}

static int redis_find(coda__store *base, const coda__task_filter *f, coda_task_list_fn fn,
                      void *user) {
  redis_store *s = (redis_store *)base;
  coda__info_list out = {0};
  coda__task_filter all = *f;
  if (all.limit <= 0)
    all.limit = INT_MAX; /* 0: no limit (store.h), as the other stores read it */
  int rc = gather(s, &all, &out);
  if (rc) {
    coda__info_list_deliver(&out, NULL, NULL);
    return rc;
  }
  return coda__info_list_deliver(&out, fn, user); /* side_mu released: fn may get() */
}

static int redis_list(coda__store *base, coda_task_state state, uint64_t after_id,
                      int limit, coda_task_list_fn fn, void *user) {
  coda__task_filter f = {.state = (int)state, .after_id = after_id, .limit = limit};
  return limit > 0 ? redis_find(base, &f, fn, user) : 0; /* as the other stores */
}

static int64_t redis_next_due(coda__store *base) {
  redis_store *s = (redis_store *)base;
  const names *q = s->serve_all ? &s->known : &s->served;
  if (q->n == 0 || link_ready(s, &s->main) != 0)
    return 0;
  args keys = {0};
  int rc = 0;
  for (int i = 0; rc == 0 && i < q->n; i++)
    rc = key_of(s, &keys, "w:", q->v[i]);
  for (int i = 0; rc == 0 && i < q->n; i++) {
    const char *v[] = {"ZRANGE", keys.bytes.base + keys.off[i], "0", "0", "WITHSCORES"};
    size_t len[] = {6, keys.len[i], 1, 1, 10};
    rc = redisAppendCommandArgv(s->main.c, 5, v, len) == REDIS_OK ? 0 : CODA_ENOMEM;
  }
  const char *v[] = {"SMEMBERS", s->keys[K_PAUSED]};
  size_t len[] = {8, strlen(s->keys[K_PAUSED])};
  if (rc == 0)
    rc = redisAppendCommandArgv(s->main.c, 2, v, len) == REDIS_OK ? 0 : CODA_ENOMEM;
  args_free(&keys);
  redisReply **replies = rc ? NULL : calloc((size_t)q->n + 1, sizeof *replies);
  if (!replies) {
    set_err(s, "redis store: out of memory");
    link_drop(&s->main); /* commands queued, replies never read: out of step */
    return 0;
  }
  int got = 0;
  for (; rc == 0 && got <= q->n; got++) {
    void *r = NULL;
    if (redisGetReply(s->main.c, &r) != REDIS_OK) {
      set_err(s, "redis %s:%d: %s", s->host, s->port, s->main.c->errstr);
      link_drop(&s->main);
      rc = CODA_ESTORE;
      break;
    }
    replies[got] = r;
  }
  int64_t when = 0;
  for (int i = 0; rc == 0 && i < q->n; i++) {
    const redisReply *r = replies[i], *paused = replies[q->n];
    int is_paused = 0;
    for (size_t j = 0; paused->type == REDIS_REPLY_ARRAY && j < paused->elements; j++)
      is_paused |= strcmp(paused->element[j]->str, q->v[i]) == 0;
    if (is_paused || r->type != REDIS_REPLY_ARRAY || r->elements < 2)
      continue;
    int64_t t = strtoll(r->element[1]->str, NULL, 10);
    if (!when || t < when)
      when = t;
  }
  for (int i = 0; i < got; i++)
    freeReplyObject(replies[i]);
  free(replies);
  return when;
}

static int redis_reserve_ids(coda__store *base, uint64_t count, uint64_t *first) {
  redis_store *s = (redis_store *)base;
  int rc = link_ready(s, &s->main);
  if (rc)
    return rc;
  args keys = {0}, argv = {0};
  redisReply *r = NULL;
  rc = args_str(&keys, s->ids_key);
  rc = rc ? rc : args_fmt(&argv, "%" PRIu64, count);
  rc = rc ? rc : run_script(s, &s->main, S_RESERVE, &keys, &argv, &r);
  args_free(&keys);
  args_free(&argv);
  if (rc) {
    if (r)
      freeReplyObject(r);
    return rc == CODA_ENOMEM ? rc : CODA_ESTORE;
  }
  rc = CODA_ESTORE;
  if (r->type == REDIS_REPLY_INTEGER && (uint64_t)r->integer >= count) {
    *first = (uint64_t)r->integer - count + 1; /* never 0: the floor is above it */
    rc = 0;
  } else {
    set_err(s, "redis store: unexpected reply to a reservation of ids");
  }
  freeReplyObject(r);
  return rc;
}

/* ---- purge
 * ------------------------------------------------------------------------------- */

/* Purge, step one: finished tasks older than `before` (at most limit), with
 * their names and queues, in two round trips. */
static int purge_candidates(redis_store *s, int64_t before, int limit, redisReply **ids,
                            redisReply **info) {
  char max[32], lim[16];
  snprintf(max, sizeof max, "(%" PRId64, before);
  snprintf(lim, sizeof lim, "%d", limit);
  *ids = check_reply(s,
                     link_simple(s, &s->main, 7, "ZRANGEBYSCORE", s->keys[K_DONE], "-inf",
                                 max, "LIMIT", "0", lim),
                     "ZRANGEBYSCORE");
  if (!*ids)
    return CODA_ESTORE;
  if ((*ids)->type != REDIS_REPLY_ARRAY || (*ids)->elements == 0)
    return 0;
  args a = {0};
  int rc = 0;
  for (int k = 0; rc == 0 && k < 2; k++) {
    args_reset(&a);
    rc = args_str(&a, "HMGET");
    rc = rc ? rc : args_str(&a, s->keys[k == 0 ? K_NAME : K_QUEUE]);
    for (size_t i = 0; rc == 0 && i < (*ids)->elements; i++)
      rc = args_str(&a, (*ids)->element[i]->str);
    const char **v = rc ? NULL : malloc((size_t)a.n * sizeof *v);
    for (int i = 0; v && i < a.n; i++)
      v[i] = a.bytes.base + a.off[i];
    if (rc == 0 && (!v || redisAppendCommandArgv(s->main.c, a.n, v, a.len) != REDIS_OK))
      rc = CODA_ENOMEM;
    free(v);
  }
  args_free(&a);
  if (rc) {
    set_err(s, "redis store: out of memory");
    link_drop(&s->main); /* the first HMGET may be queued: out of step */
    return rc;
  }
  for (int k = 0; rc == 0 && k < 2; k++) {
    void *r = NULL;
    if (redisGetReply(s->main.c, &r) != REDIS_OK) {
      set_err(s, "redis %s:%d: %s", s->host, s->port, s->main.c->errstr);
      link_drop(&s->main);
      return CODA_ESTORE;
    }
    info[k] = r;
  }
  return rc;
}

static int purge_args(redis_store *s, int64_t before, redisReply *ids, redisReply **info,
                      args *keys, args *argv) {
  names q = {0}, n = {0};
  int rc = fixed_keys(s, keys);
  for (size_t i = 0; rc == 0 && i < ids->elements; i++) {
    if (info[0]->element[i]->type == REDIS_REPLY_STRING)
      rc = names_add(&n, info[0]->element[i]->str);
    if (rc == 0 && info[1]->element[i]->type == REDIS_REPLY_STRING)
      rc = names_add(&q, info[1]->element[i]->str);
  }
  rc = rc ? rc : args_i64(argv, before);
  rc = rc ? rc : args_i64(argv, q.n);
  for (int i = 0; rc == 0 && i < q.n; i++) {
    rc = key_of(s, keys, "qi:", q.v[i]);
    rc = rc ? rc : args_str(argv, q.v[i]);
  }
  rc = rc ? rc : args_i64(argv, n.n);
  for (int i = 0; rc == 0 && i < n.n; i++) {
    rc = key_of(s, keys, "n:", n.v[i]);
    rc = rc ? rc : args_str(argv, n.v[i]);
  }
  for (size_t i = 0; rc == 0 && i < ids->elements; i++)
    rc = args_str(argv, ids->element[i]->str);
  names_free(&q);
  names_free(&n);
  return rc;
}

static int redis_purge(coda__store *base, int64_t finished_before, int limit) {
  redis_store *s = (redis_store *)base;
  int rc = link_ready(s, &s->main);
  if (rc)
    return rc;
  redisReply *ids = NULL, *info[2] = {NULL, NULL}, *r = NULL;
  rc = purge_candidates(s, finished_before, limit, &ids, info);
  int n = rc;
  if (rc == 0 && info[0] && info[1] && info[0]->type == REDIS_REPLY_ARRAY &&
      info[1]->type == REDIS_REPLY_ARRAY) {
    args keys = {0}, argv = {0};
    rc = purge_args(s, finished_before, ids, info, &keys, &argv);
    if (rc == 0)
      rc = run_script(s, &s->main, S_PURGE, &keys, &argv, &r);
    n = rc ? rc : r->type == REDIS_REPLY_INTEGER ? (int)r->integer : CODA_ESTORE;
    args_free(&keys);
    args_free(&argv);
  }
  if (ids)
    freeReplyObject(ids);
  for (int k = 0; k < 2; k++)
    if (info[k])
      freeReplyObject(info[k]);
  if (r)
    freeReplyObject(r);
  return n;
}

/* ---- version 3 ------------------------------------------------------------ */

/* HGET of one field of a task (a hash of the fixed ones) on link l: a
 * malloc'd copy, NULL when missing (*rc 0) or on failure (*rc < 0). */
static char *task_field(redis_store *s, conn *l, int key, const char *idhex, int *rc) {
  *rc = link_ready(s, l);
  if (*rc)
    return NULL;
  redisReply *r =
      check_reply(s, link_simple(s, l, 3, "HGET", s->keys[key], idhex), "HGET");
  if (!r) {
    *rc = CODA_ESTORE;
    return NULL;
  }
  char *v = r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : NULL;
  if (r->type == REDIS_REPLY_STRING && !v)
    *rc = CODA_ENOMEM;
  freeReplyObject(r);
  return v;
}

/* One action (admin_lua) on the store thread's link: 0, 1, CODA_ENOTFOUND,
 * CODA_ESTATE or < 0. `state` -1: any; `queue` NULL: any (else a task of
 * another queue is left alone: CODA_ESTATE). The task's queue and name
 * are read first (the script needs their keys); if they changed
 * meanwhile, once more. */
/* The KEYS and ARGV of one admin_lua call on task `idhex` of queue `q`
 * and name `name` (as read just before: the script checks them). */
static int admin_args(const redis_store *s, char op, const char *idhex, int64_t now,
                      const char *q, const char *name, int state, args *keys,
                      args *argv) {
  int rc = fixed_keys(s, keys);
  rc = rc ? rc : key_of(s, keys, "w:", q ? q : "");
  rc = rc ? rc : key_of(s, keys, "qi:", q ? q : "");
  rc = rc ? rc : key_of(s, keys, "n:", name ? name : "");
  rc = rc ? rc : args_push(argv, &op, 1);
  rc = rc ? rc : args_str(argv, idhex);
  rc = rc ? rc : args_i64(argv, now);
  rc = rc ? rc : args_str(argv, q ? q : "");
  rc = rc ? rc : args_str(argv, name ? name : "");
  return rc ? rc : state < 0 ? args_str(argv, "-") : args_i64(argv, state);
}

/* admin_lua's reply: 0, 1, CODA_ENOTFOUND, CODA_ESTATE or CODA_ESTORE. */
static int admin_result(redis_store *s, const redisReply *r) {
  long long v = r->type == REDIS_REPLY_INTEGER ? r->integer : -3;
  if (v == -3)
    set_err(s, "redis store: unexpected reply to an action");
  return v == -1            ? CODA_ENOTFOUND
         : v == -2          ? CODA_ESTATE
         : v == 0 || v == 1 ? (int)v
                            : CODA_ESTORE;
}

static int is_stale(const redisReply *r) {
  return r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "CODASTALE") != NULL;
}

static int admin_one(redis_store *s, char op, uint64_t id, int64_t now, int state,
                     const char *queue) {
  char idhex[24];
  snprintf(idhex, sizeof idhex, "%016" PRIx64, id);
  for (int attempt = 0; attempt < 3; attempt++) {
    int rc;
    char *q = task_field(s, &s->main, K_QUEUE, idhex, &rc);
    char *name = rc ? NULL : task_field(s, &s->main, K_NAME, idhex, &rc);
    if (rc == 0 && queue && (!q || strcmp(q, queue) != 0))
      rc = CODA_ESTATE;
    args keys = {0}, argv = {0};
    if (rc == 0)
      rc = admin_args(s, op, idhex, now, q, name, state, &keys, &argv);
    free(q);
    free(name);
    redisReply *r = NULL;
    if (rc == 0)
      rc = run_script(s, &s->main, S_ADMIN, &keys, &argv, &r);
    args_free(&keys);
    args_free(&argv);
    int stale = rc && is_stale(r);
    if (rc == 0)
      rc = admin_result(s, r);
    if (r)
      freeReplyObject(r);
    if (!stale)
      return rc;
  }
  set_err(s, "redis store: task %" PRIu64 " keeps changing", id);
  return CODA_ESTORE;
}

static int redis_retry(coda__store *base, uint64_t id, int64_t now) {
  return admin_one((redis_store *)base, 'R', id, now, -1, NULL);
}

static int redis_cancel(coda__store *base, uint64_t id, int64_t now) {
  return admin_one((redis_store *)base, 'C', id, now, -1, NULL);
}

static int redis_remove(coda__store *base, uint64_t id) {
  return admin_one((redis_store *)base, 'D', id, 0, -1, NULL);
}

/* The reply of a pipelined command, or NULL (the link dropped). */
static redisReply *pipe_reply(redis_store *s, conn *l) {
  void *r = NULL;
  if (redisGetReply(l->c, &r) != REDIS_OK) {
    set_err(s, "redis %s:%d: %s", s->host, s->port, l->c->errstr);
    link_drop(l);
    return NULL;
  }
  return r;
}

#ifndef BULK_CHUNK
#define BULK_CHUNK                                                                       \
  256 /* tasks per two round trips; a smaller one: tests of the boundary */
#endif

/* One chunk of bulk(): ids[at..at+m) of reply `ids`. Two round trips: the
 * tasks' queues and names (two HMGETs), then one admin_lua call each, all
 * pipelined. A task that changed in between (CODASTALE) or a script the
 * server lost (NOSCRIPT) goes through admin_one(). An error stops the
 * bulk action after this chunk: every call of the chunk was sent, so each
 * reply is still read and each one applied is counted in *n (bulk() puts
 * the count in the error). Adds to *n what it applied; 0 or < 0. */
static int bulk_chunk(redis_store *s, char op, int state, const char *queue, int64_t now,
                      const redisReply *ids, size_t at, size_t m, long *n) {
  args hq = {0}, hn = {0}, cmd = {0}, keys = {0}, argv = {0};
  int rc = args_str(&hq, "HMGET");
  rc = rc ? rc : args_str(&hq, s->keys[K_QUEUE]);
  rc = rc ? rc : args_str(&hn, "HMGET");
  rc = rc ? rc : args_str(&hn, s->keys[K_NAME]);
  for (size_t i = at; rc == 0 && i < at + m; i++) {
    rc = args_push(&hq, ids->element[i]->str, ids->element[i]->len);
    rc = rc ? rc : args_push(&hn, ids->element[i]->str, ids->element[i]->len);
  }
  rc = rc ? rc : link_append(&s->main, &hq);
  rc = rc ? rc : link_append(&s->main, &hn);
  args_free(&hq);
  args_free(&hn);
  if (rc) {
    link_drop(&s->main); /* what was queued is out of step */
    return rc;
  }
  redisReply *qs = pipe_reply(s, &s->main);
  redisReply *ns = qs ? pipe_reply(s, &s->main) : NULL;
  if (!qs || !ns || qs->type != REDIS_REPLY_ARRAY || ns->type != REDIS_REPLY_ARRAY ||
      qs->elements != m || ns->elements != m) {
    if (qs && ns)
      set_err(s, "redis store: unexpected reply to HMGET");
    rc = CODA_ESTORE;
  }
  /* One call per task of this queue; the others are counted as skipped. */
  unsigned char *sent = rc ? NULL : calloc(m, 1);
  if (!rc && !sent)
    rc = CODA_ENOMEM;
  for (size_t i = 0; rc == 0 && i < m; i++) {
    const redisReply *q = qs->element[i], *name = ns->element[i];
    if (q->type != REDIS_REPLY_STRING || (queue && strcmp(q->str, queue) != 0))
      continue; /* gone, or another queue */
    args_reset(&keys);
    args_reset(&argv);
    args_reset(&cmd);
    rc = admin_args(s, op, ids->element[at + i]->str, now, q->str,
                    name->type == REDIS_REPLY_STRING ? name->str : "", state, &keys,
                    &argv);
    rc = rc ? rc : script_args(&s->main, S_ADMIN, &keys, &argv, &cmd);
    rc = rc ? rc : link_append(&s->main, &cmd);
    sent[i] = rc == 0;
  }
  args_free(&keys);
  args_free(&argv);
  args_free(&cmd);
  if (rc == CODA_ENOMEM)
    link_drop(&s->main);
  /* Every reply is read (the link stays in step), then the redos. */
  redisReply **r = rc ? NULL : calloc(m, sizeof *r);
  if (!rc && !r) {
    rc = CODA_ENOMEM;
    link_drop(&s->main);
  }
  for (size_t i = 0; rc == 0 && i < m; i++)
    if (sent[i] && !(r[i] = pipe_reply(s, &s->main)))
      rc = CODA_ESTORE;
  for (size_t i = 0; r && i < m; i++) {
    if (!sent[i] || !r[i])
      continue;
    int redo = r[i]->type == REDIS_REPLY_ERROR &&
               (is_stale(r[i]) || strncmp(r[i]->str, "NOSCRIPT", 8) == 0);
    if (redo && rc)
      continue; /* no new command after an error */
    int one;
    if (redo)
      one = admin_one(s, op, parse_id(ids->element[at + i]), now, state, queue);
    else if (r[i]->type != REDIS_REPLY_ERROR)
      one = admin_result(s, r[i]);
    else if ((one = reply_error_code(r[i])) != CODA_ENOTFOUND && one != CODA_ESTATE &&
             rc == 0)
      set_err(s, "redis: %s", r[i]->str);
    if (one == 0)
      (*n)++;
    else if (one != CODA_ENOTFOUND && one != CODA_ESTATE && rc == 0)
      rc = one; /* the first error's message stays */
  }
  for (size_t i = 0; r && i < m; i++)
    if (r[i])
      freeReplyObject(r[i]);
  free(r);
  free(sent);
  if (qs)
    freeReplyObject(qs);
  if (ns)
    freeReplyObject(ns);
  return rc;
}

/* The tasks in `state` (its index, read whole: an operator's action), one
 * action each, BULK_CHUNK tasks per two round trips: how many it applied
 * to, or < 0. */
static long bulk(redis_store *s, char op, coda_task_state state, const char *queue,
                 int64_t now) {
  if ((int)state < 0 || state > CODA_STATE_CANCELLED)
    return CODA_EINVAL;
  int rc = link_ready(s, &s->main);
  if (rc)
    return rc;
  redisReply *ids = check_reply(
      s, link_simple(s, &s->main, 4, "ZRANGE", s->keys[K_STATE0 + state], "0", "-1"),
      "ZRANGE");
  if (!ids)
    return CODA_ESTORE;
  long n = 0;
  size_t total = ids->type == REDIS_REPLY_ARRAY ? ids->elements : 0;
  for (size_t at = 0; rc == 0 && at < total; at += BULK_CHUNK) {
    size_t m = total - at < BULK_CHUNK ? total - at : BULK_CHUNK;
    rc = bulk_chunk(s, op, (int)state, queue, now, ids, at, m, &n);
  }
  freeReplyObject(ids);
  if (rc && n > 0) {
    char why[ERR_LEN];
    snprintf(why, sizeof why, "%s", tl_err);
    set_err(s, "%.400s (at least %ld of the %zu tasks had been changed before)", why, n,
            total);
  }
  return rc ? rc : n;
}

static long redis_retry_all(coda__store *base, coda_task_state state, const char *queue,
                            int64_t now) {
  return bulk((redis_store *)base, 'R', state, queue, now);
}

static long redis_remove_all(coda__store *base, coda_task_state state,
                             const char *queue) {
  return bulk((redis_store *)base, 'D', state, queue, 0);
}

static long long hash_number(const redisReply *h, const char *field) {
  for (size_t i = 0; h && h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
    if (strcmp(h->element[i]->str, field) == 0)
      return strtoll(h->element[i + 1]->str, NULL, 10);
  return 0;
}

static int is_member(const redisReply *set, const char *name) {
  for (size_t i = 0; set && set->type == REDIS_REPLY_ARRAY && i < set->elements; i++)
    if (strcmp(set->element[i]->str, name) == 0)
      return 1;
  return 0;
}

/* One queue from what was read: counts, totals, paused; then its waiting
 * set's scheduled count and oldest due (two more replies). */
static void fill_queue(coda_queue_info *q, const redisReply *counts,
                       const redisReply *totals, const redisReply *paused,
                       const redisReply *sched, const redisReply *oldest) {
  char field[128];
  for (int st = 0; st <= CODA_STATE_CANCELLED; st++) {
    snprintf(field, sizeof field, "%s:%d", q->name, st);
    long long v = hash_number(counts, field);
    q->counts[st] = v > 0 ? (long)v : 0;
  }
  snprintf(field, sizeof field, "%s:p", q->name);
  q->processed = (long)hash_number(totals, field);
  snprintf(field, sizeof field, "%s:f", q->name);
  q->failed = (long)hash_number(totals, field);
  q->paused = is_member(paused, q->name);
  q->scheduled = sched && sched->type == REDIS_REPLY_INTEGER ? (long)sched->integer : 0;
  if (oldest && oldest->type == REDIS_REPLY_ARRAY && oldest->elements == 2)
    q->oldest_due_at = strtoll(oldest->element[1]->str, NULL, 10);
}

static int by_queue_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads on the side link, no scan: the queues and paused sets, the counts
 * and totals hashes (one field per queue and state), and per queue a
 * ZCOUNT and a ZRANGEBYSCORE LIMIT 1 of its waiting set; pipelined. */
static int redis_queue_stats(coda__store *base, int64_t now, coda__queue_fn fn,
                             void *user) {
  redis_store *s = (redis_store *)base;
  redisReply *head[4] = {0}, **per = NULL;
  char **qnames = NULL;
  size_t nq = 0;
  uv_mutex_lock(&s->side_mu);
  int rc = link_ready(s, &s->side);
  const char *fixed[4][2] = {{"SMEMBERS", s->keys[K_QUEUES]},
                             {"SMEMBERS", s->keys[K_PAUSED]},
                             {"HGETALL", s->keys[K_COUNTS]},
                             {"HGETALL", s->keys[K_TOTALS]}};
  for (int i = 0; rc == 0 && i < 4; i++)
    if (redisAppendCommand(s->side.c, "%s %s", fixed[i][0], fixed[i][1]) != REDIS_OK)
      rc = CODA_ENOMEM;
  for (int i = 0; rc == 0 && i < 4; i++)
    if (!(head[i] = pipe_reply(s, &s->side)) || head[i]->type == REDIS_REPLY_ERROR)
      rc = CODA_ESTORE;
  /* The queues known, and paused ones that never had a task. */
  for (int k = 0; rc == 0 && k < 2; k++)
    for (size_t i = 0; head[k]->type == REDIS_REPLY_ARRAY && i < head[k]->elements; i++) {
      const char *name = head[k]->element[i]->str;
      int seen = 0;
      for (size_t j = 0; j < nq; j++)
        seen |= strcmp(qnames[j], name) == 0;
      char **grown = seen ? qnames : realloc(qnames, (nq + 1) * sizeof *qnames);
      if (!grown || (!seen && !(grown[nq] = strdup(name)))) {
        rc = CODA_ENOMEM;
        break;
      }
      qnames = grown;
      nq += !seen;
    }
  if (rc == 0 && nq)
    qsort(qnames, nq, sizeof *qnames, by_queue_name);
  per = nq ? calloc(nq * 2, sizeof *per) : NULL;
  if (nq && !per)
    rc = CODA_ENOMEM;
  char now_s[32], after_s[32];
  snprintf(now_s, sizeof now_s, "%lld", (long long)now);
  snprintf(after_s, sizeof after_s, "(%lld", (long long)now);
  for (size_t i = 0; rc == 0 && i < nq; i++) {
    char key[200];
    snprintf(key, sizeof key, "%sw:%s", s->tag, qnames[i]);
    if (redisAppendCommand(s->side.c, "ZCOUNT %s %s +inf", key, after_s) != REDIS_OK ||
        redisAppendCommand(s->side.c, "ZRANGEBYSCORE %s -inf %s WITHSCORES LIMIT 0 1",
                           key, now_s) != REDIS_OK)
      rc = CODA_ENOMEM;
  }
  for (size_t i = 0; rc == 0 && i < nq * 2; i++)
    if (!(per[i] = pipe_reply(s, &s->side)))
      rc = CODA_ESTORE;
  if (rc == CODA_ENOMEM && s->side.c)
    link_drop(&s->side); /* what was queued is out of step */
  uv_mutex_unlock(&s->side_mu);
  int given = 0, stop = 0;
  for (size_t i = 0; i < nq; i++) {
    if (rc == 0 && !stop) {
      coda_queue_info q = {.name = qnames[i]};
      fill_queue(&q, head[2], head[3], head[1], per[2 * i], per[2 * i + 1]);
      given++;
      stop = fn(&q, user);
    }
    free(qnames[i]);
    if (per && per[2 * i])
      freeReplyObject(per[2 * i]);
    if (per && per[2 * i + 1])
      freeReplyObject(per[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++)
    if (head[i])
      freeReplyObject(head[i]);
  free(per);
  free(qnames);
  return rc ? rc : given;
}

/* A node's record: {N}:node:ID holds its JSON and lapses with it (PX);
 * {N}:nodes lists the ids by when they lapse, so nodes() reads the live
 * ones without a scan. On the heartbeat's link. */
static int redis_node_beat(coda__store *base, const coda_node_info *n, int64_t now,
                           int64_t ttl_ms) {
  redis_store *s = (redis_store *)base;
  char key[512];
  snprintf(key, sizeof key, "%snode:%s", s->tag, n->id);
  json_t *o = json_pack(
      "{s:s,s:s,s:i,s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:s}", "id", n->id, "host", n->host,
      "pid", n->pid, "role", n->role, "queues", n->queues, "listen", n->listen, "running",
      n->running, "processed", (json_int_t)n->processed, "started_at",
      (json_int_t)n->started_at, "last_seen", (json_int_t)now, "version", n->version);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text)
    return CODA_ENOMEM;
  char ttl[32], until[32];
  snprintf(ttl, sizeof ttl, "%lld", (long long)ttl_ms);
  snprintf(until, sizeof until, "%lld", (long long)(now + ttl_ms));
  uv_mutex_lock(&s->renew_mu);
  int rc = link_ready(s, &s->renew);
  redisReply *a = NULL, *b = NULL;
  if (rc == 0) { /* the ids of records lapsed by now go (their records did) */
    char before[32];
    snprintf(before, sizeof before, "(%lld", (long long)now);
    redisReply *gone = link_simple(s, &s->renew, 4, "ZREMRANGEBYSCORE", s->keys[K_NODES],
                                   "-inf", before);
    if (gone)
      freeReplyObject(gone);
    else
      rc = CODA_ESTORE; /* the link dropped: not used again before link_ready() */
  }
  if (rc == 0 && ttl_ms > 0) {
    a = link_simple(s, &s->renew, 5, "SET", key, text, "PX", ttl);
    b = a ? link_simple(s, &s->renew, 4, "ZADD", s->keys[K_NODES], until, n->id) : NULL;
  } else if (rc == 0) { /* withdrawn */
    a = link_simple(s, &s->renew, 2, "DEL", key);
    b = a ? link_simple(s, &s->renew, 3, "ZREM", s->keys[K_NODES], n->id) : NULL;
  }
  uv_mutex_unlock(&s->renew_mu);
  free(text);
  if (rc == 0 && (!(a = check_reply(s, a, "SET")) || !(b = check_reply(s, b, "ZADD"))))
    rc = CODA_ESTORE;
  if (a)
    freeReplyObject(a);
  if (b)
    freeReplyObject(b);
  return rc;
}

static int node_from_json(const char *text, size_t len, coda_node_info *n,
                          json_t **keep) {
  json_t *o = json_loadb(text, len, 0, NULL);
  if (!json_is_object(o)) {
    json_decref(o);
    return -1;
  }
  *keep = o;
#define NODE_STR(f)                                                                      \
  (json_string_value(json_object_get(o, f)) ? json_string_value(json_object_get(o, f))   \
                                            : "")
  *n = (coda_node_info){
      .id = NODE_STR("id"),
      .host = NODE_STR("host"),
      .pid = (int)json_integer_value(json_object_get(o, "pid")),
      .role = NODE_STR("role"),
      .queues = NODE_STR("queues"),
      .listen = NODE_STR("listen"),
      .running = (int)json_integer_value(json_object_get(o, "running")),
      .processed = (long)json_integer_value(json_object_get(o, "processed")),
      .started_at = json_integer_value(json_object_get(o, "started_at")),
      .last_seen = json_integer_value(json_object_get(o, "last_seen")),
      .version = NODE_STR("version")};
#undef NODE_STR
  return 0;
}

static int redis_nodes(coda__store *base, int64_t now, coda__node_fn fn, void *user) {
  redis_store *s = (redis_store *)base;
  char from[32];
  snprintf(from, sizeof from, "(%lld", (long long)now);
  uv_mutex_lock(&s->side_mu);
  int rc = link_ready(s, &s->side);
  redisReply *ids = NULL, *recs = NULL;
  if (rc == 0) {
    ids = check_reply(
        s, link_simple(s, &s->side, 4, "ZRANGEBYSCORE", s->keys[K_NODES], from, "+inf"),
        "ZRANGEBYSCORE");
    rc = ids ? 0 : CODA_ESTORE;
  }
  if (rc == 0 && ids->type == REDIS_REPLY_ARRAY && ids->elements) {
    args a = {0};
    rc = args_str(&a, "MGET");
    for (size_t i = 0; rc == 0 && i < ids->elements; i++) {
      char key[512];
      snprintf(key, sizeof key, "%snode:%s", s->tag, ids->element[i]->str);
      rc = args_str(&a, key);
    }
    recs = rc ? NULL : check_reply(s, link_command(s, &s->side, &a), "MGET");
    args_free(&a);
    if (rc == 0 && !recs)
      rc = CODA_ESTORE;
  }
  uv_mutex_unlock(&s->side_mu);
  int given = 0, stop = 0;
  for (size_t i = 0;
       rc == 0 && !stop && recs && recs->type == REDIS_REPLY_ARRAY && i < recs->elements;
       i++) {
    const redisReply *e = recs->element[i];
    coda_node_info n;
    json_t *keep = NULL;
    if (e->type != REDIS_REPLY_STRING || node_from_json(e->str, e->len, &n, &keep) != 0)
      continue; /* lapsed between the two reads */
    given++;
    stop = fn(&n, user);
    json_decref(keep);
  }
  if (ids)
    freeReplyObject(ids);
  if (recs)
    freeReplyObject(recs);
  return rc ? rc : given;
}

static const coda__store_methods redis_methods = {
    .version = CODA__STORE_VERSION,
    .name = "redis",
    .recover = redis_recover,
    .begin = redis_begin,
    .commit = redis_commit,
    .rollback = redis_rollback,
    .enqueue = redis_enqueue,
    .claim = redis_claim,
    .finish = redis_finish,
    .progress = redis_progress,
    .reserve_ids = redis_reserve_ids,
    .get = redis_get,
    .next_due = redis_next_due,
    .errmsg = redis_errmsg,
    .close = redis_close,
    .begin_lazy = redis_begin,
    .list = redis_list,
    .purge = redis_purge,
    .serve = redis_serve,
    .pause = redis_pause,
    .renew = redis_renew,
    .refused = redis_refused,
    .expire = redis_expire,
    .progress_leased = redis_progress_leased,
    .find = redis_find,
    .paused = redis_paused,
    .duplicates = redis_duplicates,
    .release = redis_release,
    .retry = redis_retry,
    .cancel = redis_cancel,
    .remove = redis_remove,
    .retry_all = redis_retry_all,
    .remove_all = redis_remove_all,
    .queue_stats = redis_queue_stats,
    .node_beat = redis_node_beat,
    .nodes = redis_nodes,
};
