-- Record what the identity provider did. Only the holder of the claim may; a result arriving
-- after the sweeper declared the execution interrupted is audited but changes no state.
-- ARGV: rid, token, state (completed|failed|unknown), detail, reason code, dispute_window_ms.
local rid, token, outcome, detail, reason = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local r = load_request()
if not r then return { 'NOTFOUND', '', {} } end
local now = now_ms()
if r.claim_token ~= token then return reply('CONFLICT') end
if r.state == 'interrupted' then
  append_event(r, rid, now, 'late_result', 'twokey', 'system', '', 'interrupted', reason, outcome)
  return reply('LATE')
end
if r.state ~= 'executing' then return reply('CONFLICT') end
set(r, 'state', outcome)
set(r, 'finished_at', now)
set(r, 'outcome_detail', detail)
-- The owner may say "this wasn't me" whenever the account may have been changed.
if outcome == 'completed' or outcome == 'unknown' then
  set(r, 'dispute_until', now + tonumber(ARGV[6]))
end
reindex(r, rid)
append_event(r, rid, now, 'executed', 'twokey', 'system', '', 'executing', reason, outcome)
return reply('OK')
