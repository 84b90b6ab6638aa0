// The signaling socket: JSON text frames to and from the server, reconnecting by itself.

import { RECONNECT, reconnectDelay } from "./backoff.js";

// Refusals that retrying cannot fix: bad ids, a missing, bad or expired join token (one that
// expired is renewed first, when the page can), forbidden, too many sockets for this id, and
// (rooms) the room is full: the page says so and offers to try again.
const FINAL_CODES = new Set([4400, 4401, 4403, 4409, 4429]);
const TOKEN_CODE = 4401;
// Renewals in a row whose token the server still called expired (a backend whose clock is
// behind): past it, the page stops asking.
const MAX_TOKEN_RENEWALS = 2;

// This page's session: every message it sends carries it, so that the far side tells this
// page from another tab (or a reload) of the same id.
export const pageSession = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);

// Events: "open"; "message" (detail: the parsed message); "notice" (detail: the server
// notice's text, e.g. "PEER-UNAVAILABLE"); "close" (detail: {code, reason, retryInMs}).
// `token`: the page's JoinToken (tokens.js), or null.
export class Signaling extends EventTarget {
  constructor(path, token = null) {
    super();
    this.path = path;
    this.token = token;
    this.tokenRenewals = 0;
    this.socket = null;
    this.attempt = 0; // reconnections since the last socket that stayed open a while
    this.openedAt = 0;
    this.retryTimer = null;
    this.stopped = false;
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = this.token ? this.token.withToken(this.path) : this.path;
    return `${scheme}//${location.host}${path}`;
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      // Not a success yet: a full server accepts, then closes with 1013 at once.
      this.openedAt = performance.now();
      this.dispatchEvent(new Event("open"));
    });
    socket.addEventListener("message", (event) => this.onFrame(event.data));
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return; // an older socket, replaced by reconnect()
      const stable = this.openedAt && performance.now() - this.openedAt >= RECONNECT.stableMs;
      if (stable) this.tokenRenewals = 0;
      if (this.renewable(event)) {
        this.openedAt = 0;
        this.renewToken(socket, event);
        return;
      }
      const retry = !this.stopped && !FINAL_CODES.has(event.code);
      let retryInMs = null;
      if (retry) {
        if (stable) this.attempt = 0;
        retryInMs = reconnectDelay(this.attempt, { closeCode: event.code });
        this.attempt += 1;
        this.retryTimer = setTimeout(() => this.connect(), retryInMs);
      }
      this.openedAt = 0;
      this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason, retryInMs } }));
    });
  }

  // The server said the token expired, and the page can ask for a new one.
  renewable(event) {
    return (
      !this.stopped &&
      event.code === TOKEN_CODE &&
      event.reason === "TOKEN-EXPIRED" &&
      this.token !== null &&
      this.token.canRenew &&
      this.tokenRenewals < MAX_TOKEN_RENEWALS
    );
  }

  // A fresh token from the backend, then a new socket with it; without one, the refusal is
  // final ("close" with retryInMs null, and the token's `problem` says why).
  async renewToken(socket, event) {
    this.tokenRenewals += 1;
    this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason, retryInMs: 0 } }));
    const renewed = await this.token.renew();
    if (socket !== this.socket || this.stopped) return; // the page moved on meanwhile
    if (renewed) {
      this.connect();
      return;
    }
    this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason, retryInMs: null } }));
  }

  // Reconnect now, e.g. with a new path.
  reconnect(path) {
    if (path) this.path = path;
    const old = this.socket;
    this.connect();
    if (old) old.close(1000);
  }

  // A fresh socket, resolved when it is open. After a network change the old one may be dead
  // without knowing it (TCP can take minutes to tell, and WebSocket has no heartbeat of its
  // own), so a call that lost its path asks for this before it renegotiates. A socket that is
  // still connecting, or waiting for its backoff, is left alone: the backoff still holds.
  reopen() {
    const opened = new Promise((resolve) => this.addEventListener("open", () => resolve(), { once: true }));
    if (!this.stopped && this.isOpen) this.reconnect();
    return opened;
  }

  // Resolved when the socket is open: now, or at the next "open".
  whenOpen() {
    if (this.isOpen) return Promise.resolve();
    return new Promise((resolve) => this.addEventListener("open", () => resolve(), { once: true }));
  }

  onFrame(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("signaling: ignoring a frame that is not JSON");
      return;
    }
    if (message && message.msg_type === "SERVER_NOTICE") {
      this.dispatchEvent(new CustomEvent("notice", { detail: message.message }));
    } else if (message && typeof message === "object") {
      this.dispatchEvent(new CustomEvent("message", { detail: message }));
    }
  }

  // Send a message object; answers false when the socket is not open.
  send(message) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    if (this.socket) this.socket.close(1000);
  }

  // Connect again after stop(), as a fresh start (no backoff carried over).
  resume() {
    this.stopped = false;
    this.attempt = 0;
    this.tokenRenewals = 0;
    this.connect();
  }
}
