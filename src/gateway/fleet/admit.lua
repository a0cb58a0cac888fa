-- One request's admission, all or nothing: the token's concurrency slot, every rate
-- window, and the monthly quota (used so far plus what requests in flight reserved).
-- Times are Redis's own, so replicas' clocks never disagree.
-- KEYS: n windows, then the quota's used count, its seeded marker, the token's slots,
--       the quota's reservations (members "request|estimate", scored by lease expiry).
-- ARGV: n, estimate, the least it may be cut to when the quota has less left (-1: not
--       cut), quota (-1: none), max at once (-1: none), request, lease ms, then each
--       window's rpm and tpm (0: no limit).
-- Returns {0, used, estimate} admitted (used: the quota's settled use; estimate: as
-- admitted); {1} at max at once; {2, i, requests, tokens, reset ms} window i is full;
-- {3, left} over quota; {4} the quota must be seeded from the store.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local n = tonumber(ARGV[1])
local estimate = tonumber(ARGV[2])
local at_least = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local max_at_once = tonumber(ARGV[5])
local request = ARGV[6]
local lease = tonumber(ARGV[7])
local used_key, seeded, slots, held = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3], KEYS[n + 4]

if max_at_once >= 0 then
  redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
  if redis.call('ZCARD', slots) >= max_at_once then
    return {1}
  end
end

-- The quota first, as it may cut the estimate down.
local used = 0
if quota >= 0 then
  if redis.call('EXISTS', seeded) == 0 then
    return {4}
  end
  redis.call('ZREMRANGEBYSCORE', held, '-inf', now)
  used = tonumber(redis.call('GET', used_key) or '0')
  local committed = used
  for _, member in ipairs(redis.call('ZRANGE', held, 0, -1)) do
    committed = committed + tonumber(string.match(member, '|(%d+)$'))
  end
  if committed + estimate > quota then
    local left = math.max(quota - committed, 0)
    if at_least < 0 or at_least > left then
      return {3, left}
    end
    estimate = left
  end
end

local fresh = {}
for i = 1, n do
  local window = redis.call('HMGET', KEYS[i], 's', 'r', 't')
  local started = tonumber(window[1])
  local requests, tokens = tonumber(window[2]) or 0, tonumber(window[3]) or 0
  if not started or now - started >= 60000 then
    started, requests, tokens = now, 0, 0
    fresh[i] = true
  end
  local rpm, tpm = tonumber(ARGV[6 + 2 * i]), tonumber(ARGV[7 + 2 * i])
  if (rpm > 0 and requests + 1 > rpm) or (tpm > 0 and tokens + estimate > tpm) then
    return {2, i, requests, tokens, 60000 - (now - started)}
  end
end

if quota >= 0 then
  redis.call('ZADD', held, now + lease, request .. '|' .. estimate)
  redis.call('PEXPIRE', held, lease * 2)
end
for i = 1, n do
  if fresh[i] then
    redis.call('HSET', KEYS[i], 's', now, 'r', 1, 't', estimate)
  else
    redis.call('HINCRBY', KEYS[i], 'r', 1)
    redis.call('HINCRBY', KEYS[i], 't', estimate)
  end
  redis.call('PEXPIRE', KEYS[i], 120000)
end
if max_at_once >= 0 then
  redis.call('ZADD', slots, now + lease, request)
  redis.call('PEXPIRE', slots, lease * 2)
end
return {0, used, estimate}
