/**
 * ReasonFlow notification client: one connection per instance, speaking PROTOCOL.md §1–§3 over
 * a WebSocket, or §5 (server-sent events) where WebSocket upgrades are blocked.
 *
 * An ES module with no dependencies and no build step. It runs in browsers and in Node (20+ with
 * `--experimental-websocket`, or any WHATWG-style WebSocket passed as `options.WebSocket`).
 *
 * `transport: "auto"` (the default) uses the WebSocket; after two upgrades in a row fail
 * without a close frame (or the constructor throws) it falls back to the event stream, with a
 * single-use ticket and `EventSource` (an access token never goes in a URL), and tries the
 * WebSocket again every `websocketRetryInterval` ms. Resume ids carry across; `on(...)` and the
 * events are the same whatever the transport.
 *
 * @example
 * import { NotificationClient } from "/static/notifications/client.js";
 * const client = new NotificationClient({
 *   url: "wss://example.com/api/v1/notifications/ws",
 *   getToken: async () => (await refreshAccessToken()).access,
 * });
 * client.on("draft_ready", (event) => showToast(event.data.draft_id));
 * client.on("connected", ({ recovered }) => { if (!recovered) reloadStateOverRest(); });
 * await client.connect();
 * // later
 * client.close();
 */

/** Close codes of the contract (PROTOCOL §1). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  SERVER_ERROR: 4000,
  NO_TOKEN: 4001,
  INVALID_TOKEN: 4002,
  POLICY: 4008,
  FRAME_TOO_LARGE: 4009,
  TOO_SLOW: 4010,
  RESTARTING: 4012,
});

/** Closes after which retrying with the same token is pointless: get a new one first. */
const AUTH_CLOSE_CODES = new Set([CloseCode.NO_TOKEN, CloseCode.INVALID_TOKEN]);

/** The client closes a socket that stopped answering pings with this (application) code. */
const CLIENT_GAVE_UP = 4000;

/** auto: this many failed upgrades in a row mean something in between blocks WebSockets. */
const FAILED_UPGRADES_BEFORE_FALLBACK = 2;

/** The event types of the catalogue (PROTOCOL §2): EventSource dispatches by name. */
export const EVENT_TYPES = Object.freeze([
  "email_received",
  "email_classified",
  "draft_ready",
  "draft_approved",
  "draft_rejected",
  "email_sent",
  "batch_progress",
  "batch_complete",
]);

/**
 * The event stream's URL (PROTOCOL §5) next to a socket's: ws[s]://HOST/.../ws -> http[s]://HOST/.../stream.
 *
 * @param {string} url
 * @returns {string}
 */
export function streamUrlFor(url) {
  const parsed = new URL(url);
  parsed.protocol = parsed.protocol === "wss:" ? "https:" : parsed.protocol === "ws:" ? "http:" : parsed.protocol;
  parsed.pathname = parsed.pathname.replace(/\/ws\/?$/, "/stream");
  parsed.search = "";
  return parsed.toString();
}

/**
 * @typedef {"idle"|"connecting"|"connected"|"reconnecting"|"offline"|"auth_failed"|"closed"} ConnectionState
 *
 * @typedef {object} StateChange
 * @property {ConnectionState} state
 * @property {number} attempt      reconnect attempts since the last `connected` (0 when connected)
 * @property {number|null} delay   ms until the next attempt, while `reconnecting`
 * @property {number|null} retryAt `now()` value of the next attempt, while `reconnecting`
 * @property {number|null} code    close code that caused this state, when there was one
 * @property {"websocket"|"sse"} transport the transport in use (or being tried)
 *
 * @typedef {object} Envelope
 * @property {number} id           per-user event id (PROTOCOL §3)
 * @property {string} type         e.g. "email_received", "draft_ready", "batch_progress"
 * @property {string} user_id
 * @property {Record<string, unknown>} data
 * @property {string} timestamp    ISO-8601 UTC
 *
 * @typedef {object} Connected
 * @property {string} user_id
 * @property {number} last_event_id newest event id on the server
 * @property {boolean} recovered   false: events were lost (pruned or unknown id), reload over REST
 * @property {string|null} expires_at when the access token expires (server clock)
 * @property {boolean} resumed     true when this connection resumed after `last_event_id`
 *
 * @typedef {object} Timers
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 * @property {() => number} now    milliseconds, same clock as Date.now()
 *
 * @typedef {object} Network
 * @property {() => boolean} isOnline
 * @property {(onOnline: () => void) => () => void} onOnline subscribe; returns an unsubscribe
 *
 * @typedef {object} ClientOptions
 * @property {string} url                     ws[s]://host/api/v1/notifications/ws
 * @property {() => (string|Promise<string>)} [getToken] returns a fresh access token; called
 *   when there is no token yet, after a 4001/4002 close, and before the token expires.
 * @property {string} [token]                 an access token to start with
 * @property {number|null} [lastEventId]      resume after this id (default: from storage)
 * @property {Storage|null} [storage]         default: sessionStorage when it exists
 * @property {string} [storageKey]            default: "reasonflow.notifications.lastEventId"
 * @property {number} [backoffInitial]        ms, default 500
 * @property {number} [backoffMax]            ms, default 30000
 * @property {number} [pingInterval]          ms between pings, default 25000
 * @property {number} [pongTimeout]           ms to wait for the pong, default 10000
 * @property {number} [connectTimeout]        ms from opening to `connected`, default 15000
 * @property {number} [refreshBefore]         ms before expiry to refresh in-band, default 60000
 * @property {typeof WebSocket} [WebSocket]   default: globalThis.WebSocket
 * @property {Partial<Timers>} [timers]       default: the global timers and Date.now
 * @property {() => number} [random]          in [0, 1), default Math.random
 * @property {Network|null} [network]         default: navigator.onLine and window "online"
 * @property {"auto"|"websocket"|"sse"} [transport] default "auto"
 * @property {string} [streamUrl]             default: `url` with /ws turned into /stream
 * @property {typeof EventSource} [EventSource] default: globalThis.EventSource
 * @property {typeof fetch} [fetch]           for the stream's ticket; default globalThis.fetch
 * @property {number} [websocketRetryInterval] ms between WebSocket tries on the fallback, default 60000
 */

/**
 * Full-jitter exponential backoff: a uniform delay in [0, min(max, initial * 2^attempt)].
 *
 * @param {number} attempt 0 for the first retry
 * @param {{initial?: number, max?: number, random?: () => number}} [options]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, { initial = 500, max = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(max, initial * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * The ceiling backoffDelay() draws from for `attempt`.
 *
 * @param {number} attempt
 * @param {{initial?: number, max?: number}} [options]
 * @returns {number} milliseconds
 */
export function backoffCeiling(attempt, { initial = 500, max = 30000 } = {}) {
  return Math.min(max, initial * 2 ** Math.min(attempt, 30));
}

function defaultStorage() {
  try {
    return typeof sessionStorage === "undefined" ? null : sessionStorage;
  } catch {
    return null; // sessionStorage throws in sandboxed iframes with storage disabled
  }
}

function defaultNetwork() {
  if (typeof window === "undefined" || typeof navigator === "undefined") return null;
  return {
    isOnline: () => navigator.onLine !== false,
    onOnline: (fn) => {
      window.addEventListener("online", fn);
      return () => window.removeEventListener("online", fn);
    },
  };
}

/** A notification connection that reconnects, resumes and refreshes its token by itself. */
export class NotificationClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    if (!options || !options.url) throw new TypeError("NotificationClient needs options.url");
    if (!options.token && !options.getToken) {
      throw new TypeError("NotificationClient needs options.token or options.getToken");
    }
    this.url = options.url;
    this._getToken = options.getToken || null;
    this._token = options.token || null;
    this.transport = options.transport || "auto";
    if (!["auto", "websocket", "sse"].includes(this.transport)) {
      throw new TypeError(`transport must be "auto", "websocket" or "sse", not ${this.transport}`);
    }
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._EventSource = options.EventSource || globalThis.EventSource;
    this._fetch = options.fetch || globalThis.fetch?.bind(globalThis);
    if (!this._WebSocket && this.transport === "websocket") {
      throw new TypeError("no WebSocket implementation available");
    }
    if ((!this._EventSource || !this._fetch) && this.transport === "sse") {
      throw new TypeError("no EventSource or fetch implementation available");
    }
    this.streamUrl = options.streamUrl || streamUrlFor(this.url);
    this._websocketRetryInterval = options.websocketRetryInterval ?? 60000;
    /** @type {"websocket"|"sse"} the transport in use, or the next to try */
    this.activeTransport = this.transport === "sse" ? "sse" : "websocket";
    this._failedUpgrades = this._WebSocket ? 0 : FAILED_UPGRADES_BEFORE_FALLBACK;
    const timers = options.timers || {};
    this._timers = {
      setTimeout: timers.setTimeout || ((fn, ms) => setTimeout(fn, ms)),
      clearTimeout: timers.clearTimeout || ((handle) => clearTimeout(handle)),
      now: timers.now || (() => Date.now()),
    };
    this._random = options.random || Math.random;
    this._network = options.network === undefined ? defaultNetwork() : options.network;
    this._storage = options.storage === undefined ? defaultStorage() : options.storage;
    this._storageKey = options.storageKey || "reasonflow.notifications.lastEventId";
    this._backoff = { initial: options.backoffInitial ?? 500, max: options.backoffMax ?? 30000 };
    this._pingInterval = options.pingInterval ?? 25000;
    this._pongTimeout = options.pongTimeout ?? 10000;
    this._connectTimeout = options.connectTimeout ?? 15000;
    this._refreshBefore = options.refreshBefore ?? 60000;

    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @type {ConnectionState} */
    this.state = "idle";
    /** Reconnect attempts since the last `connected`. */
    this.attempt = 0;
    /** @type {Connected|null} the last `connected` message */
    this.connection = null;
    /** @type {number|null} */
    this.lastEventId = options.lastEventId ?? this._loadLastEventId();

    this._ws = null;
    this._source = null; // the EventSource while the event stream is in use
    this._live = false; // the current connection got its `connected`
    this._probe = null; // a WebSocket tried in the background while on the event stream
    this._timer = { retry: null, ping: null, pong: null, refresh: null, connect: null, probe: null };
    this._expiresAt = null;
    this._refreshing = false;
    this._authRetried = false;
    this._stopOnline = null;
    this._ready = null;
  }

  /**
   * Listen to events of one type, to every event ("*"), or to the client's own signals:
   * "connected" ({@link Connected}), "state" ({@link StateChange}), "error" (Error).
   *
   * @param {string} type
   * @param {(payload: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  /**
   * Remove a listener added with on().
   *
   * @param {string} type
   * @param {(payload: any) => void} listener
   */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * Start connecting (once). Resolves with the first `connected` message; rejects when
   * authentication fails for good or close() is called first. Reconnects go on by themselves.
   *
   * @returns {Promise<Connected>}
   */
  connect() {
    if (!this._ready) {
      this._ready = new Promise((resolve, reject) => {
        this._resolveReady = resolve;
        this._rejectReady = reject;
      });
      this._ready.catch(() => {}); // a caller that never awaits must not see an unhandled rejection
      this._open();
    }
    return this._ready;
  }

  /** Close the socket with 1000 and stop every timer; the client cannot be reused. */
  close() {
    if (this.state === "closed") return;
    this._clearTimers();
    this._stopOnline?.();
    this._stopOnline = null;
    this._dropSocket(CloseCode.NORMAL, "client closed");
    this._source?.close();
    this._source = null;
    this._probe?.close();
    this._probe = null;
    this._setState("closed");
    this._rejectReady?.(new Error("client closed"));
  }

  /** Forget the remembered event id (e.g. on logout): the next connection starts afresh. */
  resetLastEventId() {
    this.lastEventId = null;
    try {
      this._storage?.removeItem(this._storageKey);
    } catch {
      /* storage full or disabled: the id stays in memory only */
    }
  }

  // --- connection lifecycle ---------------------------------------------------------------

  async _open() {
    if (this.state === "closed" || this.state === "auth_failed") return;
    if (this._network && !this._network.isOnline()) {
      this._waitOnline();
      return;
    }
    this._setState("connecting");
    let token;
    try {
      token = await this._currentToken();
    } catch (error) {
      this._authFailed(error, null);
      return;
    }
    if (this.state === "closed") return;
    this.activeTransport = this._nextTransport();
    if (this.activeTransport === "sse") {
      this._openStream(token);
      return;
    }
    let ws;
    try {
      ws = new this._WebSocket(this.url);
    } catch (error) {
      // A page or extension that forbids WebSockets: no upgrade will ever work here.
      this._failedUpgrades = FAILED_UPGRADES_BEFORE_FALLBACK;
      this._emit("error", error);
      this._scheduleReconnect(null);
      return;
    }
    this._ws = ws;
    this._live = false;
    const sentLastEventId = this.lastEventId;
    this._timer.connect = this._timers.setTimeout(() => {
      if (this._ws === ws) this._abandon(ws, "connect timeout");
    }, this._connectTimeout);
    ws.onopen = () => {
      const first = { token };
      if (sentLastEventId !== null) first.last_event_id = sentLastEventId;
      ws.send(JSON.stringify(first));
    };
    ws.onmessage = (message) => {
      if (this._ws === ws) this._receive(ws, message.data, token, sentLastEventId);
    };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      if (event.code === 1006 && !this._live) this._failedUpgrades += 1;
      this._closed(event.code, token);
    };
    ws.onerror = () => {
      // Errors only come with abnormal closures (1006), and some implementations (Node 20's)
      // fire no close event after a failed handshake: decide here rather than wait.
      if (this._ws !== ws) return;
      if (!this._live) this._failedUpgrades += 1; // no close frame, never connected
      this._abandon(ws, "socket error");
    };
  }

  _nextTransport() {
    if (this.transport !== "auto") return this.transport;
    return this._failedUpgrades >= FAILED_UPGRADES_BEFORE_FALLBACK && this._EventSource && this._fetch
      ? "sse"
      : "websocket";
  }

  // --- the event stream (PROTOCOL §5) -------------------------------------------------------

  async _openStream(token) {
    let response;
    try {
      response = await this._fetch(`${this.streamUrl}/ticket`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}` },
      });
    } catch (error) {
      // HTTP does not work either: the server is away, not the WebSocket blocked.
      this._failedUpgrades = FAILED_UPGRADES_BEFORE_FALLBACK - 1;
      this._emit("error", error);
      this._scheduleReconnect(null);
      return;
    }
    if (this.state === "closed") return;
    if (response.status === 401) {
      this._closed(CloseCode.INVALID_TOKEN, token);
      return;
    }
    if (response.status !== 201) {
      this._scheduleReconnect(response.status === 429 ? CloseCode.POLICY : 1006);
      return;
    }
    let ticket;
    try {
      ({ ticket } = await response.json());
    } catch (error) {
      this._emit("error", error);
      this._scheduleReconnect(1006);
      return;
    }
    if (this.state === "closed") return;
    const sentLastEventId = this.lastEventId;
    const url = new URL(this.streamUrl);
    url.searchParams.set("ticket", ticket);
    if (sentLastEventId !== null) url.searchParams.set("last_event_id", String(sentLastEventId));
    const source = new this._EventSource(url.toString());
    this._source = source;
    this._live = false;
    this._timer.connect = this._timers.setTimeout(() => {
      if (this._source === source) this._dropStream(1006);
    }, this._connectTimeout);
    const handle = (handler) => (message) => {
      if (this._source !== source) return;
      let content;
      try {
        content = JSON.parse(message.data);
      } catch {
        return;
      }
      if (content && typeof content === "object") handler(content);
    };
    source.addEventListener(
      "connected",
      handle((content) => {
        this._connected(null, content, sentLastEventId);
        if (this.transport === "auto") this._scheduleProbe();
      }),
    );
    source.addEventListener(
      "token_expiring",
      handle(() => this._renewStream()),
    );
    source.addEventListener(
      "closed",
      handle((content) => this._dropStream(typeof content.code === "number" ? content.code : 1006, token)),
    );
    const deliver = handle((envelope) => {
      if (typeof envelope.id === "number") this._deliver(envelope);
    });
    for (const type of EVENT_TYPES) source.addEventListener(type, deliver);
    source.onmessage = deliver; // an event the server sent without a name
    source.onerror = () => {
      // EventSource would reconnect by itself, with the header-less URL and a used ticket:
      // stop it and reconnect as after a 1006 (a new ticket, the last id seen).
      if (this._source === source) this._dropStream(1006, token);
    };
  }

  /** Stop reading the stream and react to `code` as to a socket's close. */
  _dropStream(code, token = null) {
    const source = this._source;
    this._source = null;
    source?.close();
    this._closed(code, token);
  }

  async _renewStream() {
    // No in-band refresh over HTTP: get a new token and resume on a new stream at once.
    if (!this._getToken || this._refreshing) return;
    const source = this._source;
    this._refreshing = true;
    try {
      const token = await this._getToken();
      if (!token || this._source !== source) return;
      this._token = token;
      this._expiresAt = null;
      this._source = null;
      source.close();
      this._clearTimers();
      this._open();
    } catch (error) {
      this._emit("error", error); // the server closes 4002 at expiry; _retryAuth() follows
    } finally {
      this._refreshing = false;
    }
  }

  /** On the fallback, try a WebSocket now and then; once one opens, go back to it. */
  _scheduleProbe() {
    this._timers.clearTimeout(this._timer.probe);
    this._timer.probe = this._timers.setTimeout(() => {
      this._timer.probe = null;
      const source = this._source;
      if (!source || !this._WebSocket) return;
      let probe;
      try {
        probe = new this._WebSocket(this.url);
      } catch {
        this._scheduleProbe();
        return;
      }
      this._probe = probe;
      probe.onopen = () => {
        this._probe = null;
        probe.onclose = probe.onerror = null;
        probe.close(CloseCode.NORMAL, "probe");
        if (this._source !== source) return;
        this._failedUpgrades = 0;
        this._source = null;
        source.close();
        this._clearTimers();
        this._open(); // resumes from the last id the stream delivered
      };
      probe.onerror = probe.onclose = () => {
        probe.onopen = probe.onerror = probe.onclose = null;
        this._probe = null;
        if (this._source === source) this._scheduleProbe();
      };
    }, this._websocketRetryInterval);
  }

  async _currentToken() {
    const expiringSoon =
      this._expiresAt !== null && this._timers.now() >= this._expiresAt - this._refreshBefore;
    if (!this._token || (expiringSoon && this._getToken)) {
      if (!this._getToken) throw new Error("no token");
      const token = await this._getToken();
      if (!token) throw new Error("getToken() returned no token");
      this._token = token;
      this._expiresAt = null;
    }
    return this._token;
  }

  _receive(ws, raw, token, sentLastEventId) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return; // not ours to interpret; the protocol only sends JSON objects
    }
    if (!message || typeof message !== "object") return;
    switch (message.type) {
      case "connected":
        this._connected(ws, message, sentLastEventId);
        return;
      case "pong":
        this._timers.clearTimeout(this._timer.pong);
        this._timer.pong = null;
        return;
      case "token_expiring":
        this._refresh(ws);
        return;
      case "token_refreshed":
        this._setExpiry(ws, message.expires_at);
        return;
      default:
        if (typeof message.id === "number") this._deliver(message);
    }
  }

  _connected(ws, message, sentLastEventId) {
    this._live = true;
    if (ws !== null) this._failedUpgrades = 0;
    this._timers.clearTimeout(this._timer.connect);
    this._timer.connect = null;
    const resumed = sentLastEventId !== null && message.recovered !== false;
    if (!resumed) {
      // Nothing to replay (first connection) or events were lost: start from the server's newest.
      this._rememberLastEventId(message.last_event_id ?? 0);
    }
    this.attempt = 0;
    this._authRetried = false;
    /** @type {Connected} */
    const info = {
      user_id: message.user_id,
      last_event_id: message.last_event_id ?? 0,
      recovered: message.recovered !== false,
      expires_at: message.expires_at ?? null,
      resumed,
    };
    this.connection = info;
    this._setState("connected");
    if (ws !== null) {
      // Over the event stream the server pings and token_expiring triggers the renewal.
      this._setExpiry(ws, info.expires_at);
      this._schedulePing(ws);
    }
    this._resolveReady?.(info);
    this._emit("connected", info);
  }

  _deliver(envelope) {
    if (this.lastEventId !== null && envelope.id <= this.lastEventId) return; // duplicate
    this._rememberLastEventId(envelope.id);
    this._emit(envelope.type, envelope);
    this._emit("*", envelope);
  }

  _closed(code, token) {
    this._ws = null;
    this._live = false;
    this._clearTimers();
    if (this.state === "closed") return;
    if (AUTH_CLOSE_CODES.has(code)) {
      this._retryAuth(code, token);
    } else {
      this._scheduleReconnect(code);
    }
  }

  async _retryAuth(code, rejectedToken) {
    // Never retry with the token the server just rejected; and when a brand-new token is
    // rejected too, stop instead of looping on a getToken() that cannot help.
    if (!this._getToken || this._authRetried) {
      this._authFailed(new Error(`authentication failed (close ${code})`), code);
      return;
    }
    this._authRetried = true;
    this._setState("connecting", { code });
    let token;
    try {
      token = await this._getToken();
    } catch (error) {
      this._authFailed(error, code);
      return;
    }
    if (this.state === "closed") return;
    if (!token || token === rejectedToken) {
      this._authFailed(new Error("getToken() returned no new token"), code);
      return;
    }
    this._token = token;
    this._expiresAt = null;
    this._open();
  }

  _authFailed(error, code) {
    this._clearTimers();
    this._setState("auth_failed", { code });
    this._emit("error", error);
    this._rejectReady?.(error);
  }

  _scheduleReconnect(code) {
    if (this.state === "closed" || this.state === "auth_failed") return;
    if (this._network && !this._network.isOnline()) {
      this._waitOnline(code);
      return;
    }
    const delay = backoffDelay(this.attempt, { ...this._backoff, random: this._random });
    this.attempt += 1;
    this._setState("reconnecting", { code, delay, retryAt: this._timers.now() + delay });
    this._timer.retry = this._timers.setTimeout(() => {
      this._timer.retry = null;
      this._open();
    }, delay);
  }

  _waitOnline(code = null) {
    this._setState("offline", { code });
    if (this._stopOnline) return;
    this._stopOnline = this._network.onOnline(() => {
      this._stopOnline?.();
      this._stopOnline = null;
      if (this.state !== "offline") return;
      // Back online: try at once, the network (not the server) was the problem.
      this._open();
    });
  }

  // --- keepalive and token refresh --------------------------------------------------------

  _schedulePing(ws) {
    if (!this._pingInterval) return;
    this._timer.ping = this._timers.setTimeout(() => {
      this._timer.ping = null;
      if (this._ws !== ws) return;
      this._send(ws, { type: "ping" });
      this._timers.clearTimeout(this._timer.pong); // this ping's deadline covers the last one
      this._timer.pong = this._timers.setTimeout(() => {
        // No pong: the connection is dead even if the socket has not noticed yet.
        if (this._ws === ws) this._abandon(ws, "no pong");
      }, this._pongTimeout);
      this._schedulePing(ws);
    }, this._pingInterval);
  }

  _setExpiry(ws, expiresAt) {
    this._timers.clearTimeout(this._timer.refresh);
    this._timer.refresh = null;
    const at = expiresAt ? Date.parse(expiresAt) : NaN;
    this._expiresAt = Number.isNaN(at) ? null : at;
    if (this._expiresAt === null || !this._getToken) return;
    const wait = Math.max(0, this._expiresAt - this._refreshBefore - this._timers.now());
    this._timer.refresh = this._timers.setTimeout(() => {
      this._timer.refresh = null;
      this._refresh(ws);
    }, wait);
  }

  async _refresh(ws) {
    if (!this._getToken || this._refreshing || this._ws !== ws) return;
    this._refreshing = true;
    try {
      const token = await this._getToken();
      if (token && this._ws === ws) {
        this._token = token;
        this._send(ws, { type: "refresh", token });
      }
    } catch (error) {
      // The server closes 4002 at expiry; _retryAuth() then asks once more and stops if it fails.
      this._emit("error", error);
    } finally {
      this._refreshing = false;
    }
  }

  // --- helpers ----------------------------------------------------------------------------

  _send(ws, message) {
    try {
      ws.send(JSON.stringify(message));
    } catch {
      /* the close event will follow */
    }
  }

  /** Stop using `ws` without waiting for its close handshake, and react as to a 1006. */
  _abandon(ws, reason) {
    this._dropSocket(CLIENT_GAVE_UP, String(reason));
    this._closed(1006, null);
  }

  _dropSocket(code, reason) {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      if (ws.readyState <= 1) ws.close(code, reason);
    } catch {
      /* already closing */
    }
  }

  _clearTimers() {
    for (const name of Object.keys(this._timer)) {
      if (this._timer[name] !== null) this._timers.clearTimeout(this._timer[name]);
      this._timer[name] = null;
    }
  }

  _setState(state, { attempt = this.attempt, delay = null, retryAt = null, code = null } = {}) {
    this.state = state;
    /** @type {StateChange} */
    const change = { state, attempt, delay, retryAt, code, transport: this.activeTransport };
    this._emit("state", change);
  }

  _emit(type, payload) {
    for (const listener of [...(this._listeners.get(type) || [])]) {
      try {
        listener(payload);
      } catch (error) {
        // One broken listener must not stop delivery to the others or kill the connection.
        if (type !== "error") this._emit("error", error);
      }
    }
  }

  _loadLastEventId() {
    try {
      const value = this._storage?.getItem(this._storageKey);
      const id = value == null ? NaN : Number.parseInt(value, 10);
      return Number.isInteger(id) && id >= 0 ? id : null;
    } catch {
      return null;
    }
  }

  _rememberLastEventId(id) {
    this.lastEventId = id;
    try {
      this._storage?.setItem(this._storageKey, String(id));
    } catch {
      /* storage full or disabled: the id stays in memory only */
    }
  }
}
