-- Lua scripts of the Redis backend (gatorapp/backends/redis.py).
--
-- Each "-- @@ name" section below is one script; the "common" section is
-- prepended to every other one, and so is each "-- @@ lib name" helper that a
-- script (or a helper it uses) lists on its "-- needs:" line. Only those:
-- Redis builds every local function of a script on every call. A script runs
-- atomically, so each state change of a batch of tasks is all-or-nothing even
-- if a client dies mid-call.
--
-- Every script gets the same KEYS, all of one queue and all carrying the
-- queue's hash tag {prefix:queue}, so a script touches a single slot:
--   1 data    hash  task id -> payload (a task exists while it has data)
--   2 wait    zset  task id -> due time: waiting tasks, ready once due
--   3 own     hash  task id -> token of the batch that leased it, then the
--                   task's due time (kept after the lease expires, until
--                   another worker reserves the task)
--   4 dlv     hash  task id -> times its lease expired since enqueue or retry
--   5 leases  zset  batch token -> lease expiry: one entry per reserve call
--   6 held    hash  batch token -> how many of its tasks it still holds
--   7 meta    hash  "reg": 1 once the queue is in the registry (which lives
--                   outside this slot)
--   8 dead    zset  task id -> failed_at
--   9 ddata   hash  task id -> payload of a dead letter
--  10 dwhy    hash  task id -> reason .. "\n" .. error
--  11 waiters zset  "<listener>|<lease>" -> until when that idle worker waits
--                   here; its inbox is the list "<tag>:in:<listener>", where a
--                   task due now is handed to it, leased, or an empty string
--                   wakes it
--  12 rec     the record of this call (settle, release, take): what it did,
--             kept for the client's retry window, so the same call sent again
--             after a lost reply returns the same; for reserve, the key of
--             the batch it leases, "<tag>:b:<token>"
--  13...      records of earlier calls whose replies have arrived: deleted
-- A batch's key lists the task ids it leased; it is deleted once the batch
-- holds none, or when its lease is reclaimed. (Scripts other than reserve
-- name it from the queue's tag, so it is always in the queue's slot.)
--
-- Leases are per batch, not per task: a reserve leases all it returns under
-- one token, the heartbeat renews a batch with one ZADD, and an expired
-- batch goes back to the waiting set whole. Tokens are 64 characters, so
-- own's values are longer than hash-max-listpack-value (64 by default) and
-- own is a real hash table: field lookups stay O(1) however few tasks are
-- leased. Lists of arguments come as one msgpack blob (cmsgpack), so a batch
-- of 500 is one argument.
--
-- Equal due times keep enqueue order: the members of wait are task ids, and
-- the ids of one enqueue call sort in the order of the call (see the
-- producer). Times are epoch seconds from Redis TIME, so worker clocks do not
-- matter.

-- @@ common
local K_DATA, K_WAIT, K_OWN, K_DLV, K_LEASES, K_HELD, K_META =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local K_DEAD, K_DDATA, K_DWHY, K_WAITERS, K_REC = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12]
-- "{prefix:queue}:data" -> "{prefix:queue}:"
local TAG = string.sub(K_DATA, 1, -5)
local TOKEN_LEN = 64
-- An inbox outlives its waiter by this much (a worker that died waiting).
local INBOX_MS = 600000

-- @@ lib now
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- @@ lib fmt
local function fmt(t)
  return string.format('%.6f', t)
end

-- @@ lib batch_key
local function batch_key(token)
  return TAG .. 'b:' .. token
end

-- @@ lib owner
-- An own entry: the token of the batch that leased the task, then its due time.
local function owner(v)
  return v and string.sub(v, 1, TOKEN_LEN)
end

-- @@ lib due_of
local function due_of(v)
  return string.sub(v, TOKEN_LEN + 1)
end

-- @@ lib head_due
local function head_due()
  local h = redis.call('ZRANGE', K_WAIT, 0, 0, 'WITHSCORES')
  if h[2] then return tonumber(h[2]) end
  return nil
end

-- @@ lib next_due
-- needs: fmt head_due
-- Seconds until this queue may have something to reserve (a due task or an
-- expired lease), as a string; '0' when ready now, '' when nothing waits.
local function next_due(t)
  local soonest = head_due()
  local l = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if l[2] and (soonest == nil or tonumber(l[2]) < soonest) then soonest = tonumber(l[2]) end
  if soonest == nil then return '' end
  return fmt(math.max(0, soonest - t))
end

-- @@ lib inbox
local function inbox(listener)
  return TAG .. 'in:' .. listener
end

-- @@ lib wake_all
-- needs: fmt inbox
-- Every worker waiting on this queue gets an empty string in its inbox, which
-- ends its wait (it then reserves, or computes how long to sleep again).
local function wake_all(t)
  local ws = redis.call('ZRANGEBYSCORE', K_WAITERS, fmt(t), '+inf')
  redis.call('DEL', K_WAITERS)
  for _, w in ipairs(ws) do
    local box = inbox(string.match(w, '^[^|]*'))
    redis.call('RPUSH', box, '')
    redis.call('PEXPIRE', box, INBOX_MS)
  end
end

-- @@ lib wake_for
-- needs: wake_all
-- Wake idle workers when a task is ready now or becomes the earliest one due,
-- so they re-compute how long to sleep.
local function wake_for(soonest, t, head)
  if soonest ~= nil and (soonest <= t or head == nil or soonest < head) then
    if redis.call('EXISTS', K_WAITERS) == 1 then wake_all(t) end
  end
end

-- @@ lib collect
-- needs: inbox
-- A listener stops waiting here: its registration goes, and what its inbox
-- held comes back (tasks handed to it, as msgpack [token, lease, id, payload];
-- wake-ups are dropped).
local function collect(member)
  redis.call('ZREM', K_WAITERS, member)
  local box = inbox(string.match(member, '^[^|]*'))
  local got = redis.call('LRANGE', box, 0, -1)
  if #got == 0 then return got end
  redis.call('DEL', box)
  local handed = {}
  for _, m in ipairs(got) do
    if m ~= '' then handed[#handed + 1] = m end
  end
  return handed
end

-- @@ lib running
-- needs: owner
-- Whether an enqueue of id (already in the queue) with payload must be
-- refused: the task runs now (leased, its lease alive) as another task (its
-- payload differs). A waiting task, or the same payload again (a call sent
-- twice), is left alone as before.
local function running(id, payload, t)
  if redis.call('ZSCORE', K_WAIT, id) then return false end
  if redis.call('HGET', K_DATA, id) == payload then return false end
  local token = owner(redis.call('HGET', K_OWN, id))
  if not token then return false end
  local until_ = redis.call('ZSCORE', K_LEASES, token)
  return until_ ~= false and until_ ~= nil and tonumber(until_) > t
end

-- @@ lib shelve
-- An id's newest dead letter is the dead member named by the id. A letter a
-- newer one replaces as the newest moves to "<id>\0<n>" (n = 1, 2, ...), its
-- why starting with "\0<id>\0", and comes back under the id when the newer
-- one is requeued: no letter is ever overwritten.
local function shelve(id)
  local at = redis.call('ZSCORE', K_DEAD, id)
  if not at then return end
  local n = redis.call('HINCRBY', K_META, 'shelf:' .. id, 1)
  local member = id .. '\0' .. n
  redis.call('ZADD', K_DEAD, at, member)
  redis.call('ZREM', K_DEAD, id)
  redis.call('HSET', K_DDATA, member, redis.call('HGET', K_DDATA, id) or '')
  redis.call('HSET', K_DWHY, member, '\0' .. id .. '\0' .. (redis.call('HGET', K_DWHY, id) or ''))
  redis.call('HDEL', K_DDATA, id)
  redis.call('HDEL', K_DWHY, id)
end

local function unshelve(id)
  local key = 'shelf:' .. id
  local n = tonumber(redis.call('HGET', K_META, key) or '0')
  if n == 0 then return end
  if n == 1 then redis.call('HDEL', K_META, key) else redis.call('HSET', K_META, key, n - 1) end
  local member = id .. '\0' .. n
  local at = redis.call('ZSCORE', K_DEAD, member)
  if not at then return end
  redis.call('ZADD', K_DEAD, at, id)
  redis.call('ZREM', K_DEAD, member)
  redis.call('HSET', K_DDATA, id, redis.call('HGET', K_DDATA, member) or '')
  redis.call('HSET', K_DWHY, id, string.sub(redis.call('HGET', K_DWHY, member) or '', #id + 3))
  redis.call('HDEL', K_DDATA, member)
  redis.call('HDEL', K_DWHY, member)
end

-- @@ lib add
-- Add new tasks: ids, payloads and due times (strings) in three lists.
local function add(ids, datas, dues)
  local d, z = {}, {}
  for i = 1, #ids do
    d[2 * i - 1], d[2 * i] = ids[i], datas[i]
    z[2 * i - 1], z[2 * i] = dues[i], ids[i]
  end
  redis.call('HSET', K_DATA, unpack(d))
  redis.call('ZADD', K_WAIT, unpack(z))
end

-- @@ lib registered
-- The queue's registration, for the client: 1 when it is in the registry.
local function registered()
  return tonumber(redis.call('HGET', K_META, 'reg') or '0')
end

-- @@ lib drop_spent
-- Records of earlier calls (KEYS[13...]): their replies came, so no retry
-- of them can come any more.
local function drop_spent()
  if #KEYS > 12 then redis.call('DEL', unpack(KEYS, 13)) end
end

-- @@ lib replay
-- needs: drop_spent
-- A recorded call sent again: what it answered the first time.
local function replay()
  drop_spent()
  return redis.call('GET', K_REC)
end

-- @@ lib remember
-- Keep the answer of a call for a repeat; a call that changed nothing would
-- do the same again, so needs no record.
local function remember(out)
  if string.find(out, '1', 1, true) then redis.call('SET', K_REC, out, 'PX', ARGV[1]) end
  return out
end

-- @@ lib forget
-- Delete the fields of the ids from a hash that may not exist (most often
-- dlv: empty unless leases expired).
local function forget(key, ids)
  if #ids > 0 and redis.call('EXISTS', key) == 1 then redis.call('HDEL', key, unpack(ids)) end
end

-- @@ lib release_from
-- needs: batch_key
-- A batch's tasks are settled or handed back: count them off its lease and
-- drop the lease once it holds none. Returns false when the batch's lease
-- was reclaimed already (its tasks may sit in wait again).
local function release_from(token, n)
  if not redis.call('ZSCORE', K_LEASES, token) then return false end
  if redis.call('HINCRBY', K_HELD, token, -n) <= 0 then
    redis.call('ZREM', K_LEASES, token)
    redis.call('HDEL', K_HELD, token)
    redis.call('DEL', batch_key(token))
  end
  return true
end

-- @@ lib check
-- needs: owner
-- Which of the (id, token) pairs still hold their lease: a list of booleans,
-- how many each token holds, and the own entries.
local function check(ids, tokens)
  local ok, per_token = {}, {}
  if #ids == 0 then return ok, per_token, {} end
  local cur = redis.call('HMGET', K_OWN, unpack(ids))
  for i = 1, #ids do
    local token = tokens[i]
    ok[i] = owner(cur[i]) == token
    if ok[i] then per_token[token] = (per_token[token] or 0) + 1 end
  end
  return ok, per_token, cur
end

-- @@ lib settle_batches
-- needs: release_from
-- Count settled tasks off their batches. Those of a reclaimed batch are back
-- in wait: they are taken out of it (their holder finished them after all).
local function settle_batches(ids, tokens, ok, per_token)
  local gone = {}
  for token, n in pairs(per_token) do
    if not release_from(token, n) then gone[token] = true end
  end
  if next(gone) == nil then return end
  local out_of_wait = {}
  for i = 1, #ids do
    if ok[i] and gone[tokens[i]] then out_of_wait[#out_of_wait + 1] = ids[i] end
  end
  if #out_of_wait > 0 then redis.call('ZREM', K_WAIT, unpack(out_of_wait)) end
end

-- @@ lib rewait
-- needs: due_of
-- Put leased tasks back in wait at their due time; own holds the ids' entries.
local function rewait(ids, own)
  local z = {}
  for i, id in ipairs(ids) do
    z[2 * i - 1], z[2 * i] = due_of(own[i]), id
  end
  if #z > 0 then redis.call('ZADD', K_WAIT, unpack(z)) end
end

-- @@ lib reclaim
-- needs: fmt batch_key owner rewait
-- Batches whose lease expired go back to wait, whole: each task its lease
-- still holds keeps its place and counts one more delivery. The token stays
-- on each task, so the late holder may still settle it until another worker
-- reserves it.
local function reclaim(t)
  local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', fmt(t), 'LIMIT', 0, 100)
  for _, token in ipairs(expired) do
    local bk = batch_key(token)
    local ids = redis.call('LRANGE', bk, 0, -1)
    if #ids > 0 then
      local cur = redis.call('HMGET', K_OWN, unpack(ids))
      local back, own = {}, {}
      for i, id in ipairs(ids) do
        if owner(cur[i]) == token then
          back[#back + 1] = id
          own[#back] = cur[i]
        end
      end
      rewait(back, own)
      for _, id in ipairs(back) do
        -- (A count written by hand that is no number starts again: one bad
        -- entry must not fail every reserve of the queue.)
        if type(redis.pcall('HINCRBY', K_DLV, id, 1)) == 'table' then
          redis.call('HSET', K_DLV, id, 1)
        end
      end
    end
    redis.call('DEL', bk)
    redis.call('HDEL', K_HELD, token)
  end
  if #expired > 0 then redis.call('ZREM', K_LEASES, unpack(expired)) end
end

-- @@ lib handout
-- The tasks of a batch as a reply: ids, payloads, earlier deliveries, '',
-- then what was handed to the caller.
local function handout(ids, handed)
  if #ids == 0 then return {{}, {}, {}, '', handed} end
  local dlvs = {}
  if redis.call('EXISTS', K_DLV) == 1 then dlvs = redis.call('HMGET', K_DLV, unpack(ids)) end
  return {ids, redis.call('HMGET', K_DATA, unpack(ids)), dlvs, '', handed}
end

-- @@ enqueue
-- needs: now fmt head_due wake_for registered running
-- ARGV[1]: msgpack [id, payload, due ('' = now, else seconds as a string), ...],
-- each id once. Idempotent by id: a task id already in the queue is left
-- alone, so a retried call adds nothing. Returns {tasks added, registered},
-- or {-1, registered, id} and nothing added when that id runs now as another
-- task (see running).
local flat = cmsgpack.unpack(ARGV[1])
local t = now()
local t_due = fmt(t)
local ids = {}
for i = 1, #flat, 3 do ids[#ids + 1] = flat[i] end
local have = redis.call('HMGET', K_DATA, unpack(ids))
for k = 1, #ids do
  if have[k] and running(ids[k], flat[3 * k - 1], t) then return {-1, registered(), ids[k]} end
end
local d, z, soonest, n = {}, {}, nil, 0
for k = 1, #ids do
  if not have[k] then
    local i = 3 * k - 2
    local due, at = flat[i + 2], t
    if due == '' then due = t_due else at = tonumber(due) end
    d[2 * n + 1], d[2 * n + 2] = ids[k], flat[i + 1]
    z[2 * n + 1], z[2 * n + 2] = due, ids[k]
    n = n + 1
    if soonest == nil or at < soonest then soonest = at end
  end
end
if n > 0 then
  local head = nil
  if soonest > t then head = head_due() end
  redis.call('HSET', K_DATA, unpack(d))
  redis.call('ZADD', K_WAIT, unpack(z))
  wake_for(soonest, t, head)
end
return {n, registered()}

-- @@ enqueue_one
-- needs: head_due wake_for registered batch_key fmt inbox running
-- ARGV: id, payload, due ('' = now). enqueue for a single task, as .delay()
-- sends it: fewer calls and no msgpack, which halves the server's time. A
-- task due now goes straight to a waiting worker, leased to it in a batch of
-- its own: it starts without a reserve of its own. Returns {1 added, 0 there
-- already, or -1 refused (see running), registered}.
-- With ARGV[4] (a periodic schedule's name) and ARGV[5] (a tick), it is a
-- tick of that schedule: enqueued only if the schedule's last tick, kept in
-- "<tag>tick:<name>", is older, which it then becomes; the reply ends with the
-- last tick before ('' for none), and added is 0 when the tick was enqueued
-- by another worker already.
local id, due = ARGV[1], ARGV[3]
if ARGV[4] then
  local key = TAG .. 'tick:' .. ARGV[4]
  local last = redis.call('GET', key)
  if last and tonumber(last) >= tonumber(ARGV[5]) then return {0, registered(), last} end
  redis.call('SET', key, ARGV[5])
  local clock = redis.call('TIME')
  local t = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  if redis.call('HSETNX', K_DATA, id, ARGV[2]) == 1 then
    redis.call('ZADD', K_WAIT, string.format('%.6f', t), id)
    wake_for(t, t, nil)
  end
  return {1, registered(), last or ''}
end
local clock = redis.call('TIME')
local t = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local at = t
if due == '' then due = string.format('%.6f', t) else at = tonumber(due) end
if redis.call('HSETNX', K_DATA, id, ARGV[2]) == 0 then
  if running(id, ARGV[2], t) then return {-1, registered()} end
  return {0, registered()}
end
if at <= t then
  -- The waiter that registered last: the likeliest to be blocked on its
  -- inbox now (one that died waiting has the oldest entry).
  local ws = redis.call('ZREVRANGEBYSCORE', K_WAITERS, '+inf', string.format('%.6f', t), 'LIMIT', 0, 1)
  if #ws > 0 then
    local w = ws[1]
    redis.call('ZREM', K_WAITERS, w)
    local listener, lease = string.match(w, '^([^|]*)|(.*)$')
    local token = string.format('h%063d', redis.call('HINCRBY', K_META, 'hand', 1))
    redis.call('HSET', K_OWN, id, token .. due)
    redis.call('RPUSH', batch_key(token), id)
    redis.call('ZADD', K_LEASES, fmt(t + tonumber(lease)), token)
    redis.call('HSET', K_HELD, token, 1)
    local box = inbox(listener)
    redis.call('RPUSH', box, cmsgpack.pack({token, lease, id, ARGV[2]}))
    redis.call('PEXPIRE', box, INBOX_MS)
    return {1, registered()}
  end
end
local head = nil
if at > t then head = head_due() end
redis.call('ZADD', K_WAIT, due, id)
wake_for(at, t, head)
return {1, registered()}

-- @@ reserve
-- needs: now fmt owner next_due drop_spent reclaim handout collect
-- ARGV: limit, lease seconds, token (new for every call; 64 characters), the
-- caller's waiter entry ('' if it never waited), and, if the caller will wait
-- when this finds nothing, seconds to register it as a waiter for (else '').
-- Leases up to limit due tasks as one batch. Returns {ids, payloads, earlier
-- deliveries, next, handed}: next is '' when tasks were handed out, else the
-- seconds until something may be (see next_due); handed is what the
-- caller's inbox held (see collect). Registered or not, the caller is awake:
-- it no longer waits here unless this found nothing.
local limit, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local bk = K_REC
drop_spent()
local handed = {}
if ARGV[4] ~= '' then handed = collect(ARGV[4]) end
local earlier = redis.call('LRANGE', bk, 0, -1)
if #earlier > 0 then
  -- The same call again (its reply was lost): hand out the same batch.
  local cur = redis.call('HMGET', K_OWN, unpack(earlier))
  local ids = {}
  for i, id in ipairs(earlier) do
    if owner(cur[i]) == token then ids[#ids + 1] = id end
  end
  return handout(ids, handed)
end
local t = now()
-- Expired leases first, so their tasks keep their place in line.
reclaim(t)
local zs = redis.call('ZRANGEBYSCORE', K_WAIT, '-inf', fmt(t), 'WITHSCORES', 'LIMIT', 0, limit)
if #zs == 0 then
  local nd = next_due(t)
  if ARGV[5] ~= '' and #handed == 0 and nd ~= '0' then
    -- It waits next (see listen): registered in the same call as the look.
    redis.call('ZADD', K_WAITERS, fmt(t + tonumber(ARGV[5])), ARGV[4])
  end
  return {{}, {}, {}, nd, handed}
end
local ids, owners = {}, {}
for i = 1, #zs, 2 do
  ids[#ids + 1] = zs[i]
  owners[i], owners[i + 1] = zs[i], token .. zs[i + 1]
end
redis.call('ZREM', K_WAIT, unpack(ids))
redis.call('HSET', K_OWN, unpack(owners))
redis.call('RPUSH', bk, unpack(ids))
redis.call('ZADD', K_LEASES, fmt(t + lease), token)
redis.call('HSET', K_HELD, token, #ids)
return handout(ids, handed)

-- @@ settle
-- needs: now fmt head_due wake_for replay remember forget check settle_batches shelve
-- ARGV: record ttl, msgpack [acks, retries, buries] where acks is
-- [token, [id, ...], ...], retries [id, token, payload, due, ...] and buries
-- [id, token, reason, error, ...]. Returns one '1' or '0' per item (acks in
-- the order sent, then retries, then buries): '0' where the lease was lost.
local done = replay()
if done then return done end
local msg = cmsgpack.unpack(ARGV[2])
local acks, retries, buries = msg[1], msg[2], msg[3]
local ids, tokens = {}, {}
for g = 1, #acks, 2 do
  for _, id in ipairs(acks[g + 1]) do
    ids[#ids + 1] = id
    tokens[#ids] = acks[g]
  end
end
local n_acks = #ids
for i = 1, #retries, 4 do ids[#ids + 1] = retries[i]; tokens[#ids] = retries[i + 1] end
local n_retries = #ids - n_acks
for i = 1, #buries, 4 do ids[#ids + 1] = buries[i]; tokens[#ids] = buries[i + 1] end
local ok, per_token = check(ids, tokens)
local out = {}
for i = 1, #ids do out[i] = ok[i] and '1' or '0' end
out = table.concat(out)
if not string.find(out, '1', 1, true) then return out end
settle_batches(ids, tokens, ok, per_token)
local t = now()
-- Dead letters keep the payload they failed with.
local dead_ids, dead_z, dead_why = {}, {}, {}
for k = 1, #buries / 4 do
  local i = n_acks + n_retries + k
  if ok[i] then
    local j = 4 * k - 3
    local id = ids[i]
    dead_ids[#dead_ids + 1] = id
    dead_z[#dead_z + 1] = fmt(t)
    dead_z[#dead_z + 1] = id
    dead_why[#dead_why + 1] = id
    dead_why[#dead_why + 1] = buries[j + 2] .. '\n' .. buries[j + 3]
  end
end
if #dead_ids > 0 then
  for _, id in ipairs(dead_ids) do shelve(id) end
  local payloads = redis.call('HMGET', K_DATA, unpack(dead_ids))
  local dd = {}
  for i, id in ipairs(dead_ids) do
    dd[2 * i - 1], dd[2 * i] = id, payloads[i] or ''
  end
  redis.call('ZADD', K_DEAD, unpack(dead_z))
  redis.call('HSET', K_DDATA, unpack(dd))
  redis.call('HSET', K_DWHY, unpack(dead_why))
end
-- Acknowledged and buried tasks leave the queue; retried ones stay, with a
-- new payload and due time, their deliveries counted afresh.
local gone, r_ids, r_data, r_z, soonest = {}, {}, {}, {}, nil
for i = 1, #ids do
  if ok[i] then
    if i <= n_acks or i > n_acks + n_retries then gone[#gone + 1] = ids[i] else r_ids[#r_ids + 1] = ids[i] end
  end
end
if #gone > 0 then
  redis.call('HDEL', K_DATA, unpack(gone))
  redis.call('HDEL', K_OWN, unpack(gone))
  forget(K_DLV, gone)
end
if #r_ids > 0 then
  local k = 0
  for j = 1, #retries, 4 do
    k = k + 1
    if ok[n_acks + k] then
      local id, due = retries[j], tonumber(retries[j + 3])
      r_data[#r_data + 1] = id
      r_data[#r_data + 1] = retries[j + 2]
      r_z[#r_z + 1] = fmt(due)
      r_z[#r_z + 1] = id
      if soonest == nil or due < soonest then soonest = due end
    end
  end
  local head = nil
  if soonest > t then head = head_due() end
  redis.call('HSET', K_DATA, unpack(r_data))
  redis.call('ZADD', K_WAIT, unpack(r_z))
  redis.call('HDEL', K_OWN, unpack(r_ids))
  forget(K_DLV, r_ids)
  wake_for(soonest, t, head)
end
return remember(out)

-- @@ release
-- needs: now replay remember release_from check rewait wake_all
-- ARGV: record ttl, msgpack [id, token, ...]. Tasks that never started go
-- back in their place; their delivery is not counted. '1'/'0' per task.
local done = replay()
if done then return done end
local flat = cmsgpack.unpack(ARGV[2])
local ids, tokens = {}, {}
for i = 1, #flat, 2 do ids[#ids + 1] = flat[i]; tokens[#ids] = flat[i + 1] end
local ok, per_token, cur = check(ids, tokens)
local out, back, own = {}, {}, {}
for i = 1, #ids do
  out[i] = ok[i] and '1' or '0'
  if ok[i] then
    back[#back + 1] = ids[i]
    own[#back] = cur[i]
  end
end
out = table.concat(out)
if #back == 0 then return out end
for token, n in pairs(per_token) do release_from(token, n) end
rewait(back, own)
redis.call('HDEL', K_OWN, unpack(back))
if redis.call('EXISTS', K_WAITERS) == 1 then wake_all(now()) end
return remember(out)

-- @@ listen
-- needs: now fmt next_due collect
-- ARGV: the listener's waiter entry ("<listener>|<lease>"), seconds to stay
-- registered. An idle worker is about to wait: it looks (next, as reserve
-- does), and unless something is ready registers as a waiter, so a task
-- enqueued from now on is handed to it or wakes it. Returns {handed, next}:
-- what its inbox held (a task handed since it last looked: no wait then).
local t = now()
local handed = collect(ARGV[1])
local nd = next_due(t)
if #handed == 0 and nd ~= '0' then
  redis.call('ZADD', K_WAITERS, fmt(t + tonumber(ARGV[2])), ARGV[1])
end
return {handed, nd}

-- @@ unlisten
-- needs: collect
-- ARGV: the listener's waiter entry. It stops waiting (the worker stops):
-- returns what its inbox held, for the worker to hand back.
return collect(ARGV[1])

-- @@ extend
-- needs: now fmt batch_key check
-- ARGV: msgpack [token, lease seconds, [id, ...], ...]: each batch's lease
-- renewed for that many seconds from now. Returns '1'/'0' per id, in order.
local groups = cmsgpack.unpack(ARGV[1])
local t = now()
local out = {}
for g = 1, #groups, 3 do
  local token, lease, ids = groups[g], tonumber(groups[g + 1]), groups[g + 2]
  local tokens = {}
  for i = 1, #ids do tokens[i] = token end
  local ok = check(ids, tokens)
  local still = {}
  for i = 1, #ids do
    out[#out + 1] = ok[i] and '1' or '0'
    if ok[i] then still[#still + 1] = ids[i] end
  end
  if #still > 0 then
    if not redis.call('ZSCORE', K_LEASES, token) then
      -- Its lease expired and was reclaimed, but nobody reserved its tasks
      -- since: the holder is alive, so it takes them out of wait again.
      redis.call('ZREM', K_WAIT, unpack(still))
      local bk = batch_key(token)
      redis.call('DEL', bk)
      redis.call('RPUSH', bk, unpack(still))
      redis.call('HSET', K_HELD, token, #still)
    end
    redis.call('ZADD', K_LEASES, fmt(t + lease), token)
  end
end
return table.concat(out)

-- @@ take
-- needs: now owner replay release_from
-- ARGV: ttl, id. Removes a task nobody holds a live lease on; returns its data.
local done = replay()
if done then return done end  -- the same call again (its reply was lost)
local id = ARGV[2]
local data = redis.call('HGET', K_DATA, id)
if not data then return false end
local token = owner(redis.call('HGET', K_OWN, id))
if token then
  local until_ = redis.call('ZSCORE', K_LEASES, token)
  if until_ and tonumber(until_) > now() then return false end
  if until_ then release_from(token, 1) end
end
redis.call('ZREM', K_WAIT, id)
redis.call('HDEL', K_DATA, id)
redis.call('HDEL', K_OWN, id)
redis.call('HDEL', K_DLV, id)
redis.call('SET', K_REC, data, 'PX', ARGV[1])
return data

-- @@ dead_add
-- needs: now fmt registered shelve
-- ARGV: id, data, reason, error. Returns {1, registered}.
local id = ARGV[1]
shelve(id)
redis.call('ZADD', K_DEAD, fmt(now()), id)
redis.call('HSET', K_DDATA, id, ARGV[2])
redis.call('HSET', K_DWHY, id, ARGV[3] .. '\n' .. ARGV[4])
return {1, registered()}

-- @@ dead_requeue
-- needs: now fmt add wake_all shelve
-- ARGV: id, '1' to replace the payload with ARGV[3] (else keep it).
local id = ARGV[1]
if not redis.call('ZSCORE', K_DEAD, id) then return 0 end
-- The same id is queued again already: keep the dead letter.
if redis.call('HEXISTS', K_DATA, id) == 1 then return 0 end
local data = redis.call('HGET', K_DDATA, id)
if ARGV[2] == '1' then data = ARGV[3] end
redis.call('ZREM', K_DEAD, id)
redis.call('HDEL', K_DDATA, id)
redis.call('HDEL', K_DWHY, id)
unshelve(id)  -- an earlier letter of the id is its newest now
local t = now()
add({id}, {data}, {fmt(t)})
if redis.call('EXISTS', K_WAITERS) == 1 then wake_all(t) end
return 1

-- @@ dead_read
-- ARGV: 'list', limit | 'get', id. Returns id, data, why, failed_at repeated.
local ids = {}
if ARGV[1] == 'get' then
  if redis.call('ZSCORE', K_DEAD, ARGV[2]) then ids = {ARGV[2]} end
else
  ids = redis.call('ZRANGE', K_DEAD, 0, tonumber(ARGV[2]) - 1)
end
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', K_DDATA, id)
  out[#out + 1] = redis.call('HGET', K_DWHY, id)
  out[#out + 1] = redis.call('ZSCORE', K_DEAD, id)
end
return out

-- @@ dead_purge
-- ARGV: nothing (every letter) or an id (its newest letter and those shelved).
local id = ARGV[1]
if id then
  local shelf = 'shelf:' .. id
  local members = {id}
  for i = 1, tonumber(redis.call('HGET', K_META, shelf) or '0') do
    members[#members + 1] = id .. '\0' .. i
  end
  local gone = redis.call('ZREM', K_DEAD, unpack(members))
  redis.call('HDEL', K_DDATA, unpack(members))
  redis.call('HDEL', K_DWHY, unpack(members))
  redis.call('HDEL', K_META, shelf)
  return gone
end
local n = redis.call('ZCARD', K_DEAD)
redis.call('DEL', K_DEAD, K_DDATA, K_DWHY)
for _, field in ipairs(redis.call('HKEYS', K_META)) do
  if string.sub(field, 1, 6) == 'shelf:' then redis.call('HDEL', K_META, field) end
end
return n

-- @@ stats
-- needs: now fmt
-- Returns ready, delayed, running, dead and the oldest ready due time; the
-- tasks of an expired lease count as ready.
local t = now()
local expired, running = 0, 0
local leases = redis.call('ZRANGE', K_LEASES, 0, -1, 'WITHSCORES')
for i = 1, #leases, 2 do
  local n = tonumber(redis.call('HGET', K_HELD, leases[i]) or '0')
  if tonumber(leases[i + 1]) <= t then expired = expired + n else running = running + n end
end
-- The oldest ready task's due time (false when none is due: a nil reply).
local first = redis.call('ZRANGE', K_WAIT, 0, 0, 'WITHSCORES')
local oldest = false
if #first > 0 and tonumber(first[2]) <= t then oldest = first[2] end
return {
  redis.call('ZCOUNT', K_WAIT, '-inf', fmt(t)) + expired,
  redis.call('ZCOUNT', K_WAIT, '(' .. fmt(t), '+inf'),
  running,
  redis.call('ZCARD', K_DEAD),
  oldest,
}

-- @@ next_due
-- needs: now next_due
return next_due(now())

-- @@ drop
-- needs: batch_key
for _, token in ipairs(redis.call('ZRANGE', K_LEASES, 0, -1)) do
  redis.call('DEL', batch_key(token))
end
redis.call('DEL', K_DATA, K_WAIT, K_OWN, K_DLV, K_LEASES, K_HELD)
return 1
