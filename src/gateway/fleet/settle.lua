-- A request's end: its windows get what it really used instead of its estimate, the
-- quota its real use instead of its reservation, and its slot goes back.
-- KEYS: n windows, then the quota's used count, the token's slots, the reservations.
-- ARGV: n, estimate, used, request, 1 when it reserved quota (else 0).
local n = tonumber(ARGV[1])
local estimate, used = tonumber(ARGV[2]), tonumber(ARGV[3])
local request = ARGV[4]
local delta = used - estimate
for i = 1, n do
  if delta ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('HINCRBY', KEYS[i], 't', delta) < 0 then
      redis.call('HSET', KEYS[i], 't', 0)
    end
  end
end
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[n + 3], request .. '|' .. estimate)
  if used > 0 then
    redis.call('INCRBY', KEYS[n + 1], used)
  end
  redis.call('PEXPIRE', KEYS[n + 1], 3456000000)
end
redis.call('ZREM', KEYS[n + 2], request)
return 1
