// Load generator for the signaling benchmarks (docs/benchmarks.md): one Node.js process
// speaking either webrtc_app's protocol or PeerJS's, driving one of three workloads.
//
//   node bench/loadgen.mjs --proto webrtc|peerjs --url ws://127.0.0.1:PORT --workload relay|calls|idle [options]
//
// Across nodes (webrtc_app's Redis backplane): `--workload relay --url2 ws://127.0.0.1:PORT2`
// connects the callers to --url and the callees to --url2, so every message and every
// acknowledgement goes from one node to the other through Redis. Before the warm-up it then
// probes every pair until a message gets through both ways (a node makes a socket reachable
// from the others a little after the client sees its handshake complete) and prints
// `EVENT {"event": "probed", ...}`; from then on any PEER-UNAVAILABLE notice fails the run.
//
// It needs the `ws` package: set BENCH_NODE_MODULES to the node_modules folder holding it
// (bench/run.py installs it into a temporary folder), or run it where `ws` resolves.
//
// Talking to bench/run.py: at every measurement point the load generator prints one line
// `EVENT {"event": NAME, ...}` on stdout and waits for a line `go` on stdin, so the driver
// can read the server's CPU time and memory at that exact point. The last line is
// `EVENT {"event": "done", ...}` (no wait). Progress and errors go to stderr. Every wait is
// bounded by --timeout seconds: past it the process exits with status 3.
//
// Counting: a "relayed message" is one text frame that the server forwarded from one client
// to another, in either direction (data messages and acknowledgements alike): exactly what
// webrtc_app counts in webrtc_messages_relayed_total. Heartbeats and pings are not counted.

import { createRequire } from 'node:module';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import readline from 'node:readline';

const requireWs = createRequire(
  process.env.BENCH_NODE_MODULES ? path.join(process.env.BENCH_NODE_MODULES, 'noop.js') : import.meta.url,
);
const WebSocket = requireWs('ws');

// ---------------------------------------------------------------- options

const DEFAULTS = {
  proto: 'webrtc', // webrtc | peerjs
  url: '', // ws://127.0.0.1:PORT (no path)
  url2: '', // relay only: the callees connect here (another node of a cluster) instead of --url
  workload: 'relay', // relay | calls | idle
  tag: 'x', // prefix of every id, so rounds never collide
  timeout: 300, // seconds: the whole run, waits included
  // relay
  pairs: 50,
  messages: 1000, // measured data messages per caller
  warmup: 100, // data messages per caller before the measurement
  window: 20, // unacknowledged data messages in flight per caller
  size: 200, // bytes of each data frame the caller sends
  'probe-tries': 100, // with --url2: probes per pair before giving up (one every 50 ms at most, 1 s each)
  // calls
  calls: 1000,
  'warmup-calls': 50,
  concurrency: 50,
  candidates: 9, // per side: 1 offer + 1 answer + 2 * 9 candidates = 20 messages a call
  'sdp-size': 1000, // bytes of the offer and answer frames
  'candidate-size': 200,
  // idle
  steps: '4000,10000', // hold this many sockets, step by step
  'open-concurrency': 50, // handshakes in flight while opening
  // 1: the frames a socket sends in one turn of the event loop go out in one write (relay
  // only: it keeps the load generator's syscalls below the server's; see docs/benchmarks.md)
  cork: -1, // -1: on for relay, off otherwise
  // PeerJS clients send {"type":"HEARTBEAT"} every pingInterval ms (peerjs' default 5000)
  'peerjs-heartbeat-ms': 5000,
  key: 'peerjs',
};

function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) die(`unexpected argument ${arg}`);
    const name = arg.slice(2);
    if (!(name in DEFAULTS)) die(`unknown option ${arg}`);
    const value = argv[++i];
    if (value === undefined) die(`${arg} needs a value`);
    opts[name] = typeof DEFAULTS[name] === 'number' ? Number(value) : value;
    if (typeof DEFAULTS[name] === 'number' && !Number.isFinite(opts[name])) die(`${arg}: not a number: ${value}`);
  }
  if (!['webrtc', 'peerjs'].includes(opts.proto)) die(`--proto must be webrtc or peerjs`);
  if (!['relay', 'calls', 'idle'].includes(opts.workload)) die(`--workload must be relay, calls or idle`);
  if (!opts.url.startsWith('ws://')) die('--url ws://HOST:PORT is required');
  if (opts.url2) {
    if (!opts.url2.startsWith('ws://')) die('--url2 must be ws://HOST:PORT');
    if (opts.workload !== 'relay' || opts.proto !== 'webrtc') die('--url2 is for --proto webrtc --workload relay only');
  }
  if (opts.cork === -1) opts.cork = opts.workload === 'relay' ? 1 : 0;
  return opts;
}

function die(message) {
  process.stderr.write(`loadgen: error: ${message}\n`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const log = (message) => process.stderr.write(`loadgen[${opts.proto}/${opts.workload}]: ${message}\n`);

// Everything is bounded in time: the whole process, whatever it waits for.
const killer = setTimeout(() => {
  log(`timed out after ${opts.timeout} s`);
  process.exit(3);
}, opts.timeout * 1000);

// ---------------------------------------------------------------- driver link

const stdinLines = [];
const stdinWaiters = [];
let stdinClosed = false;
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const waiter = stdinWaiters.shift();
  if (waiter) waiter.resolve(line.trim());
  else stdinLines.push(line.trim());
});
rl.on('close', () => {
  stdinClosed = true;
  for (const waiter of stdinWaiters.splice(0)) waiter.reject(new Error('stdin closed: the driver is gone'));
});

function nextLine() {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  if (stdinClosed) return Promise.reject(new Error('stdin closed: the driver is gone'));
  return new Promise((resolve, reject) => stdinWaiters.push({ resolve, reject }));
}

/** Print an event and wait for the driver's `go`. */
async function event(name, data = {}) {
  process.stdout.write(`EVENT ${JSON.stringify({ event: name, t: performance.now() / 1000, ...data })}\n`);
  const line = await nextLine();
  if (line !== 'go') throw new Error(`driver said ${JSON.stringify(line)} instead of go`);
}

// ---------------------------------------------------------------- protocols

class Failure extends Error {}

let opened = 0; // sockets that completed their open (and PeerJS's OPEN)
let unexpectedCloses = 0;
let pingsReceived = 0;
let heartbeatsSent = 0;
let notices = 0; // webrtc_app SERVER_NOTICE frames, PeerJS ERROR/EXPIRE/LEAVE/ID-TAKEN frames
let firstError = null;

// Rejected by the first error of any socket, so a workload waiting on sockets fails at once
// instead of at --timeout: every wait below races against it.
let failNow;
const failed = new Promise((_, reject) => {
  failNow = reject;
});
failed.catch(() => {});

function recordError(error) {
  if (!firstError) {
    firstError = error;
    failNow(error);
  }
}

const orFail = (promise) => Promise.race([promise, failed]);

// The load generator must cost less per message than the servers it drives: no compression,
// no UTF-8 check of what the server sends, and an all-zero masking key, which ws recognises
// and skips the XOR for (RFC 6455 wants a key on every client frame, not a random one here;
// the servers unmask every frame the same way whatever the key).
const CLIENT_OPTIONS = {
  perMessageDeflate: false,
  handshakeTimeout: 30000,
  skipUTF8Validation: true,
  generateMask: (mask) => mask.fill(0),
};

/**
 * One client socket. `connect()` resolves once the server registered it (webrtc_app: the
 * handshake completed; PeerJS: its {"type":"OPEN"} arrived). `onText(text)` gets each relayed
 * frame's application text: the raw frame for webrtc_app, the JSON `payload` for PeerJS.
 */
class Client {
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
      const ws = new WebSocket(this.url(), CLIENT_OPTIONS);
      this.ws = ws;
      let ready = false;
      this.closed = new Promise((closedResolve) => {
        ws.on('close', (code, reason) => {
          if (this.heartbeat) clearInterval(this.heartbeat);
          if (!this.closing) {
            unexpectedCloses++;
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
        pingsReceived++; // ws answers with a pong by itself
      });
      const becomeReady = () => {
        ready = true;
        opened++;
        if (opts.proto === 'peerjs' && opts['peerjs-heartbeat-ms'] > 0) {
          // What a PeerJS client does: without it, the server drops the socket after alive_timeout.
          this.heartbeat = setInterval(() => {
            if (ws.readyState === WebSocket.OPEN) {
              ws.send('{"type":"HEARTBEAT"}');
              heartbeatsSent++;
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
            notices++;
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
            notices++;
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
const decode = (payload) => (opts.proto === 'webrtc' ? JSON.parse(payload) : payload);

/** A JSON payload of exactly `size` bytes once framed by `client`: `{...fields,"pad":"xxx"}`. */
function padded(client, fields, size, type) {
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
function dataPayload(client, seq) {
  const head = `{"type":"candidate","seq":${seq},"pad":"`;
  return `${head}${pad(Math.max(0, opts.size - client.frameOverhead() - head.length - 2))}"}`;
}

async function pool(count, concurrency, task) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const n = next++;
      await task(n);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function summary(values) {
  const sorted = Float64Array.from(values).sort();
  const round = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return {
    count: sorted.length,
    p50: round(percentile(sorted, 0.5)),
    p99: round(percentile(sorted, 0.99)),
    max: round(sorted.length ? sorted[sorted.length - 1] : null),
  };
}

function check() {
  if (firstError) throw firstError;
}

// ---------------------------------------------------------------- relay

async function relay() {
  const P = opts.pairs;
  const pairs = [];
  for (let i = 0; i < P; i++) {
    const a = `${opts.tag}ra${i}`;
    const b = `${opts.tag}rb${i}`;
    pairs.push({ caller: new Client(a, b), callee: new Client(b, a, opts.url2 || opts.url) });
  }
  // Callees first, so no caller ever talks to nobody.
  await orFail(pool(P, opts['open-concurrency'], (i) => pairs[i].callee.connect()));
  await orFail(pool(P, opts['open-concurrency'], (i) => pairs[i].caller.connect()));
  check();
  if (opts.url2) {
    const probes = await orFail(probe(pairs));
    check();
    await event('probed', probes);
  }

  const frames = { data: 0, acks: 0 };
  /** Every caller sends `count` messages, `window` at most unacknowledged; resolves with the RTTs (ms). */
  const phase = (count, rtts) =>
    Promise.all(
      pairs.map(({ caller, callee }, p) => {
        const sentAt = new Float64Array(count);
        let sent = 0;
        let acked = 0;
        let expected = 0;
        return new Promise((resolve, reject) => {
          const pump = () => {
            while (sent < count && sent - acked < opts.window) {
              const payload = dataPayload(caller, sent);
              sentAt[sent] = performance.now();
              caller.send(payload);
              sent++;
            }
          };
          callee.onText = (payload) => {
            const seq = decode(payload).seq;
            if (seq !== expected) return reject(new Failure(`pair ${p}: callee got seq ${seq}, expected ${expected}`));
            expected++;
            frames.data++;
            callee.send(`{"type":"ack","seq":${seq}}`);
          };
          caller.onText = (payload) => {
            const seq = decode(payload).seq;
            if (seq !== acked) return reject(new Failure(`pair ${p}: caller got ack ${seq}, expected ${acked}`));
            if (rtts) rtts.push(performance.now() - sentAt[seq]);
            acked++;
            frames.acks++;
            if (acked === count) resolve();
            else pump();
          };
          pump();
        });
      }),
    );

  if (opts.warmup > 0) await orFail(phase(opts.warmup, null));
  check();
  frames.data = frames.acks = 0;
  await event('ready', { sockets: opened });
  const rtts = [];
  const started = performance.now();
  await orFail(phase(opts.messages, rtts));
  const seconds = (performance.now() - started) / 1000;
  check();
  const expected = P * opts.messages;
  if (frames.data !== expected || frames.acks !== expected) {
    throw new Failure(`lost messages: ${frames.data} data and ${frames.acks} acks, expected ${expected} each`);
  }
  const relayed = frames.data + frames.acks;
  await event('measured', {
    pairs: P,
    data_messages: frames.data,
    acks: frames.acks,
    relayed,
    warmup_relayed: 2 * P * opts.warmup,
    seconds,
    relayed_per_s: relayed / seconds,
    data_per_s: frames.data / seconds,
    rtt_ms: summary(rtts),
  });
  await Promise.all(pairs.flatMap(({ caller, callee }) => [caller.close(), callee.close()]));
}

/**
 * Across nodes: make sure every pair delivers both ways before anything is measured. A node
 * answers the WebSocket handshake before the socket is reachable from the other nodes (its
 * open() waits for Redis to confirm the subscription, which the client cannot see), so a
 * caller's first message may find its callee not yet reachable and get PEER-UNAVAILABLE back.
 * Each caller sends {"type":"probe","n":k} until the callee's {"type":"probe-ack","n":k}
 * arrives (the callee's answer proves the way back too), retrying after a notice or 1 s of
 * silence, `probe-tries` times at most. Answers the counts; the notices seen here are
 * expected and reported, any later one fails the run.
 */
async function probe(pairs) {
  let attempts = 0;
  let unavailable = 0;
  let timeouts = 0;
  const started = performance.now();
  await pool(pairs.length, pairs.length, async (p) => {
    const { caller, callee } = pairs[p];
    let current = -1; // the attempt whose answer counts; late answers of earlier ones are ignored
    let settle = null;
    callee.onText = (payload) => {
      const message = JSON.parse(payload);
      if (message.type !== 'probe') return recordError(new Failure(`pair ${p}: callee got ${payload.slice(0, 80)} while probing`));
      callee.send(`{"type":"probe-ack","n":${message.n}}`);
    };
    caller.onText = (payload) => {
      const message = JSON.parse(payload);
      if (message.type !== 'probe-ack') return recordError(new Failure(`pair ${p}: caller got ${payload.slice(0, 80)} while probing`));
      if (message.n === current && settle) settle('ok');
    };
    // A notice to the caller: its probe found no callee. To the callee: its answer found no
    // caller (the caller's silence timer then retries).
    caller.onUnavailable = () => {
      unavailable++;
      if (settle) settle('unavailable');
    };
    callee.onUnavailable = () => {
      unavailable++;
    };
    for (let attempt = 0; attempt < opts['probe-tries']; attempt++) {
      check();
      current = attempt;
      attempts++;
      const outcome = await new Promise((resolve) => {
        const timer = setTimeout(() => settle('timeout'), 1000);
        settle = (what) => {
          clearTimeout(timer);
          settle = null;
          resolve(what);
        };
        caller.send(`{"type":"probe","n":${attempt}}`);
      });
      if (outcome === 'ok') return;
      if (outcome === 'timeout') timeouts++;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Failure(`pair ${p}: no probe got through both ways in ${opts['probe-tries']} tries`);
  });
  if (timeouts) {
    // An answer that was only slow may still come: let it arrive while the probe handlers
    // still ignore it, not in the middle of the warm-up.
    await new Promise((resolve) => setTimeout(resolve, 1500));
  }
  for (const { caller, callee } of pairs) {
    caller.onUnavailable = callee.onUnavailable = null;
    caller.onText = callee.onText = null;
  }
  return { pairs: pairs.length, attempts, unavailable, timeouts, seconds: (performance.now() - started) / 1000 };
}

// ---------------------------------------------------------------- calls

async function calls() {
  const K = opts.candidates;
  const messagesPerCall = 2 + 2 * K;
  let relayed = 0;

  async function oneCall(n, setups) {
    const started = performance.now();
    const a = new Client(`${opts.tag}ca${n}`, `${opts.tag}cb${n}`);
    const b = new Client(`${opts.tag}cb${n}`, `${opts.tag}ca${n}`);
    await Promise.all([b.connect(), a.connect()]);
    const candidates = (side) =>
      Array.from({ length: K }, (_, k) => padded(side, { type: 'candidate', n, k }, opts['candidate-size']));
    await new Promise((resolve, reject) => {
      let aGot = 0;
      let bGot = 0;
      const finished = () => {
        if (aGot === K + 1 && bGot === K + 1) resolve();
      };
      b.onText = (payload) => {
        const message = decode(payload);
        if (message.n !== n) return reject(new Failure(`call ${n}: callee got a message of call ${message.n}`));
        bGot++;
        relayed++;
        if (message.type === 'offer') {
          b.send(padded(b, { type: 'answer', n }, opts['sdp-size'], 'ANSWER'), 'ANSWER');
          for (const candidate of candidates(b)) b.send(candidate);
        }
        finished();
      };
      a.onText = (payload) => {
        const message = decode(payload);
        if (message.n !== n) return reject(new Failure(`call ${n}: caller got a message of call ${message.n}`));
        aGot++;
        relayed++;
        if (message.type === 'answer') for (const candidate of candidates(a)) a.send(candidate);
        finished();
      };
      a.send(padded(a, { type: 'offer', n }, opts['sdp-size'], 'OFFER'), 'OFFER');
    });
    if (setups) setups.push(performance.now() - started);
    await Promise.all([a.close(), b.close()]);
  }

  if (opts['warmup-calls'] > 0) await orFail(pool(opts['warmup-calls'], opts.concurrency, (n) => oneCall(-1 - n, null)));
  check();
  const warmupRelayed = relayed;
  relayed = 0;
  await event('ready', {});
  const setups = [];
  const started = performance.now();
  await orFail(pool(opts.calls, opts.concurrency, (n) => oneCall(n, setups)));
  const seconds = (performance.now() - started) / 1000;
  check();
  if (setups.length !== opts.calls || relayed !== opts.calls * messagesPerCall) {
    throw new Failure(`${setups.length} calls with ${relayed} messages, expected ${opts.calls} with ${opts.calls * messagesPerCall}`);
  }
  await event('measured', {
    calls: opts.calls,
    concurrency: opts.concurrency,
    messages_per_call: messagesPerCall,
    relayed,
    warmup_relayed: warmupRelayed,
    seconds,
    calls_per_s: opts.calls / seconds,
    setup_ms: summary(setups),
  });
}

// ---------------------------------------------------------------- idle

async function idle() {
  const steps = opts.steps.split(',').map(Number);
  const clients = [];
  await event('ready', {});
  for (const target of steps) {
    const from = clients.length;
    const started = performance.now();
    // Sockets come in pairs talking to each other, like callers and callees waiting for a call.
    for (let n = from; n < target; n++) {
      const pair = n >> 1;
      const [me, peer] = n % 2 === 0 ? ['ia', 'ib'] : ['ib', 'ia'];
      clients.push(new Client(`${opts.tag}${me}${pair}`, `${opts.tag}${peer}${pair}`));
    }
    await orFail(pool(target - from, opts['open-concurrency'], (i) => clients[from + i].connect()));
    const seconds = (performance.now() - started) / 1000;
    check();
    if (opened !== target) throw new Failure(`${opened} sockets open, expected ${target}`);
    await event('opened', { sockets: target, batch: target - from, seconds, opened_per_s: (target - from) / seconds });
  }
  // The driver holds the sockets idle for as long as it measures, then says go.
  const pings = pingsReceived;
  const heartbeats = heartbeatsSent;
  await event('holding', { sockets: clients.length });
  check();
  await event('held', {
    sockets: clients.length,
    unexpected_closes: unexpectedCloses,
    pings_received: pingsReceived - pings,
    heartbeats_sent: heartbeatsSent - heartbeats,
  });
  if (unexpectedCloses) throw new Failure(`${unexpectedCloses} idle sockets were closed by the server`);
  await pool(clients.length, 500, (i) => clients[i].close());
}

// ---------------------------------------------------------------- main

const workloads = { relay, calls, idle };

try {
  await workloads[opts.workload]();
  check();
  process.stdout.write(`EVENT ${JSON.stringify({ event: 'done', t: performance.now() / 1000, notices, unexpected_closes: unexpectedCloses })}\n`);
  clearTimeout(killer);
  process.exit(0);
} catch (error) {
  log(`failed: ${error && error.stack ? error.stack : error}`);
  process.stdout.write(`EVENT ${JSON.stringify({ event: 'error', message: String(error && error.message ? error.message : error) })}\n`);
  process.exit(1);
}
