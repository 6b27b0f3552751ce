-- DECLARE_QUEUE: create a queue (a stream per priority level, each with the group), or check
-- it exists as declared. A non-durable queue left from before a server restart is replaced.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, connection id, queue, options (JSON), levels, dead-letter queue ('' for none),
--       queue TTL in ms ('' for none), exclusive ('1'/'0'), owned by the connection ('1'/'0'),
--       durable ('1'/'0')
-- Returns: 1 when created, 0 when it existed; CONFLICT queue\t<name>\t<existing>\t<asked>
local connection, name, options, levels = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local dead_letter_queue, ttl_ms, exclusive = ARGV[6], ARGV[7], ARGV[8]
local owned, durable = ARGV[9] == '1', ARGV[10] == '1'
local meta = queue_key(name)
local server_epoch = epoch()
if redis.call('EXISTS', meta) == 1 then
  local current = redis.call('HMGET', meta, 'options', 'epoch', 'owner', 'exclusive')
  if current[2] and current[2] ~= '' and current[2] ~= server_epoch then
    delete_queue(name)  -- a non-durable queue from before a server restart
  else
    if current[4] == '1' and current[3] ~= connection then
      return redis.error_reply('CONFLICT queue ' .. name ..
        ' is exclusive to another connection; choose another name')
    end
    if current[1] ~= options then  -- Python says which of the options differ
      return redis.error_reply('CONFLICT queue\t' .. name .. '\t' .. current[1] .. '\t' .. options)
    end
    return 0
  end
end
local owner = ''
if owned then
  owner = connection
  redis.call('SADD', prefix .. 'own:' .. connection, name)
end
local queue_epoch = ''
if not durable then queue_epoch = server_epoch end
redis.call('HSET', meta, 'options', options, 'levels', levels, 'dead_letter', dead_letter_queue,
  'ttl_ms', ttl_ms, 'exclusive', exclusive, 'owner', owner, 'epoch', queue_epoch,
  'has_deadlines', '0')
for level = 0, tonumber(levels) - 1 do
  redis.call('DEL', stream_key(name, level))
  redis.call('XGROUP', 'CREATE', stream_key(name, level), GROUP, '0', 'MKSTREAM')
end
return 1
