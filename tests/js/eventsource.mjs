// A WHATWG-style EventSource for the Node tests (Node 20 has none): GET with fetch, parse the
// text/event-stream as a browser does, dispatch named events. No automatic reconnection: the
// client under test closes it on error and reconnects by itself.

export class TestEventSource extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  constructor(url) {
    super();
    this.url = url;
    this.readyState = TestEventSource.CONNECTING;
    this.onmessage = null;
    this.onerror = null;
    this.onopen = null;
    this._abort = new AbortController();
    this._run();
  }

  close() {
    this.readyState = TestEventSource.CLOSED;
    this._abort.abort();
  }

  async _run() {
    try {
      const response = await fetch(this.url, {
        headers: { Accept: "text/event-stream" },
        signal: this._abort.signal,
      });
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`);
      this.readyState = TestEventSource.OPEN;
      this.onopen?.(new Event("open"));
      const decoder = new TextDecoder();
      let buffer = "";
      let event = "";
      let data = [];
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (line === "") {
            if (data.length) this._dispatch(event || "message", data.join("\n"));
            event = "";
            data = [];
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const name = colon < 0 ? line : line.slice(0, colon);
            const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
            if (name === "event") event = value;
            else if (name === "data") data.push(value);
          }
        }
      }
      throw new Error("stream ended");
    } catch (error) {
      if (this.readyState === TestEventSource.CLOSED) return;
      this.readyState = TestEventSource.CLOSED;
      this.onerror?.(new Event("error"));
    }
  }

  _dispatch(type, data) {
    if (this.readyState === TestEventSource.CLOSED) return;
    const message = new MessageEvent(type, { data });
    if (type === "message") this.onmessage?.(message);
    this.dispatchEvent(message);
  }
}
