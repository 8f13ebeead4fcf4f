// The JavaScript client (notifications/clients/js/client.js) against a real server:
// run with `node --test --experimental-websocket tests/js/` (tests/notifications/clients/test_js.py
// does, so `make test` and CI run these).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  NotificationClient,
  backoffCeiling,
  backoffDelay,
} from "../../notifications/clients/js/client.js";
import { TestEventSource } from "./eventsource.mjs";
import { Live, closedPort, memoryStorage, waitFor } from "./live.mjs";

/** Count the sockets a client opens (the real WebSocket underneath). */
function countingWebSocket() {
  const opened = [];
  class Counting extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      opened.push(this);
    }
  }
  return { WebSocket: Counting, opened };
}

function states(client) {
  const seen = [];
  client.on("state", (change) => seen.push(change));
  return seen;
}

describe("backoff", () => {
  test("full jitter stays inside [0, min(cap, initial * 2^attempt)]", () => {
    for (let attempt = 0; attempt < 12; attempt += 1) {
      const ceiling = backoffCeiling(attempt);
      assert.equal(ceiling, Math.min(30000, 500 * 2 ** attempt));
      assert.equal(backoffDelay(attempt, { random: () => 0 }), 0);
      assert.equal(backoffDelay(attempt, { random: () => 0.999999 }), ceiling - 1);
      for (let i = 0; i < 50; i += 1) {
        const delay = backoffDelay(attempt);
        assert.ok(delay >= 0 && delay < ceiling, `${delay} outside [0, ${ceiling})`);
      }
    }
    assert.equal(backoffCeiling(1000), 30000); // no overflow to Infinity or NaN
  });

  test("reconnect delays to a dead port grow with jitter and stay under the cap", async () => {
    const port = await closedPort();
    const options = { backoffInitial: 20, backoffMax: 160 };
    const client = new NotificationClient({
      url: `ws://127.0.0.1:${port}/api/v1/notifications/ws`,
      token: "unused",
      storage: null,
      network: null,
      ...options,
    });
    const seen = states(client);
    client.connect();
    const deadline = Date.now() + 15000;
    while (seen.filter((s) => s.state === "reconnecting").length < 9 && Date.now() < deadline) {
      await new Promise((done) => setTimeout(done, 20));
    }
    client.close();
    const retries = seen.filter((s) => s.state === "reconnecting");
    assert.ok(retries.length >= 9, `only ${retries.length} reconnects`);
    retries.forEach((change, attempt) => {
      const ceiling = backoffCeiling(attempt, { initial: 20, max: 160 });
      assert.ok(change.delay >= 0 && change.delay < ceiling, `${change.delay} vs ${ceiling}`);
      assert.equal(change.code, 1006);
    });
    // Unlimited attempts, and jitter: the capped draws are not all the same number.
    const capped = retries.slice(3).map((s) => s.delay);
    assert.ok(new Set(capped).size > 1, `no jitter in ${capped}`);
    assert.equal(seen.at(-1).state, "closed");
  });

  test("with random() near 1 the delays double up to the cap", async () => {
    const port = await closedPort();
    const client = new NotificationClient({
      url: `ws://127.0.0.1:${port}/api/v1/notifications/ws`,
      token: "unused",
      storage: null,
      network: null,
      backoffInitial: 10,
      backoffMax: 80,
      random: () => 0.9999,
    });
    const seen = states(client);
    client.connect();
    const deadline = Date.now() + 15000;
    while (seen.filter((s) => s.state === "reconnecting").length < 6 && Date.now() < deadline) {
      await new Promise((done) => setTimeout(done, 10));
    }
    client.close();
    const delays = seen.filter((s) => s.state === "reconnecting").map((s) => s.delay);
    assert.deepEqual(delays.slice(0, 6), [9, 19, 39, 79, 79, 79]);
  });
});

describe("against a live server", () => {
  /** @type {Live} */
  let live;
  let staff;

  before(async () => {
    live = await Live.start();
    staff = await live.login();
  });

  after(async () => {
    await live?.stop();
  });

  test("connect() resolves on connected; on(type) and on('*') get the envelope", async () => {
    const user = await live.register();
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      storage: memoryStorage(),
      network: null,
    });
    const typed = [];
    const every = [];
    client.on("draft_ready", (event) => typed.push(event));
    client.on("*", (event) => every.push(event));
    const connected = await client.connect();
    assert.equal(connected.user_id, user.user.id);
    assert.equal(connected.recovered, true);
    assert.equal(client.state, "connected");

    const arrived = waitFor(client, "email_sent");
    const sent = await live.sendTestEvent(staff.access, user.email, "draft_ready");
    await live.sendTestEvent(staff.access, user.email, "email_sent");
    await arrived;
    assert.deepEqual(
      typed.map((e) => e.id),
      [sent.id],
    );
    assert.deepEqual(typed[0], sent);
    assert.deepEqual(
      every.map((e) => e.type),
      ["draft_ready", "email_sent"],
    );
    client.close();
    assert.equal(client.state, "closed");
  });

  test("4002 is not retried with the same token: getToken() is asked, then it connects", async () => {
    const user = await live.register();
    const { WebSocket, opened } = countingWebSocket();
    const tokens = [];
    const client = new NotificationClient({
      url: live.ws_url,
      token: "not-a-jwt",
      getToken: async () => {
        tokens.push("asked");
        return (await live.login(user.email, user.password)).access;
      },
      WebSocket,
      storage: null,
      network: null,
    });
    const seen = states(client);
    const connected = await client.connect();
    assert.equal(connected.user_id, user.user.id);
    assert.equal(tokens.length, 1);
    assert.equal(opened.length, 2);
    const closeCodes = seen.filter((s) => s.code !== null).map((s) => s.code);
    assert.deepEqual(closeCodes, [4002]);
    assert.ok(!seen.some((s) => s.state === "reconnecting"), "an auth close is no backoff retry");
    client.close();
  });

  test("a failing getToken() stops the client: auth_failed, no more sockets", async () => {
    const { WebSocket, opened } = countingWebSocket();
    const errors = [];
    const client = new NotificationClient({
      url: live.ws_url,
      token: "not-a-jwt",
      getToken: async () => {
        throw new Error("refresh token expired");
      },
      WebSocket,
      storage: null,
      network: null,
      backoffInitial: 10,
    });
    client.on("error", (error) => errors.push(error.message));
    await assert.rejects(client.connect(), /refresh token expired/);
    assert.equal(client.state, "auth_failed");
    await new Promise((done) => setTimeout(done, 300));
    assert.equal(opened.length, 1);
    assert.deepEqual(errors, ["refresh token expired"]);
  });

  test("getToken() returning the rejected token again stops instead of looping", async () => {
    const { WebSocket, opened } = countingWebSocket();
    const client = new NotificationClient({
      url: live.ws_url,
      getToken: () => "still-not-a-jwt",
      WebSocket,
      storage: null,
      network: null,
    });
    await assert.rejects(client.connect(), /no new token/);
    assert.equal(client.state, "auth_failed");
    await new Promise((done) => setTimeout(done, 300));
    assert.equal(opened.length, 1);
  });

  test("a first frame without a usable token (4001) goes through getToken() too", async () => {
    const user = await live.register();
    let asked = 0;
    const client = new NotificationClient({
      url: live.ws_url,
      token: " ",
      getToken: () => {
        asked += 1;
        return user.access;
      },
      storage: null,
      network: null,
    });
    const seen = states(client);
    await client.connect();
    assert.equal(asked, 1);
    assert.deepEqual(
      seen.filter((s) => s.code !== null).map((s) => s.code),
      [4001],
    );
    client.close();
  });

  for (const transport of ["websocket", "sse"]) {
    test(`resume across a server restart loses and duplicates nothing (${transport})`, async () => {
      const user = await live.register();
      const storage = memoryStorage();
      const client = new NotificationClient({
        url: live.ws_url,
        getToken: async () => (await live.login(user.email, user.password)).access,
        storage,
        network: null,
        backoffInitial: 100,
        backoffMax: 400,
        transport,
        EventSource: TestEventSource,
      });
      const transports = new Set();
      client.on("state", (change) => transports.add(change.transport));
      const ids = [];
      client.on("*", (event) => ids.push(event.id));
      const connections = [];
      client.on("connected", (info) => connections.push(info));
      await client.connect();

      const first = waitFor(client, "email_received");
      await live.sendTestEvent(staff.access, user.email, "email_received");
      await first;
      assert.equal(storage.getItem("reasonflow.notifications.lastEventId"), "1");

      const reconnecting = waitFor(client, "state", (s) => s.state === "reconnecting");
      await live.command("stop");
      await reconnecting;
      const published = await live.command("publish", {
        email: user.email,
        type: "draft_ready",
        count: 3,
      });
      assert.deepEqual(published.ids, [2, 3, 4]);
      const reconnected = waitFor(client, "connected", () => true, 30000);
      await live.command("start");
      const resumed = await reconnected;
      assert.equal(resumed.recovered, true);
      assert.equal(resumed.resumed, true);

      const sentLive = waitFor(client, "email_sent");
      const live5 = await live.sendTestEvent(staff.access, user.email, "email_sent");
      await sentLive;
      assert.equal(live5.id, 5);
      assert.deepEqual(ids, [1, 2, 3, 4, 5]);
      assert.equal(connections.length, 2);
      assert.equal(storage.getItem("reasonflow.notifications.lastEventId"), "5");
      assert.deepEqual([...transports], [transport]);
      client.close();
    });
  }

  test("auto: a WebSocket that cannot be made falls back to SSE, then returns to it", async () => {
    const user = await live.register();
    let blocked = true;
    class Blockable extends WebSocket {
      constructor(url, protocols) {
        if (blocked) throw new Error("WebSocket is blocked");
        super(url, protocols);
      }
    }
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      storage: memoryStorage(),
      network: null,
      backoffInitial: 20,
      backoffMax: 50,
      WebSocket: Blockable,
      EventSource: TestEventSource,
      websocketRetryInterval: 300,
    });
    const connectedOver = [];
    client.on("state", (change) => {
      if (change.state === "connected") connectedOver.push(change.transport);
    });
    const ids = [];
    client.on("*", (event) => ids.push(event.id));
    await client.connect();
    assert.equal(client.activeTransport, "sse");
    const first = waitFor(client, "email_received");
    await live.sendTestEvent(staff.access, user.email, "email_received");
    await first;

    blocked = false;
    await waitFor(client, "state", (change) => change.state === "connected" && change.transport === "websocket");
    const second = waitFor(client, "draft_ready");
    await live.sendTestEvent(staff.access, user.email, "draft_ready");
    await second;
    assert.deepEqual(ids, [1, 2]);
    assert.deepEqual(connectedOver, ["sse", "websocket"]);
    client.close();
  });

  test("transport: websocket never falls back", async () => {
    const user = await live.register();
    class Blocked {
      constructor() {
        throw new Error("WebSocket is blocked");
      }
    }
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      storage: memoryStorage(),
      network: null,
      backoffInitial: 10,
      backoffMax: 20,
      WebSocket: Blocked,
      EventSource: TestEventSource,
      transport: "websocket",
    });
    const seen = states(client);
    client.connect();
    await waitFor(client, "state", () => seen.filter((s) => s.state === "reconnecting").length >= 4);
    client.close();
    assert.ok(seen.every((s) => s.transport === "websocket"));
    assert.ok(!seen.some((s) => s.state === "connected"));
  });

  test("the last event id survives in storage: a new client resumes from it", async () => {
    const user = await live.register();
    const storage = memoryStorage();
    const first = new NotificationClient({ url: live.ws_url, token: user.access, storage, network: null });
    await first.connect();
    const received = waitFor(first, "email_received");
    await live.sendTestEvent(staff.access, user.email, "email_received");
    await received;
    first.close();
    await live.sendTestEvent(staff.access, user.email, "draft_ready");
    await live.sendTestEvent(staff.access, user.email, "draft_approved");

    const second = new NotificationClient({ url: live.ws_url, token: user.access, storage, network: null });
    assert.equal(second.lastEventId, 1);
    const ids = [];
    second.on("*", (event) => ids.push(event.id));
    const approved = waitFor(second, "draft_approved");
    const connected = await second.connect();
    assert.equal(connected.resumed, true);
    await approved;
    assert.deepEqual(ids, [2, 3]);
    second.close();
  });

  test("an id the server never issued reports recovered: false and restarts from its newest", async () => {
    const user = await live.register();
    await live.sendTestEvent(staff.access, user.email, "email_received");
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      lastEventId: 999,
      storage: null,
      network: null,
    });
    const connected = await client.connect();
    assert.equal(connected.recovered, false);
    assert.equal(connected.resumed, false);
    assert.equal(client.lastEventId, 1);
    const arrived = waitFor(client, "email_sent");
    const next = await live.sendTestEvent(staff.access, user.email, "email_sent");
    const event = await arrived;
    assert.equal(event.id, next.id);
    client.close();
  });

  test("pings every interval; a connection that stops answering is replaced", async () => {
    const user = await live.register();
    // The first socket swallows pongs, as a half-dead connection would.
    let sockets = 0;
    class DeafFirst extends WebSocket {
      constructor(url) {
        super(url);
        this.deaf = sockets++ === 0;
      }
      set onmessage(handler) {
        super.onmessage = (message) => {
          if (this.deaf && JSON.parse(message.data).type === "pong") return;
          handler?.(message);
        };
      }
      get onmessage() {
        return super.onmessage;
      }
    }
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      WebSocket: DeafFirst,
      pingInterval: 150,
      pongTimeout: 200,
      backoffInitial: 10,
      storage: null,
      network: null,
    });
    const connections = [];
    client.on("connected", (info) => connections.push(info));
    let connects = 0;
    const replaced = waitFor(client, "connected", () => ++connects === 2);
    await client.connect();
    await replaced;
    assert.equal(sockets, 2);
    // The second socket gets its pongs: it stays up across several ping rounds.
    await new Promise((done) => setTimeout(done, 1000));
    assert.equal(sockets, 2);
    assert.equal(connections.length, 2);
    assert.equal(client.state, "connected");
    client.close();
  });

  test("offline: no attempt until the network comes back, then connects at once", async () => {
    const user = await live.register();
    let online = false;
    let wake = null;
    const { WebSocket, opened } = countingWebSocket();
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      WebSocket,
      storage: null,
      network: {
        isOnline: () => online,
        onOnline: (fn) => {
          wake = fn;
          return () => {
            wake = null;
          };
        },
      },
    });
    const ready = client.connect();
    await new Promise((done) => setTimeout(done, 300));
    assert.equal(client.state, "offline");
    assert.equal(opened.length, 0);
    online = true;
    wake();
    const connected = await ready;
    assert.equal(connected.user_id, user.user.id);
    assert.equal(opened.length, 1);
    client.close();
  });

  test("close() while reconnecting stops for good", async () => {
    const port = await closedPort();
    const { WebSocket, opened } = countingWebSocket();
    const client = new NotificationClient({
      url: `ws://127.0.0.1:${port}/api/v1/notifications/ws`,
      token: "unused",
      WebSocket,
      backoffInitial: 50,
      storage: null,
      network: null,
    });
    const reconnecting = waitFor(client, "state", (s) => s.state === "reconnecting");
    const ready = client.connect();
    await reconnecting;
    client.close();
    await assert.rejects(ready, /client closed/);
    const count = opened.length;
    await new Promise((done) => setTimeout(done, 300));
    assert.equal(opened.length, count);
    assert.equal(client.state, "closed");
  });
});

describe("token refresh in-band", () => {
  let live;

  before(async () => {
    // 4 s access tokens, token_expiring 3 s before expiry.
    live = await Live.start({
      JWT_ACCESS_LIFETIME_SECONDS: "4",
      NOTIFICATIONS_TOKEN_EXPIRY_WARNING_SECONDS: "3",
    });
  });

  after(async () => {
    await live?.stop();
  });

  test("refreshes before expiry on the same socket instead of being closed 4002", async () => {
    const user = await live.register();
    const sent = [];
    class Recording extends WebSocket {
      send(data) {
        sent.push(JSON.parse(data));
        super.send(data);
      }
    }
    let asked = 0;
    const client = new NotificationClient({
      url: live.ws_url,
      token: user.access,
      getToken: async () => {
        asked += 1;
        return (await live.login(user.email, user.password)).access;
      },
      WebSocket: Recording,
      refreshBefore: 2000,
      storage: null,
      network: null,
    });
    const seen = states(client);
    await client.connect();
    // Past the first token's expiry (4 s), still on the first socket.
    await new Promise((done) => setTimeout(done, 6000));
    assert.equal(client.state, "connected");
    assert.equal(seen.filter((s) => s.state === "connected").length, 1);
    const refreshes = sent.filter((frame) => frame.type === "refresh");
    assert.ok(refreshes.length >= 1, "no refresh frame sent");
    assert.ok(asked >= 1);
    assert.equal(sent.filter((frame) => "token" in frame && !frame.type).length, 1);
    client.close();
  });
});
