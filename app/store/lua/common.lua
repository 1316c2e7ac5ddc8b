-- Shared by every gate script (prepended to each when it is loaded; see redis_store.py).
--
-- Every gate script follows one shape, so that invariants 1, 3 and 4 hold by construction:
--   read the request and the clock (Redis TIME: one clock for all replicas), check the state
--   and every expiry, apply the change, re-index the next deadline, append exactly one audit
--   event - all inside this one script, which Redis runs atomically.
-- KEYS[1] request hash, KEYS[2] shard due index, KEYS[3] shard open index,
-- KEYS[4] shard audit stream, KEYS[5] shard audit seq; scripts may add more after these.
-- KEYS[#KEYS], always the LAST key (redis_store.py appends it to every gate script): the shard's
-- index of open requests by requester, owner and deciding role (keys.py open_index).
-- Every reply is { code, detail, flat request hash } so Python needs no second round trip.

local REQ, DUE, OPEN, AUDIT, SEQ = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local WHO = KEYS[#KEYS]
if #KEYS < 6 or not string.find(WHO, ':open:who', 1, true) then
  return redis.error_reply('ERR gate script: the last key must be the shard open:who index')
end

-- Invariant 4 before any write: the shard's event counter must be a count, or the event's INCR
-- would fail after the change itself was written (a change with no event). Nothing is changed.
do
  local seq = redis.call('GET', SEQ)
  if seq and not string.match(seq, '^%d+$') then return { 'AUDIT_DAMAGED', '', {} } end
end

-- A chat delivery (a Slack click's trigger id) is acted on once, checked here with the decision
-- it carries (app/delivery.py): its once-key, in this slot, is the key just before WHO, and the
-- last ARGV is how long it is kept (seconds). A repeat changes nothing and says REPEATED.
do
  local once, prefix = KEYS[#KEYS - 1], string.sub(WHO, 1, #WHO - 9) .. ':once:'
  if #KEYS >= 7 and string.sub(once, 1, #prefix) == prefix then
    if not redis.call('SET', once, '1', 'NX', 'EX', tonumber(ARGV[#ARGV])) then
      return { 'REPEATED', '', {} }
    end
  end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function load_request()
  local flat = redis.call('HGETALL', REQ)
  if #flat == 0 then return nil end
  local r = {}
  for i = 1, #flat, 2 do r[flat[i]] = flat[i + 1] end
  return r
end

local function num(r, field)
  return tonumber(r[field] or '0') or 0
end

local function is_open(state)
  return state == 'pending' or state == 'ready'
end

local function owner_ok(r, now)
  if r.needs_owner ~= '1' then return true end
  local at = num(r, 'owner_at')
  return at > 0 and now < at + num(r, 'approval_ttl_ms')
end

local function valid_approvals(r, now)
  local count, ttl = 0, num(r, 'approval_ttl_ms')
  for field, value in pairs(r) do
    if string.sub(field, 1, 5) == 'appr:' and now < tonumber(value) + ttl then
      count = count + 1
    end
  end
  return count
end

-- The owner's step-up (a second channel, for the tiers the policy marks): passed and unexpired.
local function stepup_ok(r, now)
  if r.needs_stepup ~= '1' then return true end
  local at = num(r, 'stepup_at')
  return at > 0 and now < at + num(r, 'stepup_ttl_ms')
end

-- Invariant 1: every gate the frozen plan requires is satisfied and unexpired at `now`.
local function gates_ok(r, now)
  return now < num(r, 'expires_at') and owner_ok(r, now) and stepup_ok(r, now)
    and valid_approvals(r, now) >= num(r, 'approvals_needed')
end

local function set(r, field, value)
  r[field] = tostring(value)
  redis.call('HSET', REQ, field, r[field])
end

-- The next instant the sweeper must look at this request, or nil when it is final.
local function next_deadline(r)
  local state = r.state
  if state == 'executing' then return num(r, 'lease_until') end
  if not is_open(state) then return nil end
  local at = num(r, 'expires_at')
  local function sooner(t) if t > 0 and t < at then at = t end end
  if r.reminded ~= '1' and state == 'pending' then sooner(num(r, 'remind_at')) end
  if r.escalated ~= '1' then sooner(num(r, 'escalate_at')) end
  if state == 'ready' then sooner(num(r, 'ready_at') + num(r, 'claim_grace_ms')) end
  return at
end

-- A finished request is kept for its retention, but never past the point where the owner may
-- still dispute it, and for as long as a break-glass review of it is open (it then has no TTL;
-- close_review.lua starts the clock).
local function keep_finished(r)
  if r.review_open == '1' then return end
  local keep = num(r, 'retention_ms')
  local dispute_end = num(r, 'dispute_until')
  if dispute_end > 0 then keep = math.max(keep, dispute_end - now_ms()) end
  redis.call('PEXPIRE', REQ, keep)
end

-- The target's fraud flag ("this wasn't me", a dispute, failed step-ups): the flag key (read
-- by open.lua: later requests get the strictest tier), and an entry in this shard's WHO index,
-- "f:<target>|<until ms>|<set ms>", for the requests already open on the target: a claim reads
-- it there, in a key every gate script holds (a Cluster refuses a script any key it was not
-- given, and one that does not exist yet blocks a script while its slot moves).
local function flag_target(key, rid, now, window_ms, target)
  redis.call('SET', key, rid, 'PX', window_ms)
  redis.call('ZADD', WHO, 0, 'f:' .. (target or '') .. '|' .. (now + window_ms) .. '|' .. now)
end

-- When the target was flagged after this request opened (it must not run on that plan), or nil.
-- Entries whose window has passed are dropped on the way.
local function flagged_since_open(r, now)
  local prefix = 'f:' .. (r.target or '') .. '|'
  local found = nil
  for _, entry in ipairs(redis.call('ZRANGEBYLEX', WHO, '[' .. prefix, '(' .. prefix .. '\127')) do
    local ends, at = string.match(string.sub(entry, #prefix + 1), '^(%d+)|(%d+)$')
    ends, at = tonumber(ends), tonumber(at)
    if ends and ends <= now then
      redis.call('ZREM', WHO, entry)
    elseif at and at > num(r, 'created_at') then
      found = at
    end
  end
  return found
end

-- Who an open request concerns, as entries of the shard's WHO index (read by `list`).
local function who_entry(kind, id, rid)
  return kind .. ':' .. (id or '') .. '|' .. rid
end

-- Index a request just opened, or (role) one that escalated: only roles that may decide it.
local function index_who(r, rid, role)
  if role then
    redis.call('ZADD', WHO, 0, who_entry('a', role, rid))
    return
  end
  redis.call('ZADD', WHO, 0, who_entry('r', r.requester, rid), 0, who_entry('o', r.owner, rid))
  if num(r, 'approvals_needed') > 0 and (r.approver_role or '') ~= '' then
    redis.call('ZADD', WHO, 0, who_entry('a', r.approver_role, rid))
  end
end

local function reindex(r, rid)
  local at = next_deadline(r)
  if at then
    redis.call('ZADD', DUE, at, rid)
  else
    redis.call('ZREM', DUE, rid)
    redis.call('ZREM', OPEN, rid)
    redis.call('ZREM', WHO, who_entry('r', r.requester, rid), who_entry('o', r.owner, rid),
      who_entry('a', r.approver_role, rid), who_entry('a', r.escalate_to, rid))
    keep_finished(r)
  end
end

-- Invariant 4: the audit event is appended by the same script as the change it records.
local function append_event(r, rid, now, kind, actor, role, via, from, reason, outcome)
  local seq = redis.call('INCR', SEQ)
  local event = {
    seq = seq, rid = rid, kind = kind, at = now,
    actor = actor or '', role = role or '', via = via or '',
    ticket = r.ticket or '', action = r.action or '', target = r.target or '',
    tier = r.tier or '', from = from or '', to = r.state or '',
    reason = reason or '', outcome = outcome or r.state or '',
  }
  redis.call('XADD', AUDIT, '*', 'seq', seq, 'e', cjson.encode(event))
  redis.call('HINCRBY', REQ, 'events', 1)
  r.events = tostring(num(r, 'events') + 1)
end

local function reply(code, detail)
  return { code, detail or '', redis.call('HGETALL', REQ) }
end

-- Refused attempts are security events too (self-approval, a stranger answering for the owner,
-- an approver without the role): audited, without changing the request, then refused.
-- `attempt` names what was tried (approve, deny, cancel, confirm, reject, dispute, review).
local function refuse(r, rid, now, code, detail, attempt, actor, via)
  append_event(r, rid, now, 'refused', actor, '', via, r.state,
    string.lower(code) .. ':' .. attempt, 'refused')
  return reply(code, detail)
end

-- Moves an open request whose time is up to `expired`, with its event; true if it did.
local function expire_if_due(r, rid, now, actor)
  if is_open(r.state) and now >= num(r, 'expires_at') then
    local from = r.state
    set(r, 'state', 'expired')
    set(r, 'finished_at', now)
    reindex(r, rid)
    append_event(r, rid, now, 'expired', actor or 'twokey', 'system', '', from, 'request_ttl', 'expired')
    return true
  end
  return false
end

-- Moves a pending request to ready when every gate holds (same script as the gate change).
local function ready_if_satisfied(r, now)
  if r.state == 'pending' and gates_ok(r, now) then
    set(r, 'state', 'ready')
    set(r, 'ready_at', now)
    return true
  end
  return false
end

-- The role under which `actor` may decide this request: the tier's approver role, or the
-- escalation role once escalated. `held` is the comma-separated roles the directory gives them.
local function decision_role(r, held)
  local allowed = { r.approver_role or '' }
  if r.escalated == '1' and (r.escalate_to or '') ~= '' then table.insert(allowed, r.escalate_to) end
  for _, role in ipairs(allowed) do
    if role ~= '' and string.find(',' .. held .. ',', ',' .. role .. ',', 1, true) then
      return role
    end
  end
  return nil
end

local function allowed_roles(r)
  if r.escalated == '1' and (r.escalate_to or '') ~= '' then
    return (r.approver_role or '') .. ',' .. r.escalate_to
  end
  return r.approver_role or ''
end

-- Common entry checks of a gate action on an open request; returns an error reply or nil.
local function refuse_unless_open(r, rid, now, actor)
  if not r then return { 'NOTFOUND', '', {} } end
  if expire_if_due(r, rid, now, actor) then return reply('EXPIRED') end
  if not is_open(r.state) then return reply('DECIDED', r.state) end
  return nil
end
