// twokey playground page. Everything a person typed is put on the page with textContent (or
// rendered by the Adaptive Cards renderer as plain text): never innerHTML.
"use strict";

(function () {
  const PANES = ["agent", "owner", "approver"];
  const POLL_MS = 1000;
  const view = {
    setup: null,
    current: "",
    followed: "", // the request the pickers were last set for
    cards: { agent: "", owner: "", approver: "" },
    revealed: null,
    queued: 0, // refreshes waiting or running
    chain: Promise.resolve(null),
    listed: "",
  };

  const $ = (id) => document.getElementById(id);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return { ok: false, error: "twokey did not answer: is it still running?" };
    }
    try {
      return await response.json();
    } catch (err) {
      return { ok: false, error: "twokey answered " + response.status + " without JSON." };
    }
  }

  // ok: it was done (green); info: nothing changed, nothing refused; refused: twokey said no
  // without an error (e.g. "already denied"); error: refused with an error.
  const KINDS = { done: "ok", info: "info", refused: "refused" };

  function say(pane, result) {
    const box = $(pane + "-reply");
    box.textContent = result.ok ? result.message : result.error;
    box.dataset.kind = result.ok ? KINDS[result.kind] || "ok" : "error";
  }

  function clearReplies() {
    for (const pane of PANES) {
      $(pane + "-reply").textContent = "";
      delete $(pane + "-reply").dataset.kind;
    }
  }

  // ---- the Adaptive Cards renderer --------------------------------------------------------

  function hostConfig() {
    return new AdaptiveCards.HostConfig({
      fontFamily: "Segoe UI, Liberation Sans, Helvetica Neue, sans-serif",
      supportsInteractivity: true,
      actions: { maxActions: 5, actionsOrientation: "horizontal", showCard: { actionMode: "inline" } },
    });
  }

  // Teams reads TextBlocks as a Markdown subset; the card builders escaped every typed string
  // with backslashes so it stays literal there. Here text is shown as plain text, so drop the
  // escapes to show what Teams shows.
  const MARKDOWN_ESCAPE = /\\([!-\/:-@\[-`{-~])/g;

  function asTeamsShowsIt(node) {
    if (Array.isArray(node)) return node.map(asTeamsShowsIt);
    if (!node || typeof node !== "object") return node;
    const copy = {};
    for (const [key, value] of Object.entries(node)) {
      if (typeof value === "string" && (key === "text" || key === "title" || key === "value")) {
        copy[key] = node.type === "Input.Text" ? value : value.replace(MARKDOWN_ESCAPE, "$1");
      } else {
        copy[key] = asTeamsShowsIt(value);
      }
    }
    return copy;
  }

  function renderCard(pane, payload) {
    const key = JSON.stringify(payload || null);
    if (view.cards[pane] === key) return; // unchanged: keep what the person is typing
    view.cards[pane] = key;
    const host = $(pane + "-card");
    host.replaceChildren();
    if (!payload) return;
    const card = new AdaptiveCards.AdaptiveCard();
    card.hostConfig = hostConfig();
    card.onExecuteAction = (action) => press(pane, action);
    card.parse(asTeamsShowsIt(payload));
    const rendered = card.render();
    if (rendered) host.appendChild(rendered);
  }

  async function press(pane, action) {
    if (action.getJsonTypeName() !== "Action.Execute") return;
    const data = action.data || {};
    const body = { as: $(pane + "-as").value, button: String(data.button || "") };
    if (typeof data.reason === "string") body.reason = data.reason;
    say(pane, { ok: true, kind: "info", message: "…" });
    const result = await api("POST", "/playground/api/button", body);
    say(pane, result);
    await refresh();
  }

  // ---- setup -------------------------------------------------------------------------------

  function option(value, label) {
    const node = element("option", label);
    node.value = value;
    return node;
  }

  function personLabel(person) {
    const roles = person.roles.length ? " · " + person.roles.join(", ") : "";
    const off = person.disabled ? " · disabled" : "";
    return person.name + " (" + person.id + ")" + roles + off;
  }

  function fillSetup(setup) {
    view.setup = setup;
    $("connectors").textContent = setup.connectors.join(", ") || "no connector";
    for (const pane of PANES) {
      const picker = $(pane + "-as");
      picker.replaceChildren(...setup.people.map((p) => option(p.id, personLabel(p))));
      picker.value = setup.defaults[pane] || "";
      picker.addEventListener("change", () => {
        // A secret shown to the owner is never left on screen for whoever takes their pane.
        if (pane === "owner") forgetSecret();
        $(pane + "-reply").textContent = ""; // said to the person who had the pane
        delete $(pane + "-reply").dataset.kind;
        refresh();
      });
    }
    $("form-action").replaceChildren(...setup.actions.map((a) => option(a.value, a.value + " — " + a.label)));
    const targets = setup.people.map((p) => option("@" + p.id, p.name + " (@" + p.id + ")"));
    for (const n of setup.nhis) targets.push(option(n.id, n.name + " (" + n.id + ", owner " + n.owner + ")"));
    $("form-target").replaceChildren(...targets);
    $("form-target").value = "@" + (setup.defaults.owner || "");
    $("form-reason").replaceChildren(...setup.reason_codes.map((r) => option(r, r)));
    $("agent-command").title = setup.usage;
  }

  // ---- the agent ---------------------------------------------------------------------------

  async function opened(result) {
    if (result.ok && result.request) choose(result.request); // first: it clears old replies
    say("agent", result);
    await refresh();
  }

  async function sendCommand(event) {
    event.preventDefault();
    const text = $("agent-command").value;
    await opened(await api("POST", "/playground/api/command", { as: $("agent-as").value, text }));
  }

  async function sendForm(event) {
    event.preventDefault();
    const body = {
      as: $("agent-as").value,
      action: $("form-action").value,
      target: $("form-target").value,
      ticket: $("form-ticket").value,
      reason_code: $("form-reason").value,
      note: $("form-note").value,
    };
    await opened(await api("POST", "/playground/api/open", body));
  }

  // ---- the owner's one-time secret --------------------------------------------------------

  function showSecret(label, disputed) {
    const box = $("owner-secret");
    const mine = view.revealed && view.revealed.request === view.current &&
      view.revealed.owner === $("owner-as").value;
    const revealed = mine ? view.revealed : null;
    if (!label && !revealed) {
      box.hidden = true;
      return;
    }
    box.hidden = false;
    const button = $("owner-secret-reveal");
    if (revealed) {
      button.hidden = true;
      $("owner-secret-label").textContent = revealed.message;
      $("owner-secret-value").textContent = revealed.secret;
    } else if (disputed) {
      button.hidden = false;
      button.textContent = "Reveal the " + label + " anyway (shown once)";
      $("owner-secret-label").textContent =
        "You said this change was not yours: security has been alerted. The " + label +
        " it set may still work; reveal it only if security asks you to.";
      $("owner-secret-value").textContent = "";
    } else {
      button.hidden = false;
      button.textContent = "Reveal your " + label + " (shown once)";
      $("owner-secret-label").textContent = "Only you, the owner, receive it; the agent never sees it.";
      $("owner-secret-value").textContent = "";
    }
  }

  function forgetSecret() {
    view.revealed = null;
    $("owner-secret-value").textContent = "";
    showSecret(null);
  }

  async function revealSecret() {
    const body = { as: $("owner-as").value, request: view.current };
    const result = await api("POST", "/playground/api/secret", body);
    if (!result.ok) {
      say("owner", result);
      return;
    }
    view.revealed = {
      request: view.current,
      owner: body.as,
      message: result.message,
      secret: result.secret,
    };
    showSecret(null);
    await refresh(); // the reveal is in the audit trail now
  }

  // ---- the strip and the polling ----------------------------------------------------------

  function choose(requestId) {
    if (requestId === view.current) return;
    view.current = requestId;
    view.cards = { agent: "", owner: "", approver: "" };
    view.revealed = null;
    clearReplies(); // what was said about the earlier request is not about this one
  }

  // A newly chosen request sets each pane to the person it concerns: its agent, its owner of
  // record, an approver who may decide it. Picked by hand afterwards, a pane stays as picked.
  function follow(state) {
    view.followed = state.request.id;
    const people = new Set(view.setup.people.map((p) => p.id));
    const wanted = {
      agent: state.request.requester,
      owner: state.request.owner,
      approver: state.approvers[0],
    };
    for (const pane of PANES) {
      const id = wanted[pane];
      if (id && people.has(id)) $(pane + "-as").value = id;
    }
  }

  function fillMessages(listId, texts) {
    const list = $(listId);
    const shown = (texts || []).slice(-20);
    if (list.dataset.shown === JSON.stringify(shown)) return;
    list.dataset.shown = JSON.stringify(shown);
    list.replaceChildren(...shown.map((t) => element("li", t)));
  }

  function fillAudit(events) {
    const rows = events.map((e) => {
      const row = element("tr");
      row.dataset.kind = e.kind;
      const change = e.from || e.to ? (e.from || "·") + " → " + (e.to || "·") : "";
      for (const cell of [e.seq, e.at, e.kind, e.actor, e.role, change, e.reason, e.outcome, e.sealed ? "yes" : "not yet"]) {
        row.appendChild(element("td", cell));
      }
      return row;
    });
    $("audit-rows").replaceChildren(...rows);
  }

  function fillRequests(listed) {
    const select = $("request-select");
    const labels = listed.map((r) => [r.id, r.id + " · " + r.action + " for " + r.target + " · " +
      r.state + (r.disputed ? " (disputed)" : "")]);
    const key = JSON.stringify(labels);
    if (view.listed !== key) { // unchanged: leave an open drop-down alone
      view.listed = key;
      select.replaceChildren(...labels.map(([id, label]) => option(id, label)));
    }
    if (view.current) select.value = view.current;
  }

  function fillNote(pane, note) {
    const box = $(pane + "-note");
    box.textContent = note || "";
    box.hidden = !note;
  }

  function fillState(state) {
    const request = state.request;
    const badge = $("state");
    badge.textContent = request.words;
    badge.dataset.state = request.disputed ? "disputed" : request.state;
    const waiting = request.waiting_for.length ? " · waiting for " + request.waiting_for.join(", ") : "";
    const when = request.expires ? " · expires " + request.expires : " · finished " + request.finished;
    $("state-detail").textContent =
      request.action + " for " + request.target + " · ticket " + request.ticket + " · tier " +
      request.tier + waiting + when;
    for (const pane of PANES) fillNote(pane, state.notes[pane]);
    for (const pane of PANES) renderCard(pane, state.cards[pane]);
    for (const pane of PANES) fillMessages(pane + "-messages", state.messages[pane]);
    fillMessages("security-messages", state.messages.security);
    fillAudit(state.audit);
    showSecret(state.secret, request.disputed);
    for (const pane of ["owner", "approver"]) fillPhone(pane, (state.phone || {})[pane]);
  }

  // ---- the simulated phone: a push step-up, answered with Approve or Deny ----------------

  function fillPhone(pane, pushes) {
    const shown = pushes || [];
    const box = $(pane + "-phone");
    const key = JSON.stringify(shown);
    box.hidden = shown.length === 0;
    if (box.dataset.shown === key) return;
    box.dataset.shown = key;
    const items = shown.map((push) => {
      const item = element("li", null, "push");
      item.appendChild(element("p", push.app + ": is this you? Approve the sign-in for twokey request " + push.request + "."));
      for (const [label, approve] of [["Approve", true], ["Deny", false]]) {
        const button = element("button", label);
        button.type = "button";
        button.dataset.answer = approve ? "approve" : "deny";
        button.addEventListener("click", () => answerPush(pane, push.id, approve));
        item.appendChild(button);
      }
      return item;
    });
    $(pane + "-phone-pushes").replaceChildren(...items);
  }

  async function answerPush(pane, pushId, approve) {
    say(pane, { ok: true, kind: "info", message: "…" });
    const body = { as: $(pane + "-as").value, push: pushId, approve };
    const result = await api("POST", "/playground/api/push", body);
    say(pane, result);
    await refresh();
  }

  function stateQuery() {
    const query = new URLSearchParams({ request: view.current });
    for (const pane of PANES) query.set(pane, $(pane + "-as").value);
    return query.toString();
  }

  // One look at a time, in order: a slow answer fetched before a click can never land after
  // the answer fetched after it and put the old cards and audit rows back on screen.
  function refresh() {
    view.queued += 1;
    const run = view.chain.then(look).finally(() => { view.queued -= 1; });
    view.chain = run.catch(() => null);
    return run;
  }

  async function look() {
    const listed = await api("GET", "/playground/api/requests");
    if (listed.ok) {
      if (!view.current && listed.requests.length) choose(listed.requests[0].id);
      fillRequests(listed.requests);
    }
    if (!view.current) return null;
    let query = stateQuery();
    let state = await api("GET", "/playground/api/state?" + query);
    if (state.ok && state.request.id === view.current && view.followed !== view.current) {
      follow(state);
      query = stateQuery();
      state = await api("GET", "/playground/api/state?" + query);
    }
    // A request or a picker changed while asking: that change queued a newer look.
    if (state.ok && query === stateQuery()) fillState(state);
    return state;
  }

  function poll() {
    if (view.queued === 0) refresh();
  }

  async function start() {
    AdaptiveCards.AdaptiveCard.onProcessMarkdown = (text, result) => {
      result.didProcess = false; // plain text only: nothing typed becomes HTML
    };
    const setup = await api("GET", "/playground/api/setup");
    if (!setup.ok) {
      say("agent", setup);
      return;
    }
    fillSetup(setup);
    $("agent-command-form").addEventListener("submit", sendCommand);
    $("agent-open-form").addEventListener("submit", sendForm);
    $("owner-secret-reveal").addEventListener("click", revealSecret);
    $("request-select").addEventListener("change", (event) => {
      choose(event.target.value);
      refresh();
    });
    await refresh();
    document.body.dataset.ready = "yes";
    setInterval(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
