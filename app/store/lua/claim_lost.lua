-- The identity provider acted, but the claim that allowed it is gone or taken: Redis lost its
-- latest writes (restart from a snapshot, failover to a lagging replica) or came back empty.
-- Invariant 3: such a request must never be claimable again, so it ends `interrupted` with its
-- event, whatever state Redis shows now. A request that vanished is written back from what the
-- executing replica knew (its frozen fields), so the change it made is on the record.
-- ARGV: rid, token, outcome the provider gave (completed|failed|unknown), detail,
--       fields (JSON object of the request's frozen fields and times), dispute_window_ms.
-- Replies OK (now interrupted), RESTORED (written back, interrupted), NOOP (already recorded
-- under this claim) or LATE (already final otherwise: the late result is audited).
local rid, token, outcome, detail = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local dispute_window = tonumber(ARGV[6])
local r = load_request()
local now = now_ms()

local function end_interrupted(from, reason)
  set(r, 'state', 'interrupted')
  set(r, 'finished_at', now)
  set(r, 'claim_token', token)
  set(r, 'outcome_detail', detail)
  set(r, 'dispute_until', now + dispute_window)
  reindex(r, rid)
  append_event(r, rid, now, 'execution_unrecorded', 'twokey', 'system', '', from, reason, outcome)
end

if not r then
  r = {}
  for field, value in pairs(cjson.decode(ARGV[5])) do
    r[field] = tostring(value)
    redis.call('HSET', REQ, field, r[field])
  end
  set(r, 'events', 0)
  end_interrupted('', 'request_lost')
  return reply('RESTORED')
end
if r.state == 'pending' or r.state == 'ready' or r.state == 'executing' then
  end_interrupted(r.state, 'claim_lost')
  return reply('OK')
end
if r.claim_token == token then return reply('NOOP', r.state) end
append_event(r, rid, now, 'late_result', 'twokey', 'system', '', r.state, 'claim_lost', outcome)
return reply('LATE', r.state)
