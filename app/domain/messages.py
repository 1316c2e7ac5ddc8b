"""What twokey tells people, in words: every sentence the service sends or raises.

The service (app/service.py) holds the flow and calls these; keeping the wording here lets the
flow read as a flow, and lets one sentence serve every face. Pure: built from the stored request
and plain values; no I/O. Channels escape whatever they show (these sentences carry names and
typed text as they are).
"""

from __future__ import annotations

from collections.abc import Sequence

from app.domain.models import Plan, Request, RequestState
from app.domain.words import phrase, when

SYSTEM = "twokey"
REVIEWER_ROLE = "security"
"""The role that reviews break-glass uses (the break-glass role itself never suffices)."""

TICKETS_NOT_WIRED = (
    "The policy asks for tickets to be checked, but no ticket system is connected, so nothing "
    "was opened. An operator must fix twokey's configuration."
)


def tickets_down(system: str, number: str) -> str:
    """The ticket system did not answer: the request is refused, never opened unchecked."""
    return (
        f"{system} cannot be reached right now, so ticket {number} cannot be checked and "
        "nothing was opened. Please try again in a minute."
    )


def tickets_refused(system: str, number: str) -> str:
    """The ticket system answered but refused twokey's own credentials: not the agent's doing
    and not passing, so no "try again"; nothing was opened."""
    return (
        f"{system} refused twokey's credentials, so ticket {number} cannot be checked and "
        f"nothing was opened. An operator must fix twokey's {system} integration "
        "(`twokey tickets check` says what is wrong); trying again will not help until then."
    )


def ticket_refused_at_claim(system: str, number: str) -> str:
    """At the claim: the re-check was refused for twokey's credentials, so the change stops."""
    return (
        f"{system} refused twokey's credentials when ticket {number} was re-checked, so the "
        f"change was stopped: an operator must fix twokey's {system} integration"
    )


def ticket_not_found(system: str, number: str) -> str:
    return (
        f"Ticket {number} was not found in {system} (no ticket has that number): "
        "check the number you quoted."
    )


DIRECTORY_DOWN = (
    "The directory cannot be reached right now, so nobody's identity can be checked and nothing "
    "was changed. Please try again in a minute."
)
NO_SUCH_REQUEST = "No such request: check the id (they look like TK-4K7M2P9Q)."
OPEN_FAILED = "The request could not be opened; please try again."
VELOCITY_REACHED = (
    "Velocity limit: you have opened as many requests as allowed in this window. Ask security "
    "to review before trying again."
)
NOT_THE_OWNER = "Only the account's owner of record can answer this confirmation."
PART_OF_IT = "You are part of this request (requester, account or owner), so you cannot decide it."
NOT_THE_REQUESTER = "Only the agent who opened the request, or an approver for it, can cancel it."

REFUSALS = {
    "SOD": "deciding a request they are part of",
    "ROLE": "deciding without the role it needs",
    "NOT_OWNER": "answering for someone else's account",
    "NOT_REQUESTER": "cancelling someone else's request",
    "WRONG_PERSON": "someone else signing in through their approval link",
    "SIGNIN_REFUSED": "a sign-in whose identity provider answer did not hold (bad or forged)",
}
"""Gate refusals that are security events, as security reads them in an alert."""

ATTEMPTS = {
    "owner_confirmed": "confirm",
    "owner_rejected": "reject",
    "approved": "approve",
    "denied": "deny",
    "cancelled": "cancel",
    "step_up_passed": "verify",
}


# ---- who is asking -----------------------------------------------------------------------------


def deactivated(who: str) -> str:
    return f"{who}: this chat account is deactivated."


def a_bot(who: str) -> str:
    return f"{who}: bots cannot take part in a two-person rule."


def not_a_person(who: str) -> str:
    return (
        f"{who}: this chat account's email belongs to a non-human identity (a service account) "
        "in the directory, and only people can take part in a two-person rule."
    )


def a_guest(who: str) -> str:
    return f"{who}: guest accounts cannot request, confirm or approve identity changes."


def no_verified_email(who: str) -> str:
    return (
        f"{who}: this chat account has no verified email, so twokey cannot tell who it belongs "
        "to in the directory."
    )


def nobody_with_email(who: str) -> str:
    return f"{who}: the email of this chat account matches nobody in the directory."


def several_with_email(who: str, count: int) -> str:
    return (
        f"{who}: the email of this chat account matches {count} directory entries, so twokey "
        "cannot tell which person this is. Ask the directory team to fix the duplicate."
    )


def needs_role(request: Request, roles: list[str]) -> str:
    return (
        f"Deciding a {request.plan.tier_label or request.plan.tier} request needs the "
        f"{' or '.join(roles)} role, which you do not hold."
    )


# ---- what people are told about a request -------------------------------------------------------


def alert(request: Request, what: str) -> str:
    """A security alert about a request: what it is, then what happened."""
    return (
        f"Request {request.id} ({request.action.value} for {request.target_name}, "
        f"tier {request.plan.tier}, ticket {request.ticket}, requested by "
        f"{request.requester_name or request.requester_id}): {what}."
    )


def receipt(request: Request) -> str:
    """The agent's answer when a request opens."""
    waiting = request.waiting_for(request.last_change_at)
    if request.state is RequestState.PENDING:
        return (
            f"Request {request.id} opened (tier {request.plan.tier_label}): "
            f"waiting for {', '.join(waiting)}; expires {when(request.expires_at)}."
        )
    return f"Request {request.id} opened; it is now {phrase(request.state)}."


def already(request: Request) -> str:
    return f"Request {request.id} is already {phrase(request.state)}."


def expired_refusal(request: Request) -> str:
    return (
        f"Request {request.id} expired at {when(request.expires_at)}; nothing was done. "
        "Open a new request if it is still needed."
    )


def expired_notice(request: Request, *, swept: bool = False) -> str:
    if swept:
        return f"Request {request.id} expired before every gate was passed; nothing was done."
    return f"Request {request.id} expired before every gate was passed."


def changed_meanwhile(request: Request, code: str) -> str:
    return f"Request {request.id} changed meanwhile ({code}); please try again."


def noop(detail: str) -> str:
    return {
        "already_confirmed": "You already confirmed this request.",
        "already_approved": "You already approved this request.",
        "enough_approvals": "This request already has every approval it needs.",
        "not_needed": "This request does not need your confirmation.",
    }.get(detail, "Nothing to do: this was already done.")


def requester_decision(request: Request, name: str, by_owner: bool) -> str:
    """The agent hears of a decision someone else took, in words for what happened."""
    text = {
        RequestState.DENIED: f"{name} denied request {request.id}: {request.decision_reason}",
        RequestState.REJECTED_BY_OWNER: f"The owner said request {request.id} was not theirs: "
        "it is stopped and security is alerted.",
        RequestState.CANCELLED: f"{name} cancelled request {request.id}.",
        RequestState.READY: f"Request {request.id}: {name} gave the last sign-off it needed; "
        "twokey is making the change now.",
    }.get(request.state)
    if text is not None:
        return text
    verified = by_owner and request.step_up_at is not None
    verified = verified and request.step_up_at == request.last_change_at
    did = (
        "verified themselves on a second channel"
        if verified
        else "confirmed it"
        if by_owner
        else "approved it"
    )
    waiting = ", ".join(request.waiting_for(request.last_change_at))
    return f"Request {request.id}: {name} {did}; it still waits for {waiting}."


def owner_lapsed(request: Request) -> str:
    return (
        f"Your confirmation of request {request.id} ({request.action.label} for "
        f"{request.target_name}) lapsed before every sign-off was in. If you still want it, "
        'press "Yes, it was me" again; if not, press "No, this wasn\'t me".'
    )


def refused_often(
    name: str, who: str, via: str, count: int, window_s: int, code: str, what: str
) -> str:
    return (
        f"{name} ({who}, via {via}) was refused {count} times within {window_s // 60 or 1} "
        f"minutes; latest: {REFUSALS[code]} (tried to {what} it)"
    )


def refused_open(requester: str, action_label: str, target: str, why: str) -> str:
    return f"Refused request by {requester} to {action_label} for {target}: {why}"


def nobody_can_approve(plan: Plan, roles: Sequence[str], able: int) -> str:
    """Why a request is refused at open: fewer people could approve it than it needs."""
    who = " or ".join(roles)
    held = "nobody" if able == 0 else "only 1 person" if able == 1 else f"only {able} people"
    needs = "1 approval" if plan.approvals_needed == 1 else f"{plan.approvals_needed} approvals"
    return (
        f"Nobody could approve this, so nothing was opened: tier {plan.tier_label} needs "
        f"{needs} from the {who} role, and {held} in the directory "
        f"{'hold' if able > 1 else 'holds'} it apart from you, the account and its owner. "
        "Ask whoever keeps twokey's policy to add approvers to that role's groups."
    )


def requester_gone() -> str:
    """Why a request whose agent was disabled since they opened it does not run."""
    return (
        "the agent who opened it is no longer active in the directory, so nobody stands behind "
        "the request any more; nothing was changed. Another agent may open it again."
    )


def owner_changed(target: str) -> str:
    """Why a request on an NHI handed to a new owner since it opened does not run."""
    return (
        f"the owner of record of {target} changed since the request opened, so the old "
        "owner's confirmation no longer counts; nothing was changed. Open a new request for "
        "the new owner to confirm"
    )


# ---- the sweeper --------------------------------------------------------------------------------

INTERRUPTED_BY_STOP = (
    "execution was interrupted (the process running it stopped); it will NOT be re-run. Check "
    "the account in the identity provider"
)


def remind_approvers(request: Request) -> str:
    return (
        f"Reminder: request {request.id} is still waiting for "
        f"{', '.join(request.waiting_for(request.last_change_at))}."
    )


def remind_owner(request: Request) -> str:
    return f"Reminder: please answer whether you asked for request {request.id}."


def escalated(request: Request) -> str:
    return (
        f"Escalated: request {request.id} has waited too long; {request.plan.escalate_to} may "
        "now decide it."
    )


# ---- execution ----------------------------------------------------------------------------------


def owner_outcome(request: Request) -> str:
    """What the owner is told when a change to their account ends, whichever way."""
    what = (
        f"the help desk asked twokey to {request.action.label} for {request.target_name} "
        f"(request {request.id}, ticket {request.ticket})"
    )
    if request.requester_id == SYSTEM:
        what = (
            f"twokey was to {request.action.label} for {request.target_name} (request "
            f"{request.id}) after your report"
        )
    dispute = ""
    if request.dispute_until:
        dispute = (
            f' If you did not ask for this, press "This wasn\'t me" before '
            f"{when(request.dispute_until)}."
        )
    if request.state is RequestState.COMPLETED:
        return f"Done: {what}, and it was done at {when(request.finished_at)}.{dispute}"
    if request.state is RequestState.FAILED:
        return (
            f"Not done: {what}, but it failed: {request.outcome_detail} Your account was not "
            "changed; the help desk has been told."
        )
    if request.state is RequestState.UNKNOWN:
        return (
            f"Unclear: {what}, but twokey could not confirm whether it happened. Security has "
            f"been told; if you did not ask for this, contact them now.{dispute}"
        )
    return (
        f"Interrupted: {what}, but it was interrupted and may or may not have happened. It will "
        f"not be re-run; security has been told.{dispute}"
    )


def ended_how(request: Request) -> str:
    """How an execution that did not simply complete ended, after "Request TK-...": ."""
    return {
        RequestState.UNKNOWN: "could not be confirmed",
        RequestState.INTERRUPTED: "was interrupted",
    }.get(request.state, "failed")


def claim_lost(outcome: str) -> str:
    return (
        f"the identity provider answered {outcome}, but the database had lost the record of "
        "this execution (a restart from a snapshot or a failover); it is recorded as "
        "interrupted and will NOT be re-run. Check the account in the identity provider"
    )


def ran_twice_refused(outcome: str) -> str:
    return (
        f"it had already been run by twokey ({outcome}) but the database lost that record and "
        "offered it again; it was NOT run twice and is recorded as interrupted. Check the "
        "account in the identity provider"
    )


def answered_late(outcome: str, final: RequestState) -> str:
    return (
        f"the identity provider answered {outcome} after the request had ended as "
        f"{final.value}: check the account in the identity provider"
    )


def settled_late(outcome: str, detail: str, final: RequestState) -> str:
    return (
        f"an execution twokey could not record at the time ({outcome}: {detail}) is now "
        f"recorded; the request is {final.value}. Check the account in the identity provider"
    )


def unrecorded_refusal(request: Request, outcome: str) -> str:
    return (
        f"The identity provider was asked to {request.action.label} for {request.target_name} "
        f"and the change was carried out as far as twokey knows ({outcome}), but twokey lost "
        "its database and could not record it. Do not open it again: security has been told, "
        "and it will be recorded as interrupted when the database is back."
    )


def unrecorded_alert(outcome: str) -> str:
    return (
        f"the identity provider answered {outcome}, but twokey could not record the result "
        "(database unreachable); it will be recorded as interrupted when the database is back "
        "and will NOT be re-run. Check the account in the identity provider"
    )


def unrecorded_owner(request: Request, outcome: str) -> str:
    return (
        f"twokey asked the identity provider to {request.action.label} for "
        f"{request.target_name} (request {request.id}, ticket {request.ticket}); it answered "
        f"{outcome}. Security has been told; if you did not ask for this, contact them now."
    )


UNDELIVERED_TO_OWNER = (
    "a one-time secret was issued, but it could not be delivered to the owner; it was not "
    "kept. Open a new request to issue another."
)


HANDOVER_LOST = (
    "the change was made and a one-time secret issued, but the twokey process holding it "
    "stopped before handing it to the owner; it was never stored, so nobody has it. Open a new "
    "request to issue another"
)


def secret_lost_owner(request: Request) -> str:
    """The owner's message when the secret of a change to their account was lost."""
    return (
        f"Request {request.id} ({request.action.label}) was carried out, but twokey stopped "
        "before it could give you the new one-time secret (a temporary password or key), and "
        "it was never stored: nobody has it. Ask the help desk for a new request to issue "
        "another; security has been told."
    )


def waiting_again(request: Request, why: str) -> str:
    waits = ", ".join(request.waiting_for(request.last_change_at)) or "nothing more"
    return f"Request {request.id} is waiting again: {why} It waits for {waits}."


# ---- after the change ---------------------------------------------------------------------------

DISPUTED = (
    "Thank you. Security has been alerted and the account is flagged; you may be contacted shortly."
)
DISPUTED_RUNNING = (
    "Thank you. The change was already being made when you answered, so it could not be "
    "stopped; security has been alerted and the account is flagged. You may be contacted "
    "shortly."
)
DISPUTED_WHILE_RUNNING = (
    'the owner says "this wasn\'t me" while the change is being made: security incident; '
    "the account is flagged"
)


STOPPED_AS_FLAGGED = (
    "stopped before it ran: the account was flagged after it was opened (its owner said a "
    "request was not theirs), so it no longer has the tier the policy now gives it"
)


def stopped_as_flagged(request: Request) -> str:
    """The agent's word when a request on an account flagged since it opened is stopped."""
    return (
        f"Request {request.id} was stopped before it ran: the account was flagged after it was "
        "opened (its owner said a request was not theirs). Nothing was changed; open a new "
        "request if it is still needed (it will need the stricter tier)."
    )


def disputed_change_ended(request: Request) -> str:
    """The change its owner disputed while it ran has ended."""
    return f"the change its owner disputed while it ran has ended: {phrase(request.state)}"


def auto_revoke_failed(detail: str) -> str:
    return (
        f"the automatic sign-out after the dispute did not complete ({detail}): sign the "
        "account out of every session by hand"
    )


def review_not_finished(request: Request) -> str:
    return (
        f"Request {request.id} is still {phrase(request.state)}: a break-glass use is reviewed "
        "once it has finished. Try again when it is done."
    )


def closed_by_operator(actor: str, note: str) -> str:
    return (
        f"break-glass review closed from the command line by {actor}, not by a security "
        f"reviewer; note: {note}"
    )


# ---- step-up verification of the owner (app/domain/stepup.py) ---------------------------------

BREAK_GLASS_HINT = (
    "If the change is urgent, verify the owner in person (or by a call to a number of record) "
    "and use break-glass."
)


def step_up_code_sent(request: Request, masked: str, minutes: int, tries: int) -> str:
    """The owner's DM: what happens next, plainly."""
    return (
        f"Request {request.id} ({request.action.label}) needs one more check that it is really "
        f"you. We emailed a one-time code to your recovery address {masked}. Type "
        f"`verify {request.id} <code>` here. The code works for {minutes} minutes and "
        f"{tries} tries. Didn't ask for this? Answer \"This wasn't me\"."
    )


def step_up_code_texted(request: Request, masked: str, minutes: int, tries: int) -> str:
    """The owner's DM when the code went by text message: where (masked), and what to type."""
    return (
        f"Request {request.id} ({request.action.label}) needs one more check that it is really "
        f"you. We texted a one-time code to your phone of record {masked}; type "
        f"`verify {request.id} <code>` here. The code works for {minutes} minutes and "
        f"{tries} tries. Didn't ask for this? Answer \"This wasn't me\"."
    )


def code_not_taken(texted: bool) -> str:
    """Why a code step-up went on to the next verifier (said to the requester with the rest)."""
    if texted:
        return "the SMS gateway did not take the one-time code"
    return "the mail server did not take the one-time code"


def _not_sent(request: Request, texted: bool) -> str:
    if texted:
        return (
            f"No code was texted for request {request.id}: the SMS gateway did not take the "
            "message, so nothing was sent"
        )
    return (
        f"No code was emailed for request {request.id}: the mail server did not take the "
        "message, so nothing was sent"
    )


def code_not_sent_owner(request: Request, texted: bool, withdrawn: bool, minutes: int) -> str:
    """To the owner: no code went out, so there is nothing to type; a withdrawn code counts
    for nothing against them and a new one may be asked for at once."""
    if withdrawn:
        return (
            f"{_not_sent(request, texted)} and nothing counts against you. Type "
            f"`verify {request.id}` to ask for a new code now; if that fails too, tell the "
            "help desk."
        )
    return (
        f"{_not_sent(request, texted)}. Type `verify {request.id}` in {minutes} minutes for "
        "a new code; if that fails too, tell the help desk."
    )


def code_not_sent_requester(request: Request, texted: bool, withdrawn: bool, minutes: int) -> str:
    """To the requester: no code reached the owner, so the request stays blocked, and what
    happens next."""
    when = "at once" if withdrawn else f"in {minutes} minutes"
    return (
        f"{_not_sent(request, texted)} and the request stays blocked. The owner can ask for a "
        f"new code {when} with `verify {request.id}`. {BREAK_GLASS_HINT}"
    )


def step_up_requester_waiting(request: Request, how: str) -> str:
    return f"Request {request.id}: waiting for the owner to verify themselves with {how}."


def step_up_unavailable(request: Request, why: str) -> str:
    """To the requester: the step-up cannot start, so the request stays blocked."""
    return (
        f"Request {request.id} needs the owner to verify themselves on a second channel, but "
        f"{why}. It stays blocked. {BREAK_GLASS_HINT}"
    )


def code_wrong(tries_left: str) -> str:
    return f"That code is not right. Tries left for this code: {tries_left}."


def code_failed(request: Request, why: str) -> str:
    """To the owner: this code no longer works."""
    what = "ran out" if why == "timeout" else "was typed wrong too often"
    return (
        f"The code for request {request.id} {what} and no longer works. Type "
        f"`verify {request.id}` for a new one."
    )


def no_code(request: Request) -> str:
    return (
        f"No code is waiting for request {request.id} (none was sent, it was used, or it ran "
        f"out). Type `verify {request.id}` for a new one."
    )


ALREADY_VERIFIED = "You are already verified for this request."
STEP_UP_NOT_NEEDED = "This request needs no verification."
BAD_CODE_FORMAT = (
    "A code is the 8 digits from the email or text message, e.g. `verify TK-4K7M2P9Q 12345678`."
)


def step_up_failed_requester(request: Request, failures: int, limit: int) -> str:
    return (
        f"Request {request.id}: the owner's verification failed ({failures} of {limit} allowed). "
        f"It stays blocked. {BREAK_GLASS_HINT}"
    )


def step_up_locked(request: Request) -> str:
    """To the owner and the requester: failed as often as allowed; the account is flagged."""
    return (
        f"Request {request.id}: verification failed too often, so it can no longer pass and the "
        f"account is flagged for security review. {BREAK_GLASS_HINT}"
    )


NOT_THE_MANAGER = (
    "Only the owner's manager of record, asked by twokey for this request, can answer this; "
    "never its requester or an approver of it."
)
NOTHING_TO_ATTEST = "This request is not waiting for a manager's confirmation."
MANAGER_DENIED_ALERT = (
    "the owner's manager did not confirm it with the owner; the request stays blocked"
)


def manager_will_call(request: Request, manager_name: str) -> str:
    return (
        f"Request {request.id} ({request.action.label}) needs one more check that it is really "
        f"you: your manager {manager_name} is asked to confirm it with you by phone or in "
        "person. Expect their call. Didn't ask for this? Answer \"This wasn't me\"."
    )


def manager_unreachable_owner(request: Request, manager_name: str) -> str:
    """To the owner when the manager's card reached no chat: no call is coming yet."""
    return (
        f"Request {request.id} ({request.action.label}) needs one more check that it is really "
        f"you: your manager {manager_name} must confirm it with you, but twokey could not reach "
        "them in chat, so nobody is calling you about it yet. Once they have opened twokey, "
        f"type `verify {request.id}` to ask them again. Didn't ask for this? Answer \"This "
        "wasn't me\"."
    )


def manager_unreachable_requester(request: Request, manager_name: str) -> str:
    """To the requester: the manager's check cannot happen yet, so the request stays blocked."""
    return (
        f"Request {request.id} needs the owner's manager {manager_name} to confirm it with the "
        "owner, but twokey could not reach them in chat (they may never have opened twokey). "
        f"It stays blocked. Once they have, the owner can type `verify {request.id}` to ask "
        f"them again. {BREAK_GLASS_HINT}"
    )


def manager_denied(request: Request) -> str:
    return (
        f"Recorded: you did not confirm request {request.id}. It stays blocked and security "
        "has been told."
    )


PUSH_REJECTED_ALERT = "the owner's phone rejected the verification push; the request stays blocked"


def push_sent(request: Request, app: str) -> str:
    """The owner's DM: what happens next, plainly."""
    return (
        f"Request {request.id} ({request.action.label}) needs one more check that it is really "
        f"you: approve the push from {app} on your phone now. Didn't ask for this? Deny "
        'the push and answer "This wasn\'t me".'
    )


def push_passed(request: Request) -> str:
    return f"Request {request.id}: the owner approved the push on their phone."


def push_failed(request: Request, why: str) -> str:
    what = "was denied on the phone" if why == "rejected" else "was not answered in time"
    return (
        f"The push for request {request.id} {what}, so the request stays blocked. Type "
        f"`verify {request.id}` to get a new push. {BREAK_GLASS_HINT}"
    )


def push_unavailable(request: Request, detail: str) -> str:
    return (
        f"No push could be sent for request {request.id} ({detail}). It stays blocked. "
        f"{BREAK_GLASS_HINT}"
    )


def review_refused(who: str) -> str:
    """To security: someone without the reviewer role tried to close a break-glass review."""
    return f"{who} tried to close this break-glass review without the security role (refused)."


def push_abandoned_owner(request: Request) -> str:
    """To the owner: the push on their phone no longer counts, and how to get a new one."""
    return (
        f"twokey restarted while waiting for your answer to the push for request {request.id}: "
        "that push no longer counts (approving it now changes nothing). Type "
        f"`verify {request.id}` for a new one."
    )


def push_abandoned_requester(request: Request) -> str:
    return (
        f"Request {request.id}: twokey restarted while waiting for the owner's push, so it "
        f"counts for nothing. The owner can ask for a new one with `verify {request.id}`; it "
        "stays blocked until then."
    )


def step_up_in_progress(request: Request) -> str:
    return (
        f"Request {request.id} is still waiting for the last check (a push or your manager's "
        "answer); ask again in a few minutes."
    )


def step_up_restarted(request: Request) -> str:
    return {
        "email_code": "A new code is on its way to your recovery email.",
        "sms_code": "A new code is on its way to your phone of record by text message.",
        "manager": "Your manager is asked again to confirm it with you.",
        "okta_push": "A new push is on its way to Okta Verify on your phone.",
        "duo_push": "A new Duo Push is on its way to your phone.",
    }.get(request.step_up_verifier, "The check is started again.")


APPROVER_STEP_UP_UNAVAILABLE = (
    "This request needs approvers to verify themselves with their identity provider, and that "
    "cannot be done here right now, so your approval does not count. Tell the twokey operators."
)


def approver_push_sent(request: Request, app: str = "your authenticator app") -> str:
    return (
        f"Your approval of {request.id} counts once you approve the push from {app} on "
        "your phone (now, before the approval expires)."
    )


def approver_step_up_failed(request: Request, why: str) -> str:
    what = {
        "late": "came after your approval expired",
        "rejected": "was denied on your phone",
        "timeout": "was not answered in time",
    }.get(why, "could not be sent")
    return (
        f"The push for your approval of {request.id} {what}, so your approval does not count. "
        "Approve again to get a new push."
    )


def approver_link_sent(request: Request, url: str) -> str:
    """The approver's own reply (never the card): the link signs only them in."""
    return (
        f"Your approval of {request.id} counts once you sign in again at your identity "
        f"provider, now, before the approval expires: {url} (it works once, for a few minutes; "
        "approve again for a new one)."
    )


def approver_signed_in(request: Request, name: str) -> str:
    return f"Thank you, {name}: you signed in again, so your approval of {request.id} counts now."


def approver_signin_wrong_person(request_id: str, name: str) -> str:
    return (
        f"This link was for {name}, and the identity provider signed in someone else, so "
        f"nothing changed on {request_id}. {name} must sign in as themselves: approve again in "
        "chat for a new link."
    )


def approver_signin_wrong_person_alert(name: str) -> str:
    """Security's alert: a chat session approved, and another person signed in for it."""
    return (
        f"someone other than {name} signed in through {name}'s single-use approval link; the "
        "approval still waits and does not count. Check with them whether their chat account "
        "or the link was taken"
    )


def approver_disowned_alert(name: str) -> str:
    """Security's alert: the approver says the approval made from their chat was not theirs."""
    return (
        f"{name} opened their sign-in link and said they did not approve this; the approval "
        f"does not count. Someone else may be using {name}'s chat account: check their "
        "sessions with them"
    )


def approver_signin_refused(request: Request, code: str) -> str:
    """A sign-in that came back when the approval no longer waited for it."""
    if code == "LATE":
        return (
            f"Your approval of {request.id} expired before you signed in again, so it does not "
            "count. Approve again in chat if the request is still open."
        )
    if request.state.is_final:
        return f"Request {request.id} is already {phrase(request.state)}; nothing changed."
    return (
        f"Your approval of {request.id} is not waiting for a sign-in (already verified, or "
        "dropped), so nothing changed. Approve again in chat for a new link if it is needed."
    )
