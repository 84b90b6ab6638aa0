// The capacity workload (docs/benchmarks.md, "capacity"): this process's share of the most
// sockets one server process holds. It opens --sockets sockets (in pairs that name each
// other, as the idle workload does), holds them while the driver measures, then, with
// --overflow N, opens N more sockets than the server holds and reports how each was answered:
// refused at once (webrtc_app: 1013 SERVER-FULL after the handshake; 503 when out of
// descriptors), cut (a reset or a close without a code), held all the same, or left hanging.
// Several load generators run it side by side, each from its own source address.

import { performance } from 'node:perf_hooks';

import { Client, CLIENT_OPTIONS, WebSocket } from './client.mjs';
import { check, counts, Failure, orFail, pool, summary } from './common.mjs';
import { event } from './driver.mjs';
import { opts } from './options.mjs';

export async function capacity() {
  const n = opts.sockets;
  const clients = [];
  for (let i = 0; i < n; i++) {
    const pair = i >> 1;
    const [me, peer] = i % 2 === 0 ? ['ka', 'kb'] : ['kb', 'ka'];
    clients.push(new Client(`${opts.tag}${me}${pair}`, `${opts.tag}${peer}${pair}`));
  }
  await event('ready', { sockets: n });
  const started = performance.now();
  await orFail(pool(n, opts['open-concurrency'], (i) => clients[i].connect()));
  const seconds = (performance.now() - started) / 1000;
  check();
  if (counts.opened !== n) throw new Failure(`${counts.opened} sockets open, expected ${n}`);
  await event('opened', { sockets: n, seconds, opened_per_s: n / seconds });
  const pings = counts.pingsReceived;
  const heartbeats = counts.heartbeatsSent;
  await event('holding', { sockets: n });
  check();
  await event('held', {
    sockets: n,
    unexpected_closes: counts.unexpectedCloses,
    pings_received: counts.pingsReceived - pings,
    heartbeats_sent: counts.heartbeatsSent - heartbeats,
  });
  if (counts.unexpectedCloses) throw new Failure(`${counts.unexpectedCloses} held sockets were closed by the server`);
  // Every load generator of the group says it, those with no --overflow too.
  const extra = opts.overflow > 0 ? await overflow(opts.overflow) : { sockets: 0, outcomes: {}, verdict_ms: summary([]) };
  check();
  await event('overflowed', extra);
  await pool(clients.length, 500, (i) => clients[i].close());
}

/**
 * Open `count` sockets beyond what the server holds, `open-concurrency` at a time, and
 * answer how each was answered and how fast: {outcomes: {kind: count}, verdict_ms: summary}.
 * Kinds: "close CODE" (opened, then closed by the server with CODE), "http STATUS" (the
 * handshake was answered STATUS), "reset", "refused", "timeout" (no handshake answer),
 * "held" (opened and still open --overflow-wait-ms later, or PeerJS's OPEN received),
 * "hung" (no verdict at all by then).
 */
async function overflow(count) {
  const outcomes = {};
  const times = [];
  const held = [];
  const settle = (kind, started) => {
    outcomes[kind] = (outcomes[kind] || 0) + 1;
    if (kind !== 'held' && kind !== 'hung') times.push(performance.now() - started);
  };
  const url = (k) => {
    const id = encodeURIComponent(`${opts.tag}ko${k}`);
    if (opts.proto === 'webrtc') return `${opts.url}/wscall?id=${id}&peer_id=${id}p`;
    return `${opts.url}/peerjs?key=${opts.key}&id=${id}&token=t${k}`;
  };
  await pool(count, opts['open-concurrency'], (k) => {
    const started = performance.now();
    return new Promise((resolve) => {
      let done = false;
      let failure = null;
      const ws = new WebSocket(url(k), CLIENT_OPTIONS);
      const verdict = (kind) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (kind === 'held') held.push(ws);
        else if (kind === 'hung') ws.terminate();
        settle(kind, started);
        resolve();
      };
      const timer = setTimeout(() => verdict(ws.readyState === WebSocket.OPEN ? 'held' : 'hung'), opts['overflow-wait-ms']);
      ws.on('error', (error) => {
        failure = classify(error);
      });
      ws.on('message', (data) => {
        // PeerJS: its OPEN means the socket was taken. webrtc_app sends nothing on its own.
        if (opts.proto === 'peerjs' && data.toString().includes('"OPEN"')) verdict('held');
      });
      ws.on('close', (code) => verdict(failure || `close ${code}`));
    });
  });
  for (const ws of held) ws.close(1000);
  return { sockets: count, outcomes, verdict_ms: summary(times) };
}

/** What went wrong with a handshake, from ws's error. */
export function classify(error) {
  const message = String((error && error.message) || error);
  const status = message.match(/Unexpected server response: (\d+)/);
  if (status) return `http ${status[1]}`;
  if (error && error.code === 'ECONNREFUSED') return 'refused';
  if ((error && error.code === 'ECONNRESET') || /socket hang up/.test(message)) return 'reset';
  if (/handshake has timed out/i.test(message)) return 'timeout';
  return `error ${(error && error.code) || message.slice(0, 60)}`;
}
