// The reconnect storm (docs/benchmarks.md, "storm"), webrtc_app only: this process opens
// --sockets sockets and holds them; the driver restarts the server, and every socket reconnects
// by itself with the pages' own policy (static/js/backoff.js, used as static/js/signaling.js
// uses it). Events: "ready", "opened" (the driver then restarts the server), "back" (every
// socket dropped and open again, confirmed half a second later; or --storm-timeout passed),
// "held" (the counts: failed tries by kind, with a timeline of 100 ms bins that tells the
// refusals while the server was down from those after), then "done".

import { performance } from 'node:perf_hooks';

import { RECONNECT, reconnectDelay } from '../../static/js/backoff.js';
import { classify } from './hold.mjs';
import { clientOptions, WebSocket } from './client.mjs';
import { check, epochMs, Failure, orFail, pool, recordError } from './common.mjs';
import { event } from './driver.mjs';
import { log, opts } from './options.mjs';

/** Counts of the storm: the first drop of each socket by close code, failed tries by kind. */
const storm = {
  phase: 'opening', // opening | holding | storm | after
  drops: {}, // close code of each socket's first drop
  failures: {}, // failed tries by kind
  timeline: {}, // kind -> {100 ms bin since the epoch: count}; kinds: drop, open, and every failure kind
  reconnects: 0, // sockets that opened again after their drop
  closedAfterBack: 0,
  notices: 0,
  maxAttempt: 0,
  openRefused: 0, // initial tries closed with 1013 (asked to come back later)
  lastOpenAt: 0, // epoch ms
  firstDropAt: 0,
  back: 0, // sockets dropped and open again now (so "all back" costs no scan of every socket)
};

function mark(kind, at = epochMs()) {
  const bins = (storm.timeline[kind] ||= {});
  const bin = Math.floor(at / 100);
  bins[bin] = (bins[bin] || 0) + 1;
}

function count(table, kind) {
  table[kind] = (table[kind] || 0) + 1;
}

/** Reconnections whose handshake is under way, and those waiting for their turn. */
const gate = { inFlight: 0, waiting: [] };
/** webrtc_app answers 101 before it checks its limits and its backplane, and closes a socket
 * it does not take with 1013 right after: an open counts once it stayed open this long (ms). */
const CONFIRM_MS = 500;

function released() {
  gate.inFlight -= 1;
  while (gate.inFlight < opts['storm-in-flight'] && gate.waiting.length > 0) gate.waiting.shift().open();
}

class StormSocket {
  constructor(id, peerId) {
    this.url = `${opts.url}/wscall?id=${encodeURIComponent(id)}&peer_id=${encodeURIComponent(peerId)}`;
    this.ws = null;
    this.attempt = 0; // reconnections since the last socket that stayed open a while
    this.openedAt = 0; // performance.now() of the current socket's open, 0 when not open
    this.dropped = false; // dropped by the restart (at least once)
    this.timer = null;
    this.stopping = false;
    this.firstOpen = null; // the initial open: resolve/reject
  }

  get isOpen() {
    return this.openedAt !== 0;
  }

  /** The initial open (failures are fatal then: the server is up and under no storm). */
  start() {
    return new Promise((resolve, reject) => {
      this.firstOpen = { resolve, reject };
      this.connect();
    });
  }

  connect() {
    this.timer = null;
    if (gate.inFlight >= opts['storm-in-flight']) {
      gate.waiting.push(this);
      return;
    }
    this.open();
  }

  open() {
    if (this.stopping) return;
    gate.inFlight += 1;
    let handshaking = true;
    const done = () => {
      if (handshaking) {
        handshaking = false;
        released();
      }
    };
    let failure = null;
    const ws = new WebSocket(this.url, clientOptions());
    this.ws = ws;
    ws.on('open', () => {
      done();
      this.openedAt = performance.now();
      if (this.firstOpen) {
        const first = this.firstOpen;
        setTimeout(() => {
          if (this.ws === ws && this.isOpen && this.firstOpen === first) {
            this.firstOpen = null;
            first.resolve();
          }
        }, CONFIRM_MS);
        return;
      }
      if (this.dropped) {
        storm.back++;
        storm.reconnects++;
        const at = epochMs();
        storm.lastOpenAt = Math.max(storm.lastOpenAt, at);
        mark('open', at);
        onReconnected();
      }
    });
    ws.on('message', (data) => {
      storm.notices++;
      log(`unexpected message: ${data.toString().slice(0, 120)}`);
    });
    ws.on('error', (error) => {
      failure = classify(error);
    });
    ws.on('close', (code) => {
      done();
      if (ws !== this.ws) return;
      const wasOpen = this.isOpen;
      const openFor = wasOpen ? performance.now() - this.openedAt : 0;
      this.openedAt = 0;
      if (wasOpen && this.dropped) storm.back--;
      if (this.stopping) return;
      if (this.firstOpen && code === 1013 && !failure) {
        // Asked to come back later while the sockets open (SERVER-BUSY: the backplane is
        // behind; SERVER-FULL): as the pages do, after the backoff.
        storm.openRefused += 1;
        this.retry(code);
        return;
      }
      if (this.firstOpen) {
        this.firstOpen.reject(new Failure(`socket could not open (${failure || `close ${code}`})`));
        this.firstOpen = null;
        return;
      }
      if (storm.phase === 'holding' || storm.phase === 'opening') {
        // Before the restart nothing may close a socket; the restart's drop is "storm" phase.
        recordError(new Failure(`a held socket was closed (${failure || `close ${code}`}) before the restart`));
        return;
      }
      if (wasOpen && !this.dropped) {
        this.dropped = true;
        count(storm.drops, String(code));
        const at = epochMs();
        if (!storm.firstDropAt) storm.firstDropAt = at;
        mark('drop', at);
      } else {
        // A failed try: never opened, or closed right after opening (1013).
        const kind = failure || `close ${code}`;
        count(storm.failures, kind);
        mark(kind);
        if (wasOpen) storm.closedAfterBack += storm.phase === 'after' ? 1 : 0;
      }
      // static/js/signaling.js: reset after a stable socket, wait, then one more attempt.
      if (wasOpen && openFor >= RECONNECT.stableMs) this.attempt = 0;
      this.retry(code);
      storm.maxAttempt = Math.max(storm.maxAttempt, this.attempt);
    });
  }

  /** Try again after the pages' backoff for this close code, one attempt more. */
  retry(code) {
    const wait = reconnectDelay(this.attempt, { closeCode: code });
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), wait);
  }

  close() {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    const ws = this.ws;
    if (!ws || ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        ws.terminate();
        resolve();
      }, 5000);
      ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(1000);
    });
  }
}

let sockets = [];
let backResolve = null;
let confirming = false;

function allBack() {
  return storm.back === sockets.length;
}

function onReconnected() {
  if (!backResolve || confirming || !allBack()) return;
  // Confirm that they are all still open a moment later (CONFIRM_MS).
  confirming = true;
  setTimeout(() => {
    confirming = false;
    if (backResolve && allBack()) {
      const resolve = backResolve;
      backResolve = null;
      resolve(true);
    }
  }, CONFIRM_MS);
}

export async function stormWorkload() {
  const n = opts.sockets;
  sockets = Array.from({ length: n }, (_, i) => {
    const pair = i >> 1;
    const [me, peer] = i % 2 === 0 ? ['sa', 'sb'] : ['sb', 'sa'];
    return new StormSocket(`${opts.tag}${me}${pair}`, `${opts.tag}${peer}${pair}`);
  });
  await event('ready', { sockets: n });
  const started = performance.now();
  await orFail(pool(n, opts['open-concurrency'], (i) => sockets[i].start()));
  check();
  storm.phase = 'holding';
  await event('opened', { sockets: n, seconds: (performance.now() - started) / 1000, refused: storm.openRefused });
  check();
  // The driver restarts the server now. Wait (bounded) until every socket is back.
  storm.phase = 'storm';
  const back = await new Promise((resolve) => {
    backResolve = resolve;
    setTimeout(() => {
      if (backResolve) {
        backResolve = null;
        resolve(false);
      }
    }, opts['storm-timeout'] * 1000);
  });
  const open = sockets.filter((s) => s.isOpen).length;
  await event('back', {
    sockets: n,
    complete: back,
    open,
    dropped: sockets.filter((s) => s.dropped).length,
    first_drop_at_ms: storm.firstDropAt,
    last_open_at_ms: storm.lastOpenAt,
    max_attempt: storm.maxAttempt,
  });
  storm.phase = 'after';
  await event('held', {
    sockets: n,
    open: sockets.filter((s) => s.isOpen).length,
    drops: storm.drops,
    failures: storm.failures,
    reconnects: storm.reconnects,
    closed_after_back: storm.closedAfterBack,
    notices: storm.notices,
    max_attempt: storm.maxAttempt,
    timeline: storm.timeline,
  });
  await pool(n, 500, (i) => sockets[i].close());
}
