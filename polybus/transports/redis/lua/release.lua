-- RELEASE: a clean goodbye, the same as being reaped.
-- ARGV: prefix, connection id
-- Returns: 1
reap_connection(ARGV[2])
return 1
