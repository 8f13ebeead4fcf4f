// A live ReasonFlow server for the Node tests, driven through tests/support/demo_server.py
// (one JSON command per line): start, stop, restart, and publish straight into its database.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

function pythonExecutable() {
  if (process.env.PYTHON) return process.env.PYTHON;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

export class Live {
  /** @param {Record<string, string>} [env] extra environment for the server */
  static async start(env = {}) {
    const live = new Live();
    live.child = spawn(pythonExecutable(), ["-m", "tests.support.demo_server"], {
      cwd: ROOT,
      env: { ...process.env, LOG_LEVEL: "WARNING", ...env },
      stdio: ["pipe", "pipe", "inherit"],
    });
    live.lines = createInterface({ input: live.child.stdout })[Symbol.asyncIterator]();
    const hello = await live._next(60000);
    Object.assign(live, hello);
    return live;
  }

  async _next(timeout = 60000) {
    let timer;
    const deadline = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error("the live server launcher did not answer")), timeout);
    });
    try {
      const { value, done } = await Promise.race([this.lines.next(), deadline]);
      if (done) throw new Error("the live server launcher exited");
      return JSON.parse(value);
    } finally {
      clearTimeout(timer);
    }
  }

  async command(cmd, args = {}) {
    this.child.stdin.write(JSON.stringify({ cmd, ...args }) + "\n");
    const answer = await this._next();
    if (!answer.ok) throw new Error(`${cmd} failed: ${answer.error}`);
    return answer;
  }

  async stop() {
    if (!this.child || this.child.exitCode !== null) return;
    const exited = new Promise((done) => this.child.once("exit", done));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 20000);
    await exited;
    clearTimeout(timer);
  }

  async api(method, path, { token, body } = {}) {
    const response = await fetch(`${this.http_url}/api/v1/${path}`, {
      method,
      headers: {
        "Content-Type": "application/json",
        ...(token ? { Authorization: `Bearer ${token}` } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }

  async login(email = this.email, password = this.password) {
    const { status, body } = await this.api("POST", "auth/login", { body: { email, password } });
    if (status !== 200) throw new Error(`login failed: ${status}`);
    return body;
  }

  async register() {
    const email = `node-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
    const password = "node-client-password-5521";
    const { status, body } = await this.api("POST", "auth/register", { body: { email, password } });
    if (status !== 201) throw new Error(`register failed: ${status} ${JSON.stringify(body)}`);
    return { email, password, ...body };
  }

  /** Publish a sample event through the running server (staff endpoint, demo user). */
  async sendTestEvent(staffToken, user, type = "draft_ready") {
    const { status, body } = await this.api("POST", "notifications/test", {
      token: staffToken,
      body: { user, type },
    });
    if (status !== 201) throw new Error(`test event failed: ${status} ${JSON.stringify(body)}`);
    return body.event;
  }
}

/** A 127.0.0.1 port nothing listens on (bound, read, released). */
export async function closedPort() {
  const server = createServer();
  await new Promise((done) => server.listen(0, "127.0.0.1", done));
  const { port } = server.address();
  await new Promise((done) => server.close(done));
  return port;
}

/** A Storage-like object backed by a Map (what sessionStorage offers a page). */
export function memoryStorage() {
  const map = new Map();
  return {
    getItem: (key) => (map.has(key) ? map.get(key) : null),
    setItem: (key, value) => map.set(key, String(value)),
    removeItem: (key) => map.delete(key),
    map,
  };
}

/** Resolve with the first payload of `type` from the client that satisfies `predicate`. */
export function waitFor(client, type, predicate = () => true, timeout = 15000) {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      stop();
      reject(new Error(`timed out waiting for ${type}`));
    }, timeout);
    const stop = client.on(type, (payload) => {
      if (!predicate(payload)) return;
      clearTimeout(timer);
      stop();
      resolvePromise(payload);
    });
  });
}
