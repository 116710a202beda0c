-- Lua scripts of the Redis backend (gatorapp/backends/redis.py).
--
-- Each "-- @@ name" section below is one script; the "common" section is
-- prepended to every other one. A script runs atomically, so each state
-- change of a task is all-or-nothing even if a client dies mid-call.
--
-- Every script gets the same KEYS, all of one queue and all carrying the
-- queue's hash tag {prefix:queue}, so a script touches a single slot:
--   1 data   hash  task id -> payload (a task exists while it has data)
--   2 wait   zset  "<seq hex16><task id>" -> due time; waiting tasks, ready
--                  once due; equal due times keep enqueue order by member
--   3 lease  zset  task id -> lease expiry, for reserved tasks
--   4 tok    hash  task id -> token of the current (or last, expired) lease
--   5 dlv    hash  task id -> deliveries since enqueue or retry
--   6 pos    hash  task id -> its member in wait (the task's place)
--   7 due    hash  task id -> due time
--   8 ctr    string enqueue counter, source of seq
--   9 dead   zset  task id -> failed_at
--  10 ddata  hash  task id -> payload of a dead letter
--  11 dwhy   hash  task id -> reason .. "\n" .. error
--  12 wake   a pub/sub channel name (not a key): idle workers listen on it
--  13 rec    the record of this call (reserve, take, ack, retry, release,
--            bury): what it did, kept for redis-py's retry window, so the
--            same call sent again after a lost reply returns the same
--  14...     records of earlier calls whose replies have arrived: deleted
-- Calls with a record get the record's time to live (ms) as ARGV[1].
-- Times are epoch seconds from Redis TIME, so worker clocks do not matter.

-- @@ common
local K_DATA, K_WAIT, K_LEASE, K_TOK, K_DLV, K_POS, K_DUE, K_CTR =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_DEAD, K_DDATA, K_DWHY, K_WAKE, K_REC = KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function fmt(t)
  return string.format('%.6f', t)
end

-- Wake idle workers when a task is ready now or becomes the earliest one due,
-- so they re-compute how long to sleep.
local function wake_if(due, t, head)
  if due <= t or head == nil or due < head then
    redis.call('PUBLISH', K_WAKE, '1')
    return true
  end
  return false
end

local function head_due()
  local h = redis.call('ZRANGE', K_WAIT, 0, 0, 'WITHSCORES')
  if h[2] then return tonumber(h[2]) end
  return nil
end

local function add(id, data, due)
  local m = string.format('%016x', redis.call('INCR', K_CTR)) .. id
  redis.call('HSET', K_DATA, id, data)
  redis.call('HSET', K_POS, id, m)
  redis.call('HSET', K_DUE, id, fmt(due))
  redis.call('ZADD', K_WAIT, fmt(due), m)
end

-- Put a leased task back in its place in the waiting set.
local function unlease(id)
  redis.call('ZREM', K_LEASE, id)
  redis.call('ZADD', K_WAIT, redis.call('HGET', K_DUE, id), redis.call('HGET', K_POS, id))
end

local function forget(id)
  local m = redis.call('HGET', K_POS, id)
  if m then redis.call('ZREM', K_WAIT, m) end
  redis.call('ZREM', K_LEASE, id)
  redis.call('HDEL', K_DATA, id)
  redis.call('HDEL', K_TOK, id)
  redis.call('HDEL', K_DLV, id)
  redis.call('HDEL', K_POS, id)
  redis.call('HDEL', K_DUE, id)
end

-- Records of earlier calls (KEYS[14...]): their replies came, so no retry
-- of them can come any more.
local function drop_spent()
  if #KEYS > 13 then redis.call('DEL', unpack(KEYS, 14)) end
end

-- A token-checked call (ack, retry, release, bury) sent again: its stored
-- outcome, one 0 or 1 per task. Without it the repeat would find its tokens
-- gone and report every lease as taken over.
local function replay()
  drop_spent()
  local done = redis.call('GET', K_REC)
  if not done then return nil end
  local out = {}
  for i = 1, #done do out[i] = tonumber(string.sub(done, i, i)) end
  return out
end

-- Keep the outcome of a token-checked call for a repeat; a call that changed
-- nothing would do the same again, so needs no record.
local function remember(out)
  local s = table.concat(out)
  if string.find(s, '1', 1, true) then redis.call('SET', K_REC, s, 'PX', ARGV[1]) end
  return out
end

-- A lease is held while the task still carries its token: after expiry the
-- holder may still finish until another worker re-reserves the task.
local function held(id, token)
  return redis.call('HGET', K_TOK, id) == token
end

-- The token-checked batch calls (ack, retry, release, bury): ARGV is the
-- record ttl, then items of `stride` values starting with id and token.
-- Runs act(i) for each item whose lease is still held; 1 or 0 per item,
-- remembered so that the same call sent again returns the same answer.
local function each_held(stride, act)
  local out = replay()
  if out then return out end
  out = {}
  for i = 2, #ARGV, stride do
    if held(ARGV[i], ARGV[i + 1]) then
      act(i)
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  return remember(out)
end

-- @@ enqueue
-- ARGV: id, data, due ('' = now) repeated. Idempotent by id: a task id
-- already in the queue is left alone, so a retried call adds nothing.
local t = now()
local head = head_due()
local woke = false
local added = 0
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('HEXISTS', K_DATA, id) == 0 then
    local due = t
    if ARGV[i + 2] ~= '' then due = tonumber(ARGV[i + 2]) end
    add(id, ARGV[i + 1], due)
    added = added + 1
    if not woke then woke = wake_if(due, t, head) end
    if head == nil or due < head then head = due end
  end
end
return added

-- @@ reserve
-- ARGV: ttl, limit, lease seconds, token. Returns id, data, deliveries repeated.
local limit, lease, token = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {}
drop_spent()
local earlier = redis.call('LRANGE', K_REC, 0, -1)
if #earlier > 0 then
  -- The same call again (its reply was lost): hand out the same batch.
  for _, id in ipairs(earlier) do
    if held(id, token) then
      out[#out + 1] = id
      out[#out + 1] = redis.call('HGET', K_DATA, id)
      out[#out + 1] = tonumber(redis.call('HGET', K_DLV, id))
    end
  end
  return out
end
local t = now()
-- Reclaim expired leases first, so their tasks keep their place in line.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_LEASE, '-inf', fmt(t), 'LIMIT', 0, 1000)) do
  unlease(id)
end
local until_ = fmt(t + lease)
for _, m in ipairs(redis.call('ZRANGEBYSCORE', K_WAIT, '-inf', fmt(t), 'LIMIT', 0, limit)) do
  local id = string.sub(m, 17)
  redis.call('ZREM', K_WAIT, m)
  redis.call('ZADD', K_LEASE, until_, id)
  redis.call('HSET', K_TOK, id, token)
  redis.call('RPUSH', K_REC, id)
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', K_DATA, id)
  out[#out + 1] = redis.call('HINCRBY', K_DLV, id, 1)
end
if #out > 0 then redis.call('PEXPIRE', K_REC, ARGV[1]) end
return out

-- @@ ack
-- ARGV: ttl, then id, token repeated. Returns 1 or 0 per task.
return each_held(2, function(i) forget(ARGV[i]) end)

-- @@ retry
-- ARGV: ttl, then id, token, data, due repeated. New payload and due time;
-- the task keeps its place among equal due times and its deliveries restart.
local t = now()
local head = head_due()
local woke = false
return each_held(4, function(i)
  local id = ARGV[i]
  local due = tonumber(ARGV[i + 3])
  redis.call('HSET', K_DATA, id, ARGV[i + 2])
  redis.call('HSET', K_DUE, id, fmt(due))
  redis.call('HSET', K_DLV, id, 0)
  redis.call('HDEL', K_TOK, id)
  unlease(id)
  if not woke then woke = wake_if(due, t, head) end
  if head == nil or due < head then head = due end
end)

-- @@ release
-- ARGV: ttl, then id, token repeated. Back in place; the delivery is not counted.
local woke = false
return each_held(2, function(i)
  local id = ARGV[i]
  local d = tonumber(redis.call('HGET', K_DLV, id) or '0')
  redis.call('HSET', K_DLV, id, math.max(0, d - 1))
  redis.call('HDEL', K_TOK, id)
  unlease(id)
  if not woke then
    redis.call('PUBLISH', K_WAKE, '1')
    woke = true
  end
end)

-- @@ extend
-- ARGV: id, token, lease seconds repeated.
local t = now()
local out = {}
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  if held(id, ARGV[i + 1]) then
    -- Its lease may have expired and been reclaimed into the waiting set:
    -- take it out again, the holder is alive.
    local m = redis.call('HGET', K_POS, id)
    redis.call('ZREM', K_WAIT, m)
    redis.call('ZADD', K_LEASE, fmt(t + tonumber(ARGV[i + 2])), id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out

-- @@ bury
-- ARGV: ttl, then id, token, reason, error repeated.
local t = now()
return each_held(4, function(i)
  local id = ARGV[i]
  local data = redis.call('HGET', K_DATA, id)
  forget(id)
  redis.call('ZADD', K_DEAD, fmt(t), id)
  redis.call('HSET', K_DDATA, id, data)
  redis.call('HSET', K_DWHY, id, ARGV[i + 2] .. '\n' .. ARGV[i + 3])
end)

-- @@ take
-- ARGV: ttl, id. Removes a task nobody holds a live lease on; returns its data.
drop_spent()
local done = redis.call('GET', K_REC)
if done then return done end  -- the same call again (its reply was lost)
local id = ARGV[2]
local data = redis.call('HGET', K_DATA, id)
if not data then return false end
local until_ = redis.call('ZSCORE', K_LEASE, id)
if until_ and tonumber(until_) > now() then return false end
forget(id)
redis.call('SET', K_REC, data, 'PX', ARGV[1])
return data

-- @@ dead_add
-- ARGV: id, data, reason, error.
local id = ARGV[1]
redis.call('ZADD', K_DEAD, fmt(now()), id)
redis.call('HSET', K_DDATA, id, ARGV[2])
redis.call('HSET', K_DWHY, id, ARGV[3] .. '\n' .. ARGV[4])
return 1

-- @@ dead_requeue
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
add(id, data, now())
redis.call('PUBLISH', K_WAKE, '1')
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
local n = redis.call('ZCARD', K_DEAD)
redis.call('DEL', K_DEAD, K_DDATA, K_DWHY)
return n

-- @@ stats
-- Returns ready, delayed, running, dead; an expired lease counts as ready.
local t = fmt(now())
local expired = redis.call('ZCOUNT', K_LEASE, '-inf', t)
return {
  redis.call('ZCOUNT', K_WAIT, '-inf', t) + expired,
  redis.call('ZCOUNT', K_WAIT, '(' .. t, '+inf'),
  redis.call('ZCARD', K_LEASE) - expired,
  redis.call('ZCARD', K_DEAD),
}

-- @@ next_due
-- Seconds until this queue may have something to reserve (a due task or an
-- expired lease), as a string; '0' when ready now, '' when nothing waits.
local t = now()
local soonest = head_due()
local l = redis.call('ZRANGE', K_LEASE, 0, 0, 'WITHSCORES')
if l[2] and (soonest == nil or tonumber(l[2]) < soonest) then soonest = tonumber(l[2]) end
if soonest == nil then return '' end
return fmt(math.max(0, soonest - t))

-- @@ drop
redis.call('DEL', K_DATA, K_WAIT, K_LEASE, K_TOK, K_DLV, K_POS, K_DUE, K_CTR)
return 1
