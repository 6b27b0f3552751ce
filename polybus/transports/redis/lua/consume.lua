-- CONSUME: register a consumer of a queue (so that reaping its connection returns what it held,
-- and so that the queue's live consumers can be counted).
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, connection id, queue, consumer name ('<connection>/<tag>')
-- Returns: the queue's priority levels; NOTFOUND when it does not exist
local connection, queue, consumer = ARGV[2], ARGV[3], ARGV[4]
local levels = levels_of(queue)
if levels == 0 then return not_found('queue', queue) end
redis.call('SADD', prefix .. 'cq:' .. connection, queue)
redis.call('SADD', prefix .. 'qc:' .. queue, consumer)
return levels
