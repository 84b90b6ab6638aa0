// One client socket, speaking webrtc_app's protocol or PeerJS's (--proto), and the payloads
// the workloads send, sized the same in both protocols. `ws` is found in BENCH_NODE_MODULES.

import { createRequire } from 'node:module';
import path from 'node:path';

import { counts, Failure, recordError } from './common.mjs';
import { opts } from './options.mjs';

const requireWs = createRequire(
  process.env.BENCH_NODE_MODULES ? path.join(process.env.BENCH_NODE_MODULES, 'noop.js') : import.meta.url,
);
const WebSocket = requireWs('ws');

// Cheaper than the servers per message: no compression, no UTF-8 check of what arrives, and an
// all-zero masking key, whose XOR ws skips (the servers unmask every frame the same way).
const BASE_OPTIONS = {
  perMessageDeflate: false,
  handshakeTimeout: 30000,
  skipUTF8Validation: true,
  generateMask: (mask) => mask.fill(0),
};

// --local-address: one source address, or several (comma-separated) that the sockets take in
// turn. A bind() to an address without a port searches that address's ports (the even ones
// first), so with some 14,000 sockets on one address every new one scans most of them, in the
// kernel, under a lock: tens of thousands of sockets spread over several addresses each.
const SOURCES = opts['local-address'] ? String(opts['local-address']).split(',') : [];
const PER_SOURCE = SOURCES.map((localAddress) => ({ ...BASE_OPTIONS, localAddress }));
let nextSource = 0;

/** The options of the next socket (its source address, in turn). */
function clientOptions() {
  if (PER_SOURCE.length === 0) return BASE_OPTIONS;
  nextSource = (nextSource + 1) % PER_SOURCE.length;
  return PER_SOURCE[nextSource];
}

export { WebSocket, clientOptions };

/**
 * One client socket. `connect()` resolves once the server registered it (webrtc_app: the
 * handshake completed; PeerJS: its {"type":"OPEN"} arrived). `onText(text)` gets each relayed
 * frame's application text: the raw frame for webrtc_app, the JSON `payload` for PeerJS.
 */
export class Client {
  constructor(id, peerId, base = opts.url) {
    this.id = id;
    this.peerId = peerId;
    this.base = base; // ws://HOST:PORT of the server (node) this client connects to
    this.ws = null;
    this.onText = null;
    // While set (the probe phase across nodes), PEER-UNAVAILABLE notices go here instead of
    // failing the run.
    this.onUnavailable = null;
    this.closing = false;
    this.heartbeat = null;
    this.closed = null;
    this.corked = false;
  }

  url() {
    if (opts.proto === 'webrtc') return `${this.base}/wscall?id=${encodeURIComponent(this.id)}&peer_id=${encodeURIComponent(this.peerId)}`;
    const token = Math.random().toString(36).slice(2, 12);
    return `${this.base}/peerjs?key=${opts.key}&id=${encodeURIComponent(this.id)}&token=${token}`;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url(), clientOptions());
      this.ws = ws;
      let ready = false;
      this.closed = new Promise((closedResolve) => {
        ws.on('close', (code, reason) => {
          if (this.heartbeat) clearInterval(this.heartbeat);
          if (!this.closing) {
            counts.unexpectedCloses++;
            const error = new Failure(`socket ${this.id} closed by the server (${code} ${reason})`);
            recordError(error);
            if (!ready) reject(error);
          }
          closedResolve();
        });
      });
      ws.on('error', (error) => {
        recordError(error);
        if (!ready) reject(error);
      });
      ws.on('ping', () => {
        counts.pingsReceived++; // ws answers with a pong by itself
      });
      const becomeReady = () => {
        ready = true;
        counts.opened++;
        if (opts.proto === 'peerjs' && opts['peerjs-heartbeat-ms'] > 0) {
          // What a PeerJS client does: without it, the server drops the socket after alive_timeout.
          this.heartbeat = setInterval(() => {
            if (ws.readyState === WebSocket.OPEN) {
              ws.send('{"type":"HEARTBEAT"}');
              counts.heartbeatsSent++;
            }
          }, opts['peerjs-heartbeat-ms']);
        }
        resolve(this);
      };
      if (opts.proto === 'webrtc') {
        ws.on('open', becomeReady);
        ws.on('message', (data, isBinary) => {
          const text = data.toString();
          if (isBinary || text.startsWith('{"msg_type": "SERVER_NOTICE"')) {
            if (!isBinary && this.onUnavailable && text.includes('PEER-UNAVAILABLE')) {
              this.onUnavailable(text);
              return;
            }
            counts.notices++;
            recordError(new Failure(`${this.id} received ${text.slice(0, 120)}`));
            return;
          }
          this.onText(text);
        });
      } else {
        ws.on('message', (data) => {
          const message = JSON.parse(data.toString());
          const type = message.type;
          if (type === 'CANDIDATE' || type === 'OFFER' || type === 'ANSWER') {
            this.onText(message.payload);
          } else if (type === 'OPEN' && !ready) {
            becomeReady();
          } else {
            counts.notices++;
            const error = new Failure(`${this.id} received ${JSON.stringify(message).slice(0, 160)}`);
            recordError(error);
            if (!ready) reject(error);
          }
        });
      }
    });
  }

  /** Send `payload` (a string) to the peer; `type` is PeerJS's message type. */
  send(payload, type = 'CANDIDATE') {
    if (opts.cork && !this.corked) {
      // One write for all the frames this socket sends in this turn of the event loop.
      const socket = this.ws._socket;
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    if (opts.proto === 'webrtc') this.ws.send(payload);
    else this.ws.send(`{"type":"${type}","dst":"${this.peerId}","payload":${payload}}`);
  }

  /** Frame length of `send(payload)`, to size messages the same for both protocols. */
  frameOverhead(type = 'CANDIDATE') {
    return opts.proto === 'webrtc' ? 0 : `{"type":"${type}","dst":"","payload":}`.length + this.peerId.length;
  }

  close() {
    this.closing = true;
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.ws.readyState === WebSocket.CLOSED) return this.closed;
    this.ws.close(1000);
    return this.closed;
  }
}

/** Decode an application payload: webrtc_app hands over the frame text, PeerJS the parsed payload. */
export const decode = (payload) => (opts.proto === 'webrtc' ? JSON.parse(payload) : payload);

/** A JSON payload of exactly `size` bytes once framed by `client`: `{...fields,"pad":"xxx"}`. */
export function padded(client, fields, size, type) {
  const bare = JSON.stringify(fields);
  const missing = Math.max(0, size - client.frameOverhead(type) - bare.length - ',"pad":""'.length);
  return `${bare.slice(0, -1)},"pad":"${pad(missing)}"}`;
}

const pads = new Map();
function pad(length) {
  let text = pads.get(length);
  if (text === undefined) pads.set(length, (text = 'x'.repeat(length)));
  return text;
}

/** The relay's data payload `{"type":"candidate","seq":N,"pad":"xx.."}`, framed to opts.size bytes. */
export function dataPayload(client, seq) {
  const head = `{"type":"candidate","seq":${seq},"pad":"`;
  return `${head}${pad(Math.max(0, opts.size - client.frameOverhead() - head.length - 2))}"}`;
}
