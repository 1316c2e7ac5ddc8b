-- The owner's step-up gate: start a verifier, check a one-time code, record a manager's
-- attestation. Each outcome (started, not sent, wrong code, failed, passed) is written here with
-- its audit event; a code never is: only its keyed digest, in its own key with its own expiry,
-- deleted once used or exhausted.
-- KEYS[6] target's fraud flag, KEYS[7] the request's one-time code (hash: d digest, n tries,
-- until ms), KEYS[8] the target's failed step-ups (sorted set, by time, kept for the fraud flag
-- window: counted per target, so opening a fresh request does not start the count again). ARGV: rid, op (start|code|attest|push|unsent), actor, via, verifier, digest ('' when no
-- code; attest: yes|no; push: approved|rejected|timeout|unavailable), code ttl ms (start of a
-- push or manager question: how long before it may be asked again), code
-- attempts, flag window ms, manager id (start; '' if none).
-- op unsent: the sender could not deliver the code whose digest is ARGV[6] (SMTP or the SMS
-- gateway down or refusing); it is withdrawn as if never started (no attempt, no failure).
-- With verifier manager: no chat reached the manager; ARGV[6] is the question's start (ms).
-- Replies OK, NOOP, WRONG (detail: tries left), FAILED (detail: why), LOCKED, NO_CODE, and the
-- refusals of common.lua.
local rid, op, actor, via, verifier = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local digest, code_ttl, attempts = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local FLAG, CODE, FAILS = KEYS[6], KEYS[7], KEYS[8]
local r = load_request()
local now = now_ms()
local refused = refuse_unless_open(r, rid, now, actor)
if refused then return refused end
if r.needs_stepup ~= '1' then return reply('NOOP', 'not_needed') end

-- The verifiers whose code the owner types back (by email or text message).
local function sends_code(name)
  return name == 'email_code' or name == 'sms_code'
end

local function locked()
  return num(r, 'stepup_fail') >= num(r, 'stepup_max_fail')
end

-- Digests are compared in time independent of where they differ.
local function same_digest(a, b)
  if #a ~= #b or #a == 0 then return false end
  local diff = 0
  for i = 1, #a do diff = bit.bor(diff, bit.bxor(string.byte(a, i), string.byte(b, i))) end
  return diff == 0
end

-- A typed code arrives as its digest under each code key twokey holds (comma-separated: the
-- current key, then those before a rotation): one try, every candidate compared.
local function any_digest(stored, candidates)
  local found = false
  for candidate in string.gmatch(candidates, '[^,]+') do
    if same_digest(stored, candidate) then found = true end
  end
  return found
end

-- The target's failed step-ups within the fraud flag window, this one included.
local function count_target_failure()
  local window = tonumber(ARGV[9])
  redis.call('ZREMRANGEBYSCORE', FAILS, '-inf', now - window)
  redis.call('ZADD', FAILS, now, rid .. '|' .. now .. '|' .. redis.call('ZCARD', FAILS))
  redis.call('PEXPIRE', FAILS, window)
  return redis.call('ZCARD', FAILS)
end

-- One failed step-up: counted for the target (whichever of its requests it was on); at the
-- policy's limit the target is flagged as "this wasn't me" flags it, in the same event, and this
-- request locks. The request stays blocked (it never passes once locked).
local function fail(why, who, role)
  redis.call('DEL', CODE)
  set(r, 'stepup_fail', math.max(count_target_failure(), num(r, 'stepup_fail') + 1))
  set(r, 'stepup_pending', 0)
  set(r, 'stepup_changed', now)
  local outcome = 'failed'
  if locked() then
    flag_target(FLAG, rid, now, tonumber(ARGV[9]), r.target)
    outcome = 'target_flagged'
  end
  reindex(r, rid)
  append_event(r, rid, now, 'step_up_failed', who, role, via, r.state,
    r.stepup_verifier .. ':' .. why, outcome)
  if locked() then return reply('LOCKED', why) end
  return reply('FAILED', why)
end

if op == 'start' then
  if locked() then return reply('LOCKED') end
  if stepup_ok(r, now) then return reply('NOOP', 'already_verified') end
  if r.stepup_pending == '1' then
    if redis.call('EXISTS', CODE) == 1 then return reply('NOOP', 'code_live') end
    -- A push or a manager's answer still under way is not sent again (no push bombing):
    -- only once it could have been answered (ARGV[7] ms after it started).
    if not sends_code(r.stepup_verifier or '') and now < num(r, 'stepup_changed') + code_ttl then
      return reply('NOOP', 'in_progress')
    end
    if sends_code(r.stepup_verifier or '') then
      -- The last code ran out unused: a timed-out step-up is a failure like any other.
      local failed = fail('timeout', 'twokey', 'system')
      if locked() then return failed end
    end
  end
  local manager = ARGV[10] or ''
  if manager ~= '' and (manager == r.requester or manager == r.owner or manager == r.target
      or r['appr:' .. manager] or r['apprwait:' .. manager]) then
    return reply('SOD', 'manager')  -- the service never asks such a manager; never record one
  end
  local from = r.state
  set(r, 'stepup_verifier', verifier)
  set(r, 'stepup_manager', manager)
  set(r, 'stepup_pending', 1)
  set(r, 'stepup_changed', now)
  if digest ~= '' then
    redis.call('DEL', CODE)
    redis.call('HSET', CODE, 'd', digest, 'n', 0, 'until', now + code_ttl)
    redis.call('PEXPIRE', CODE, code_ttl)
  end
  reindex(r, rid)
  append_event(r, rid, now, 'step_up_started', actor, 'system', via, from, verifier, 'started')
  return reply('OK')
end

if op == 'unsent' and verifier == 'manager' then
  -- The manager's card reached no chat: nobody was asked, so the question is withdrawn as if
  -- never asked (no failure) and the owner may ask again at once. Only the very question that
  -- started at ARGV[6] (ms), never a later one.
  if r.stepup_pending ~= '1' or r.stepup_verifier ~= 'manager'
      or (r.stepup_changed or '') ~= digest then
    return reply('NOOP', 'stale')
  end
  set(r, 'stepup_pending', 0)
  set(r, 'stepup_changed', now)
  reindex(r, rid)
  append_event(r, rid, now, 'step_up_not_sent', actor, 'system', via, r.state,
    'manager:not_reached', 'not_sent')
  return reply('OK')
end

if op == 'unsent' then
  -- A code nobody received cannot time out against the owner: an SMTP or SMS gateway outage
  -- must never count toward flagging their account. Only the very code whose sending failed is
  -- withdrawn (its digest), never a later one; the owner may ask for a new one at once.
  local stored = redis.call('HGET', CODE, 'd')
  if not stored or not same_digest(stored, digest) then return reply('NOOP', 'stale') end
  redis.call('DEL', CODE)
  if r.stepup_pending == '1' and r.stepup_verifier == verifier then
    set(r, 'stepup_pending', 0)
    set(r, 'stepup_changed', now)
  end
  append_event(r, rid, now, 'step_up_not_sent', actor, 'system', via, r.state,
    verifier .. ':not_sent', 'not_sent')
  return reply('OK')
end

if op == 'code' then
  if actor ~= r.owner then return refuse(r, rid, now, 'NOT_OWNER', '', 'verify', actor, via) end
  if locked() then return reply('LOCKED') end
  if stepup_ok(r, now) then return reply('NOOP', 'already_verified') end
  local stored = redis.call('HMGET', CODE, 'd', 'n', 'until')
  if not stored[1] then return reply('NO_CODE') end
  if now >= tonumber(stored[3]) then return fail('timeout', actor, 'owner') end
  if any_digest(stored[1], digest) then
    local from = r.state
    redis.call('DEL', CODE)
    set(r, 'stepup_at', now)
    set(r, 'stepup_pending', 0)
    set(r, 'stepup_changed', now)
    ready_if_satisfied(r, now)
    reindex(r, rid)
    append_event(r, rid, now, 'step_up_passed', actor, 'owner', via, from, r.stepup_verifier, 'passed')
    return reply('OK')
  end
  local tries = redis.call('HINCRBY', CODE, 'n', 1)
  if tries >= attempts then return fail('code_exhausted', actor, 'owner') end
  set(r, 'stepup_changed', now)
  append_event(r, rid, now, 'step_up_attempt', actor, 'owner', via, r.state,
    r.stepup_verifier .. ':wrong_code', 'wrong')
  return reply('WRONG', tostring(attempts - tries))
end

if op == 'attest' then
  -- The owner's manager of record answers "did you confirm with them by phone or in person?".
  -- Never the requester or an approver of this request (separation of duties, by person).
  if (r.stepup_manager or '') == '' or actor ~= r.stepup_manager then
    return refuse(r, rid, now, 'NOT_OWNER', '', 'attest', actor, via)
  end
  if actor == r.requester or r['appr:' .. actor] or r['apprwait:' .. actor] then
    return refuse(r, rid, now, 'SOD', '', 'attest', actor, via)
  end
  if locked() then return reply('LOCKED') end
  if stepup_ok(r, now) then return reply('NOOP', 'already_verified') end
  if r.stepup_pending ~= '1' or r.stepup_verifier ~= 'manager' then return reply('NO_CODE') end
  if digest ~= 'yes' then return fail('manager_denied', actor, 'manager') end
  local from = r.state
  set(r, 'stepup_at', now)
  set(r, 'stepup_pending', 0)
  set(r, 'stepup_changed', now)
  ready_if_satisfied(r, now)
  reindex(r, rid)
  append_event(r, rid, now, 'step_up_passed', actor, 'manager', via, from, 'manager', 'passed')
  return reply('OK')
end

if op == 'push' then
  -- What the owner's device answered, as the identity provider reported it (actor: the owner,
  -- via: the push verifier). Only the push this request still waits for counts.
  if r.stepup_pending ~= '1' or r.stepup_verifier ~= verifier then return reply('NOOP', 'stale') end
  if locked() then return reply('LOCKED') end
  if digest == 'approved' then
    local from = r.state
    set(r, 'stepup_at', now)
    set(r, 'stepup_pending', 0)
    set(r, 'stepup_changed', now)
    ready_if_satisfied(r, now)
    reindex(r, rid)
    append_event(r, rid, now, 'step_up_passed', r.owner, 'owner', via, from, verifier, 'passed')
    return reply('OK')
  end
  if digest == 'unavailable' then
    set(r, 'stepup_pending', 0)
    set(r, 'stepup_changed', now)
    append_event(r, rid, now, 'step_up_failed', 'twokey', 'system', via, r.state,
      verifier .. ':unavailable', 'unavailable')
    return reply('FAILED', 'unavailable')
  end
  return fail(digest == 'rejected' and 'rejected' or 'timeout', r.owner, 'owner')
end

return redis.error_reply('ERR step_up: unknown op')
