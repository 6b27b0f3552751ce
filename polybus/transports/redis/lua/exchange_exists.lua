-- EXCHANGE_EXISTS: whether an exchange exists.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, exchange
-- Returns: 1 or 0
return redis.call('EXISTS', prefix .. 'x:' .. ARGV[2])
