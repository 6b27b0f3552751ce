-- HEARTBEAT: refresh this connection's deadline; reap the connections past theirs; route the
-- delayed messages that fell due (whoever delayed them: they are never late by more than a beat).
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, connection id, liveness (ms)
-- Returns: {1 if this connection was still registered else 0, the server's epoch, its time (ms)}
local connection, liveness = ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local known = redis.call('ZSCORE', prefix .. 'conns', connection)
redis.call('ZADD', prefix .. 'conns', fmt(now + liveness), connection)
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', prefix .. 'conns', '-inf', now,
    'LIMIT', 0, 16)) do
  reap_connection(dead)
end
release_due(100, now)
return {known and 1 or 0, epoch(), fmt(now)}
