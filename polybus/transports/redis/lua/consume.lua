-- CONSUME: register a queue as consumed by a connection (so that reaping the connection
-- returns what its consumers held).
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, connection id, queue
-- Returns: the queue's priority levels; NOTFOUND when it does not exist
local connection, queue = ARGV[2], ARGV[3]
local levels = levels_of(queue)
if levels == 0 then return not_found('queue', queue) end
redis.call('SADD', prefix .. 'cq:' .. connection, queue)
return levels
