-- EXCHANGE_EXISTS: whether an exchange exists.
-- ARGV: prefix, exchange
-- Returns: 1 or 0
return redis.call('EXISTS', prefix .. 'x:' .. ARGV[2])
