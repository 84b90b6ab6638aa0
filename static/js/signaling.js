// The signaling socket: JSON text frames to and from the server, reconnecting by itself.

// Refusals that retrying cannot fix: bad ids, forbidden, too many sockets for this id.
const FINAL_CODES = new Set([4400, 4403, 4429]);
const MAX_RETRY_DELAY_MS = 10000;

// Events: "open"; "message" (detail: the parsed message); "notice" (detail: the server
// notice's text, e.g. "PEER-UNAVAILABLE"); "close" (detail: {code, reason, retryInMs}).
export class Signaling extends EventTarget {
  constructor(path) {
    super();
    this.path = path;
    this.socket = null;
    this.retryDelay = 1000;
    this.retryTimer = null;
    this.stopped = false;
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${this.path}`;
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    clearTimeout(this.retryTimer);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retryDelay = 1000;
      this.dispatchEvent(new Event("open"));
    });
    socket.addEventListener("message", (event) => this.onFrame(event.data));
    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return; // an older socket, replaced by reconnect()
      const retry = !this.stopped && !FINAL_CODES.has(event.code);
      const retryInMs = retry ? this.retryDelay : null;
      this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason, retryInMs } }));
      if (retry) {
        this.retryTimer = setTimeout(() => this.connect(), this.retryDelay);
        this.retryDelay = Math.min(this.retryDelay * 2, MAX_RETRY_DELAY_MS);
      }
    });
  }

  // Reconnect now, e.g. with a new path.
  reconnect(path) {
    if (path) this.path = path;
    const old = this.socket;
    this.connect();
    if (old) old.close(1000);
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
}
