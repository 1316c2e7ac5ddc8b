-- Audit something that happened around a request without changing its state (an automatic
-- revoke after a dispute, a secret that could not be delivered). ARGV: rid, kind, actor, reason,
-- outcome.
local rid = ARGV[1]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
append_event(r, rid, now, ARGV[2], ARGV[3], 'system', '', r.state, ARGV[4], ARGV[5])
return reply('OK')
