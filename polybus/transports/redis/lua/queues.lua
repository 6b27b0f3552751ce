-- QUEUES: one SCAN step over the queues declared under the prefix (a step per call, so that
-- listing a large keyspace never blocks the server for long; the caller goes on until the
-- cursor is '0'). A queue is its declaration hash, q:<name>.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, SCAN cursor ('0' to start)
-- Returns: {the next cursor, the names found in this step (SCAN may repeat a name)}
local cursor = ARGV[2]
local declarations = queue_key('')
local pattern = string.gsub(declarations, '[%*%?%[%]\\]', '\\%0') .. '*'
local step = redis.call('SCAN', cursor, 'MATCH', pattern, 'COUNT', 1000, 'TYPE', 'hash')
local names = {}
for _, key in ipairs(step[2]) do
  -- (a hash of another namespace whose name begins the same is not a declaration)
  if redis.call('HEXISTS', key, 'levels') == 1 then
    names[#names + 1] = string.sub(key, #declarations + 1)
  end
end
return {step[1], names}
