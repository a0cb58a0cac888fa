-- Rebuilds this month's quota counts from the store (Redis restarted empty, or a
-- replica came back from an outage): once, whoever gets here first.
-- KEYS: the seeded marker, then each token's used count. ARGV: each one's use so far.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i - 1], 'PX', 3456000000)
end
redis.call('SET', KEYS[1], 1, 'PX', 3456000000)
return 1
