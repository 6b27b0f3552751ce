-- RELEASE: a clean goodbye, the same as being reaped.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, connection id
-- Returns: 1
reap_connection(ARGV[2])
return 1
