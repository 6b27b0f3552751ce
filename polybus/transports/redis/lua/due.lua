-- DUE: route the delayed messages that fell due.
-- KEYS: none (every key is built from the prefix, ARGV[1]: see prelude.lua)
-- ARGV: prefix, the most to release in one call
-- Returns: {how many were released, when the next falls due (ms, server clock) or ''}
local released, next_due = release_due(tonumber(ARGV[2]), now_ms())
return {released, next_due or ''}
