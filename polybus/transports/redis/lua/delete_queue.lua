-- DELETE_QUEUE: delete a queue, its messages and its bindings.
-- ARGV: prefix, queue
-- Returns: 1 if it existed, else 0
return delete_queue(ARGV[2])
