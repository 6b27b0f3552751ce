-- DELETE_QUEUE: delete a queue, its messages and its bindings.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, queue
-- Returns: 1 if it existed, else 0
return delete_queue(ARGV[2])
