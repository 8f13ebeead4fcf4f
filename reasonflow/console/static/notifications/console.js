// The notification console (templates/console/console.html): log in over REST, watch the
// user's event stream through client.js, and drive the emails API (PROTOCOL §4) with buttons.

import { NotificationClient } from "./client.js";

const API = "/api/v1/";
const WS_URL = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/notifications/ws`;
const TOKENS_KEY = "reasonflow.console.tokens";
const FEED_LIMIT = 200;
// How many of the newest stored events the feed starts with (REST history, PROTOCOL §3).
const HISTORY_SIZE = 50;
// Toasts visible at once; older ones give way (the dock sits beside the feed, never on it).
const TOAST_LIMIT = 3;
const TOASTS = {
  email_received: (d) => ["New email", d.subject || "(no subject)"],
  draft_ready: (d) => ["Draft ready", d.requires_approval ? "Waiting for your approval" : "Ready to send"],
  email_sent: () => ["Email sent", "The reply was accepted by the mail transport"],
};
// How each event moves the badges; the REST counts behind them are in loadCounts().
const BADGE_DELTAS = {
  email_received: { unread: +1 },
  draft_ready: { drafts: +1 },
  draft_approved: { drafts: -1 },
  draft_rejected: { drafts: -1 },
};

const $ = (id) => document.getElementById(id);
const state = {
  tokens: null,
  client: null,
  counts: { unread: null, drafts: null },
  // Events with an id up to this one are already inside the REST counts.
  countedThrough: null,
  countdown: null,
  // The feed's rows by event id: an event shows once, whether it came from the history, a
  // replay or live, and in id order whatever order those arrive in.
  rows: new Map(),
  // The server's newest event id at this page's first `connected`: events up to it are
  // history (shown, not announced), newer ones are news (toasts, badges).
  historyThrough: null,
};

// --- tokens and REST -----------------------------------------------------------------------

function loadTokens() {
  try {
    return JSON.parse(sessionStorage.getItem(TOKENS_KEY));
  } catch {
    return null;
  }
}

function saveTokens(tokens) {
  state.tokens = tokens;
  if (tokens) sessionStorage.setItem(TOKENS_KEY, JSON.stringify(tokens));
  else sessionStorage.removeItem(TOKENS_KEY);
}

function userIdOf(access) {
  try {
    const part = access.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).user_id;
  } catch {
    return null;
  }
}

async function request(method, path, body, { auth = true, retry = true } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (auth && state.tokens) headers.Authorization = `Bearer ${state.tokens.access}`;
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && auth && retry && state.tokens) {
    await refreshAccess();
    return request(method, path, body, { auth, retry: false });
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text.slice(0, 200) };
  }
  if (!response.ok) {
    const error = new Error(describeError(response.status, data));
    error.status = response.status;
    throw error;
  }
  return data;
}

function describeError(status, data) {
  if (data && typeof data === "object") {
    if (data.detail) return `${status}: ${data.detail}`;
    const [field, messages] = Object.entries(data)[0] || [];
    if (field) return `${status}: ${field}: ${[].concat(messages).join(" ")}`;
  }
  return `HTTP ${status}`;
}

/** The client's getToken(): a new access token from the refresh token (rotated). */
async function refreshAccess() {
  if (!state.tokens?.refresh) throw new Error("not logged in");
  const data = await request("POST", "auth/refresh", { refresh: state.tokens.refresh }, { auth: false });
  saveTokens({ ...state.tokens, access: data.access, refresh: data.refresh || state.tokens.refresh });
  return data.access;
}

// --- connection state ----------------------------------------------------------------------

function showState(change) {
  const el = $("state");
  clearInterval(state.countdown);
  el.className = `state state-${change.state}`;
  el.dataset.state = change.state;
  // Which transport carries the events: the WebSocket, or the event stream (SSE) where a
  // proxy or the network blocks WebSocket upgrades.
  el.dataset.transport = change.transport;
  el.title = change.transport === "sse" ? "events over server-sent events" : "events over WebSocket";
  const labels = {
    idle: "signed out",
    connecting: "connecting…",
    connected: change.transport === "sse" ? "connected · SSE" : "connected",
    offline: "offline: waiting for the network",
    auth_failed: "auth failed",
    closed: "signed out",
  };
  if (change.state === "reconnecting") {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((change.retryAt - Date.now()) / 1000));
      el.textContent = `reconnecting in ${seconds} s`;
    };
    tick();
    state.countdown = setInterval(tick, 250);
  } else {
    el.textContent = labels[change.state] || change.state;
  }
  if (change.state === "auth_failed") {
    showLogin("Your session ended: log in again.");
  }
}

// --- badges --------------------------------------------------------------------------------

async function countOf(path) {
  const data = await request("GET", path);
  return typeof data?.count === "number" ? data.count : Array.isArray(data) ? data.length : 0;
}

async function loadCounts(throughId) {
  state.countedThrough = throughId;
  try {
    const [unread, drafts] = await Promise.all([
      countOf("emails/?unread=true&page_size=1"),
      countOf("drafts/?status=pending&page_size=1"),
    ]);
    setCount("unread", unread);
    setCount("drafts", drafts);
  } catch (error) {
    setActionStatus(`Counts unavailable (${error.message})`, true);
  }
}

function setCount(name, value) {
  state.counts[name] = value;
  const el = $(name === "unread" ? "badge-unread" : "badge-drafts");
  el.textContent = value === null ? "–" : String(value);
  el.dataset.count = value === null ? "" : String(value);
  const box = el.parentElement;
  box.classList.remove("bump");
  void box.offsetWidth; // restart the animation
  box.classList.add("bump");
}

function applyBadges(event) {
  const deltas = BADGE_DELTAS[event.type];
  if (!deltas || state.countedThrough === null || event.id <= state.countedThrough) return;
  for (const [name, delta] of Object.entries(deltas)) {
    if (state.counts[name] !== null) setCount(name, Math.max(0, state.counts[name] + delta));
  }
}

// --- feed, toasts, jobs --------------------------------------------------------------------

function summary(event) {
  const d = event.data || {};
  switch (event.type) {
    case "email_received":
      return `${d.subject || "(no subject)"} — ${d.sender || ""}`;
    case "email_classified":
      return `${d.classification} (${Math.round((d.confidence || 0) * 100)}%)`;
    case "draft_ready":
      return d.requires_approval ? "needs approval" : "ready";
    case "draft_rejected":
      return d.reason ? `reason: ${d.reason}` : "rejected";
    case "batch_progress":
      return `${d.processed}/${d.total} (${d.percentage}%)`;
    case "batch_complete":
      return `${d.status}: ${d.succeeded} ok, ${d.failed} failed`;
    default:
      return d.email_id ? `email ${String(d.email_id).slice(0, 8)}` : "";
  }
}

function feedRow(cells, className = "") {
  const li = document.createElement("li");
  li.className = className;
  for (const [cls, text] of cells) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    li.append(span);
  }
  return li;
}

/** Put `li` into the feed at its place, newest (largest `order`) first. */
function placeInFeed(li, order) {
  const feed = $("feed");
  feed.querySelector(".empty")?.remove();
  li.dataset.order = String(order);
  const next = [...feed.children].find((row) => Number(row.dataset.order) < order);
  feed.insertBefore(li, next || null);
  while (feed.children.length > FEED_LIMIT) {
    const oldest = feed.lastElementChild;
    if (oldest.dataset.eventId) state.rows.delete(Number(oldest.dataset.eventId));
    oldest.remove();
  }
}

function showFeedPlaceholder(text) {
  const feed = $("feed");
  if (feed.querySelector("[data-order]")) return;
  const li = document.createElement("li");
  li.className = "empty";
  li.textContent = text;
  feed.replaceChildren(li);
}

function timeOf(timestamp) {
  const when = new Date(timestamp);
  const time = when.toLocaleTimeString();
  return when.toDateString() === new Date().toDateString()
    ? time
    : `${when.toLocaleDateString(undefined, { month: "short", day: "numeric" })} ${time}`;
}

/** Show `event` in the feed unless it is there already; true when it was new to the feed. */
function addEvent(event) {
  if (state.rows.has(event.id)) return false;
  const li = feedRow([
    ["id", `#${event.id}`],
    [`type type-${event.type}`, event.type],
    ["summary", summary(event)],
    ["time", timeOf(event.timestamp)],
  ]);
  li.dataset.eventId = String(event.id);
  li.dataset.type = event.type;
  state.rows.set(event.id, li);
  placeInFeed(li, event.id);
  if (!li.isConnected) state.rows.delete(event.id); // older than everything in a full feed
  $("feed-count").textContent = `(${state.rows.size})`;
  return true;
}

/** A note sits after the events it follows (`afterId`), before any newer one. */
function addNote(text, afterId) {
  placeInFeed(feedRow([["note-text", text]], "note"), afterId + 0.5);
}

function toast(title, text) {
  const el = document.createElement("div");
  el.className = "toast";
  const strong = document.createElement("strong");
  strong.textContent = title;
  const span = document.createElement("span");
  span.textContent = text;
  el.append(strong, span);
  const dock = $("toasts");
  dock.prepend(el);
  while (dock.children.length > TOAST_LIMIT) dock.lastElementChild.remove();
  setTimeout(() => el.remove(), 6000);
}

function jobRow(jobId) {
  const jobs = $("jobs");
  jobs.querySelector(".empty")?.remove();
  let li = jobs.querySelector(`[data-job-id="${CSS.escape(jobId)}"]`);
  if (!li) {
    li = document.createElement("li");
    li.dataset.jobId = jobId;
    li.innerHTML =
      '<div class="job-head"><span class="job-id"></span><span class="job-status"></span></div>' +
      '<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div></div></div>';
    li.querySelector(".job-id").textContent = `job ${jobId.slice(0, 8)}`;
    jobs.prepend(li);
  }
  return li;
}

function showJob(jobId, percentage, label, final = null) {
  const li = jobRow(jobId);
  li.querySelector(".progress > div").style.width = `${percentage}%`;
  li.querySelector(".progress").setAttribute("aria-valuenow", String(percentage));
  li.querySelector(".job-status").textContent = label;
  if (final) {
    li.classList.add(final === "completed" ? "job-done" : `job-${final}`);
    li.dataset.final = final;
  }
}

/** Move a job's row to what `event` says, unless a later event of that job is already shown
 * (history can arrive after live events). */
function applyJob(event) {
  if (event.type !== "batch_progress" && event.type !== "batch_complete") return;
  const d = event.data || {};
  const li = jobRow(String(d.job_id));
  if (li.dataset.final || Number(li.dataset.eventId || 0) > event.id) return;
  li.dataset.eventId = String(event.id);
  if (event.type === "batch_progress") {
    showJob(d.job_id, d.percentage, `${d.processed}/${d.total}`);
  } else {
    const percentage = d.status === "completed" ? 100 : Number(li.querySelector(".progress").getAttribute("aria-valuenow") || 0);
    showJob(d.job_id, percentage, `${d.status} · ${d.succeeded} ok, ${d.failed} failed`, d.status);
  }
}

function onEvent(event) {
  if (!addEvent(event)) return; // already shown (from the history)
  applyJob(event);
  // A replay right after a reload is history too: no toast for what happened before the page.
  if (state.historyThrough !== null && event.id <= state.historyThrough) return;
  applyBadges(event);
  const makeToast = TOASTS[event.type];
  if (makeToast) toast(...makeToast(event.data || {}));
}

/** Fill the feed and the job rows with the newest stored events, quietly (no toasts; the
 * badges come from the REST counts). Live events shown meanwhile stay, each id once. */
async function loadHistory(throughId) {
  const client = state.client;
  const feed = $("feed");
  feed.dataset.history = "loading";
  if (throughId > 0) {
    showFeedPlaceholder("Loading recent events…");
    try {
      const after = Math.max(0, throughId - HISTORY_SIZE);
      const page = await request("GET", `notifications/events?after=${after}&limit=${HISTORY_SIZE}`);
      if (state.client !== client) return; // logged out (or in as someone else) meanwhile
      for (const event of page?.events || []) {
        if (addEvent(event)) applyJob(event);
      }
    } catch (error) {
      setActionStatus(`History unavailable (${error.message})`, true);
    }
  }
  feed.dataset.history = "loaded"; // for the browser tests, and a stylesheet that cares
  showFeedPlaceholder("No events yet: sync mail or send a test event.");
}

// --- actions -------------------------------------------------------------------------------

function setActionStatus(text, bad = false) {
  const el = $("action-status");
  el.textContent = text;
  el.classList.toggle("bad", bad);
}

async function newest(path) {
  const data = await request("GET", path);
  return (data?.results || data || [])[0] || null;
}

const ACTIONS = {
  async sync() {
    const data = await request("POST", "emails/sync");
    return `Sync stored ${data.received} new email${data.received === 1 ? "" : "s"}.`;
  },
  async process() {
    const email = await newest("emails/?status=pending&page_size=1");
    if (!email) return "No pending email to process: sync first.";
    const data = await request("POST", `emails/${email.id}/process`);
    return `Processed “${email.subject || "(no subject)"}”: ${data.classification || data.status}.`;
  },
  async approve() {
    const draft = await newest("drafts/?status=pending&page_size=1");
    if (!draft) return "No pending draft: process an email first.";
    await request("POST", `drafts/${draft.id}/approve`);
    return `Approved “${draft.subject || "draft"}”.`;
  },
  async reject() {
    const draft = await newest("drafts/?status=pending&page_size=1");
    if (!draft) return "No pending draft: process an email first.";
    await request("POST", `drafts/${draft.id}/reject`, { reason: "Rejected from the console" });
    return `Rejected “${draft.subject || "draft"}”.`;
  },
  async batch() {
    const pending = await request("GET", "emails/?status=pending&page_size=100");
    const ids = (pending?.results || []).map((email) => email.id);
    const job = ids.length
      ? await request("POST", "emails/batch/process", { email_ids: ids })
      : await request("POST", "emails/batch/sync");
    // With an in-process task backend the job may have finished (and its events arrived)
    // before this answer: never move a finished bar back.
    if (!jobRow(String(job.job_id)).dataset.final) {
      const percentage = job.total ? Math.floor((job.processed * 100) / job.total) : 0;
      showJob(String(job.job_id), percentage, job.status);
    }
    return ids.length ? `Batch job processing ${ids.length} emails started.` : "Batch sync job started.";
  },
  async test() {
    const type = $("test-type").value;
    const user = userIdOf(state.tokens.access);
    const data = await request("POST", "notifications/test", { user, type });
    return `Sent test event #${data.event.id} (${type}).`;
  },
};

async function runAction(button) {
  const name = button.dataset.action;
  button.disabled = true;
  setActionStatus("…");
  try {
    setActionStatus(await ACTIONS[name]());
  } catch (error) {
    const hint = error.status === 403 && name === "test" ? " (test events need a staff user)" : "";
    setActionStatus(`${button.textContent}: ${error.message}${hint}`, true);
  } finally {
    button.disabled = false;
  }
}

// --- session ---------------------------------------------------------------------------------

function showLogin(message = "") {
  // After auth_failed the client has stopped by itself; keep its state on the pill.
  if (state.client && state.client.state !== "auth_failed") state.client.close();
  state.client = null;
  $("app").hidden = true;
  $("login").hidden = false;
  $("who").hidden = true;
  $("logout").hidden = true;
  $("login-error").hidden = !message;
  $("login-error").textContent = message;
}

function startSession() {
  const userId = userIdOf(state.tokens.access);
  $("login").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = state.tokens.email || "";
  const client = new NotificationClient({
    url: WS_URL,
    token: state.tokens.access,
    getToken: refreshAccess,
    // Per user, so another login in this tab never resumes someone else's stream.
    storageKey: `reasonflow.notifications.lastEventId.${userId}`,
  });
  state.client = client;
  state.countedThrough = null;
  state.historyThrough = null;
  state.rows.clear();
  delete $("feed").dataset.history;
  $("feed-count").textContent = "";
  showFeedPlaceholder("Waiting for events…");
  $("jobs").innerHTML = '<li class="empty">No batch job yet.</li>';
  client.on("state", showState);
  client.on("*", onEvent);
  client.on("connected", (info) => {
    if (state.historyThrough === null) {
      // First connection of this page (login or reload): the feed starts from the stored
      // history, up to the server's newest id; anything newer is live news.
      state.historyThrough = info.last_event_id;
      loadHistory(info.last_event_id);
    }
    if (state.countedThrough === null || !info.recovered) {
      // First connection of this page, or events were lost: the REST counts are the truth,
      // and they already include every event up to the server's newest id.
      if (!info.recovered) {
        addNote("Some events were missed (older than the retention): state reloaded.", info.last_event_id);
      }
      loadCounts(info.last_event_id);
    }
  });
  window.__console = { client }; // for the browser tests and for curious humans
  client.connect().catch(() => {});
}

async function login(email, password) {
  await signIn(() => request("POST", "auth/login", { email, password }, { auth: false }), email);
}

async function signIn(obtainTokens, email) {
  $("login-error").hidden = true;
  try {
    const tokens = await obtainTokens();
    saveTokens({ access: tokens.access, refresh: tokens.refresh, email });
    startSession();
  } catch (error) {
    showLogin(error.status === 401 ? "Wrong email or password." : `Login failed (${error.message}).`);
  }
}

async function logout() {
  const tokens = state.tokens;
  state.client?.resetLastEventId();
  saveTokens(null);
  showLogin();
  showState({ state: "idle" });
  if (tokens?.refresh) {
    await request("POST", "auth/logout", { refresh: tokens.refresh }, { auth: false }).catch(() => {});
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("email").value.trim(), $("password").value);
});
// Development only: the server answers this button (DEBUG on) with the demo user's tokens, so
// no password is ever part of the page.
$("use-demo")?.addEventListener("click", (event) => {
  const email = event.currentTarget.dataset.email;
  signIn(() => request("POST", "auth/demo", {}, { auth: false }), email);
});
$("logout").addEventListener("click", logout);
for (const button of document.querySelectorAll("[data-action]")) {
  button.addEventListener("click", () => runAction(button));
}

state.tokens = loadTokens();
if (state.tokens?.access) startSession();
