"""Lua scripts of the Redis state store. Redis runs a script atomically: nothing else
happens between reading a pending stage and leasing it, or between checking a fencing
token and recording a completion. Lease times come from the server's clock (``TIME``).

Every script takes the key prefix as ARGV[1]; all keys of one pipeline instance share one
hash tag (``contimg:{instance}:``), so they live in one slot. Values are JSON (cjson).
"""

from __future__ import annotations

_COMMON = """
local P = ARGV[1]
local function server_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
local function emit(kind, data, now)
  redis.call('XADD', P .. 'events', '*', 'kind', kind, 'data', cjson.encode(data),
             'at', fmt(now))
end
-- A pending stage's queue entry: ``block NUL seq NUL stage`` (seq zero-padded), all at
-- score 0, so each queue is in (block id, queue order) order and its first entry is the
-- next to claim (the oldest block's first stage): O(log n), whatever the backlog.
local function entry(block, seq, stage)
  return block .. '\\0' .. string.format('%015d', seq) .. '\\0' .. stage
end
local function queue(task, stage)
  local seq = redis.call('INCR', P .. 'queue')
  local block = string.match(task, '^(.*)|[^|]*$')
  local member = entry(block, seq, stage)
  redis.call('ZADD', P .. 'pending', 0, member)
  redis.call('ZADD', P .. 'pending:' .. stage, 0, member)
  return seq
end
-- After a failure or an expired lease: back to the queue if transient and attempts remain.
-- ``token``: the failing holder's (a repeated FAIL with it is answered, not refused), or ''.
local function requeue_or_fail(task, failure_json, transient, max_attempts, now, token)
  local key = P .. 'stage:' .. task
  local f = redis.call('HMGET', key, 'block_id', 'stage', 'attempts')
  local attempts = tonumber(f[3])
  local status = 'failed'
  if transient and attempts < max_attempts then status = 'pending' end
  redis.call('ZREM', P .. 'leases', task)
  redis.call('HSET', key, 'status', status, 'expires_at', '', 'error', failure_json,
             'updated_at', fmt(now), 'failed_token', token)
  if status == 'pending' then queue(task, f[2]) end
  redis.call('RPUSH', P .. 'failures', failure_json)
  local kind = 'stage_retry'
  if status == 'failed' then kind = 'stage_failed' end
  local failure = cjson.decode(failure_json)
  emit(kind, {block_id = f[1], stage = f[2], error = failure['error'], attempts = attempts},
       now)
  return status
end
-- The stage's status and token if ARGV token is not the current running one, else nil.
local function stale(key, token)
  local h = redis.call('HMGET', key, 'status', 'token')
  if h[1] == 'running' and h[2] == token then return nil end
  return {'stale', h[1] or 'unknown', h[2] or ''}
end
"""

_ADD_FILE = """
-- A file in its block (creating the block, open); the index 'file_block' keeps each path in
-- one block. 0 if the path is registered already.
local function add_file(block, path, file_json, now)
  if redis.call('HSETNX', P .. 'file_block', path, block) == 0 then return 0 end
  if redis.call('HSETNX', P .. 'files:' .. block, path, file_json) == 0 then return 0 end
  local key = P .. 'block:' .. block
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'block_id', block, 'status', 'open', 'n_files', 1,
               'first_seen', fmt(now), 'sealed_at', '')
    redis.call('SADD', P .. 'blocks', block)
  else
    redis.call('HINCRBY', key, 'n_files', 1)
  end
  return 1
end
"""

REGISTER_FILE = _COMMON + _ADD_FILE + """
-- ARGV: P, block_id, path, file_json, now
return add_file(ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
"""

REGISTER_FILE_NEAR = _COMMON + _ADD_FILE + """
-- ARGV: P, path, subband ('' for none), now, block_id candidates nearest first...
local path, now = ARGV[2], tonumber(ARGV[4])
local owner = redis.call('HGET', P .. 'file_block', path)
if owner then return {owner, 0} end
local block = ARGV[5]
for i = 5, #ARGV do
  if redis.call('EXISTS', P .. 'block:' .. ARGV[i]) == 1 then
    block = ARGV[i]
    break
  end
end
local subband = cjson.null
if ARGV[3] ~= '' then subband = tonumber(ARGV[3]) end
local record = cjson.encode({path = path, block_id = block, subband = subband,
                             registered_at = now})
return {block, add_file(block, path, record, now)}
"""

RENAME_BLOCK = _COMMON + """
-- ARGV: P, block_id, new_id
local old, new = ARGV[2], ARGV[3]
local key, new_key = P .. 'block:' .. old, P .. 'block:' .. new
local status = redis.call('HGET', key, 'status')
if not status then return 'missing' end
if status ~= 'open' or redis.call('SCARD', P .. 'block_stages:' .. old) > 0
   or redis.call('EXISTS', new_key) == 1 then return 'refused' end
redis.call('RENAME', key, new_key)
redis.call('HSET', new_key, 'block_id', new)
local files = redis.call('HGETALL', P .. 'files:' .. old)
for i = 1, #files, 2 do
  local record = cjson.decode(files[i + 1])
  record['block_id'] = new
  redis.call('HSET', P .. 'files:' .. new, files[i], cjson.encode(record))
  redis.call('HSET', P .. 'file_block', files[i], new)
end
redis.call('DEL', P .. 'files:' .. old)
redis.call('SREM', P .. 'blocks', old)
redis.call('SADD', P .. 'blocks', new)
return 'ok'
"""

SEAL_BLOCK = _COMMON + """
-- ARGV: P, block_id, expected_files, deadline_s, now
local key = P .. 'block:' .. ARGV[2]
local h = redis.call('HMGET', key, 'status', 'n_files', 'first_seen')
if not h[1] then return false end
if h[1] ~= 'open' then return h[1] end
local now = tonumber(ARGV[5])
local status
if tonumber(h[2]) >= tonumber(ARGV[3]) then status = 'complete'
elseif now - tonumber(h[3]) >= tonumber(ARGV[4]) then status = 'partial'
else return 'open' end
redis.call('HSET', key, 'status', status, 'sealed_at', fmt(now))
emit('block_sealed', {block_id = ARGV[2], status = status, n_files = tonumber(h[2])}, now)
return status
"""

ENQUEUE = _COMMON + """
-- ARGV: P, block_id, stage, retry_failed (0/1), now, redo (0/1)
local task = ARGV[2] .. '|' .. ARGV[3]
local key = P .. 'stage:' .. task
local status = redis.call('HGET', key, 'status')
if status and not ((ARGV[4] == '1' and status == 'failed')
                   or (ARGV[6] == '1' and (status == 'done' or status == 'failed'))) then
  return 0
end
if not status then
  redis.call('ZADD', P .. 'stages', redis.call('INCR', P .. 'stage_ids'), task)
  redis.call('SADD', P .. 'block_stages:' .. ARGV[2], task)
end
redis.call('HSET', key, 'block_id', ARGV[2], 'stage', ARGV[3], 'status', 'pending',
           'attempts', 0, 'token', '', 'worker', '', 'expires_at', '', 'result', '',
           'error', '', 'updated_at', fmt(tonumber(ARGV[5])), 'failed_token', '')
queue(task, ARGV[3])
return 1
"""

CLAIM = _COMMON + """
-- ARGV: P, worker, lease_s, stage names... (none: any stage)
local queues = {}
if #ARGV == 3 then queues[1] = P .. 'pending'
else for i = 4, #ARGV do queues[#queues + 1] = P .. 'pending:' .. ARGV[i] end end
-- The oldest block's (the least block id) first, in queue order within a block: a stage
-- requeued after a failure or an expired lease keeps its block's place. Each queue's
-- first entry is its next (see ``entry``); the least of those wins.
local first
for _, q in ipairs(queues) do
  local r = redis.call('ZRANGE', q, 0, 0)
  if r[1] and (first == nil or r[1] < first) then first = r[1] end
end
if not first then return false end
local block, stage = string.match(first, '^(.*)%z%d+%z(.*)$')
local best = block .. '|' .. stage
local key = P .. 'stage:' .. best
local f = redis.call('HMGET', key, 'block_id', 'stage')
redis.call('ZREM', P .. 'pending', first)
redis.call('ZREM', P .. 'pending:' .. stage, first)
local now = server_now()
local token = redis.call('INCR', P .. 'fence')
local expires = now + tonumber(ARGV[3])
local attempts = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'status', 'running', 'token', token, 'worker', ARGV[2],
           'expires_at', fmt(expires), 'updated_at', fmt(now), 'failed_token', '')
redis.call('ZADD', P .. 'leases', expires, best)
return {f[1], f[2], tostring(token), fmt(expires), tostring(attempts)}
"""

HEARTBEAT = _COMMON + """
-- ARGV: P, task, token, lease_s
local key = P .. 'stage:' .. ARGV[2]
local refused = stale(key, ARGV[3])
if refused then return refused end
local now = server_now()
local expires = now + tonumber(ARGV[4])
redis.call('HSET', key, 'expires_at', fmt(expires), 'updated_at', fmt(now))
redis.call('ZADD', P .. 'leases', expires, ARGV[2])
return {'ok', fmt(expires)}
"""

COMPLETE = _COMMON + """
-- ARGV: P, task, token, result_json, now, seconds, product_json...
local key = P .. 'stage:' .. ARGV[2]
local h = redis.call('HMGET', key, 'status', 'token', 'block_id', 'stage')
if h[1] == 'done' and h[2] == ARGV[3] then return {'ok'} end  -- a repeat after a lost reply
local refused = stale(key, ARGV[3])
if refused then return refused end
local now = tonumber(ARGV[5])
redis.call('HSET', key, 'status', 'done', 'result', ARGV[4], 'expires_at', '',
           'updated_at', fmt(now))
redis.call('ZREM', P .. 'leases', ARGV[2])
for i = 7, #ARGV do redis.call('RPUSH', P .. 'products:' .. h[3], ARGV[i]) end
if #ARGV >= 7 then redis.call('SADD', P .. 'product_blocks', h[3]) end
emit('stage_done', {block_id = h[3], stage = h[4], token = tonumber(ARGV[3]),
                    seconds = tonumber(ARGV[6])}, now)
return {'ok'}
"""

FAIL = _COMMON + """
-- ARGV: P, task, token, failure_json, transient (0/1), max_attempts, now
local key = P .. 'stage:' .. ARGV[2]
local h = redis.call('HMGET', key, 'status', 'failed_token')
if h[2] == ARGV[3] then return {'ok', h[1]} end  -- a repeat after a lost reply
local refused = stale(key, ARGV[3])
if refused then return refused end
return {'ok', requeue_or_fail(ARGV[2], ARGV[4], ARGV[5] == '1', tonumber(ARGV[6]),
                              tonumber(ARGV[7]), ARGV[3])}
"""

REAP = _COMMON + """
-- ARGV: P, now ('' = the server's clock), max_attempts
local now = server_now()
if ARGV[2] ~= '' then now = tonumber(ARGV[2]) end
local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. fmt(now))
local out = {}
for _, task in ipairs(expired) do
  local key = P .. 'stage:' .. task
  local h = redis.call('HMGET', key, 'block_id', 'stage', 'worker', 'token', 'expires_at',
                       'attempts')
  local failure = cjson.encode({block_id = h[1], stage = h[2], worker = h[3],
    error = 'LeaseExpired', transient = true, input = cjson.null,
    traceback_digest = cjson.null, at = now,
    message = 'lease of ' .. h[3] .. ' (token ' .. h[4] .. ') expired without a heartbeat'})
  requeue_or_fail(task, failure, true, tonumber(ARGV[3]), now, '')
  for _, v in ipairs(h) do out[#out + 1] = v end
end
return out
"""

RECORD_METRICS = _COMMON + """
-- ARGV: P, samples_json ([[name, value, at, block_id or null], ...])
local samples = cjson.decode(ARGV[2])
local function fold(key, field, v, at)
  local old = redis.call('HGET', key, field)
  local a
  if old then
    a = cjson.decode(old)
    a['sum'] = a['sum'] + v
    a['count'] = a['count'] + 1
    if v < a['min'] then a['min'] = v end
    if v > a['max'] then a['max'] = v end
    if at > a['last_at'] then a['last_at'] = at end
  else
    a = {sum = v, count = 1, min = v, max = v, last_at = at}
  end
  redis.call('HSET', key, field, cjson.encode(a))
end
for _, s in ipairs(samples) do
  local name, v, at, block = s[1], s[2], s[3], s[4]
  local seq = redis.call('INCR', P .. 'm:seq')
  redis.call('ZADD', P .. 'm:raw:' .. name, at,
             cjson.encode({v = v, b = block, n = seq}))
  fold(P .. 'm:minute:' .. name, tostring(math.floor(at / 60) * 60), v, at)
  if block ~= cjson.null then fold(P .. 'm:block:' .. name, block, v, at) end
  redis.call('SADD', P .. 'm:names', name)
end
return #samples
"""

INIT_META = _COMMON + """
-- ARGV: P, application, schema, instance. The meta record (created in an empty keyspace),
-- or 'foreign' if keys under the prefix exist without one. Atomic: processes starting
-- together on an empty server all see the one meta record.
local meta = redis.call('HGETALL', P .. 'meta')
if #meta > 0 then return meta end
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', P .. '*', 'COUNT', 1000)
  if #page[2] > 0 then return 'foreign' end
  cursor = page[1]
until cursor == '0'
redis.call('HSET', P .. 'meta', 'application', ARGV[2], 'schema', ARGV[3],
           'instance', ARGV[4])
return redis.call('HGETALL', P .. 'meta')
"""

MIGRATE_2 = _COMMON + """
-- ARGV: P. Schema 1 -> 2: the pending queues' entries from ``task`` at score ``seq`` to
-- ``entry(block, seq, stage)`` at score 0 (claims read the first entry instead of every
-- one). Atomic; a store already at schema 2 is left alone.
if redis.call('HGET', P .. 'meta', 'schema') ~= '1' then return 0 end
local r = redis.call('ZRANGE', P .. 'pending', 0, -1, 'WITHSCORES')
for i = 1, #r, 2 do
  local task, seq = r[i], tonumber(r[i + 1])
  local block, stage = string.match(task, '^(.*)|([^|]*)$')
  redis.call('ZREM', P .. 'pending', task)
  redis.call('ZREM', P .. 'pending:' .. stage, task)
  local member = entry(block, seq, stage)
  redis.call('ZADD', P .. 'pending', 0, member)
  redis.call('ZADD', P .. 'pending:' .. stage, 0, member)
end
redis.call('HSET', P .. 'meta', 'schema', 2)
return #r / 2
"""

STAGE_TALLY = _COMMON + """
-- ARGV: P. Read only. The stages counted by (stage, status), in the order of their first
-- appearance in the stages index, and the running ones' lease fields: no result or error
-- is read, let alone decoded (status() is asked every second by the dashboard).
local counts, order, running = {}, {}, {}
for _, task in ipairs(redis.call('ZRANGE', P .. 'stages', 0, -1)) do
  local key = P .. 'stage:' .. task
  local h = redis.call('HMGET', key, 'stage', 'status')
  if h[1] then
    local k = h[1] .. '\\0' .. h[2]
    if not counts[k] then counts[k] = 0; order[#order + 1] = k end
    counts[k] = counts[k] + 1
    if h[2] == 'running' then
      local r = redis.call('HMGET', key, 'block_id', 'stage', 'worker', 'token', 'attempts',
                           'expires_at', 'updated_at')
      for i = 1, 7 do r[i] = r[i] or '' end
      running[#running + 1] = r
    end
  end
end
local tally = {}
for _, k in ipairs(order) do tally[#tally + 1] = k; tally[#tally + 1] = counts[k] end
return {tally, running}
"""
