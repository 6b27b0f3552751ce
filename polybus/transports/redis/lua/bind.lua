-- BIND: route messages from an exchange to a queue when the key matches.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue, exchange, key or pattern
-- Returns: 1; NOTFOUND when the queue or the exchange does not exist
local queue, exchange, key = ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', queue_key(queue)) == 0 then return not_found('queue', queue) end
if redis.call('EXISTS', prefix .. 'x:' .. exchange) == 0 then
  return not_found('exchange', exchange)
end
redis.call('SADD', prefix .. 'b:' .. exchange, queue .. '\t' .. key)
redis.call('SADD', prefix .. 'qb:' .. queue, exchange .. '\t' .. key)
return 1
