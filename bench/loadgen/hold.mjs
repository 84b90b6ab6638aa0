// Idle sockets held (docs/benchmarks.md, "idle" and "capacity"): sockets opened in pairs that
// name each other, step by step up to each of --steps (idle) or all --sockets at once (capacity,
// this process's share), the driver sampling the server after each step, then held while it
// measures, counting the pings and heartbeats that keep them alive. Capacity then opens
// --overflow sockets beyond what the server holds and says how each was answered.

import { performance } from 'node:perf_hooks';

import { Client, clientOptions, WebSocket } from './client.mjs';
import { check, counts, Failure, orFail, pool, summary } from './common.mjs';
import { event } from './driver.mjs';
import { opts } from './options.mjs';

async function hold(steps, readyData) {
  const clients = [];
  await event('ready', readyData);
  for (const target of steps) {
    const from = clients.length;
    const started = performance.now();
    for (let n = from; n < target; n++) {
      const [me, peer] = n % 2 === 0 ? ['ia', 'ib'] : ['ib', 'ia'];
      clients.push(new Client(`${opts.tag}${me}${n >> 1}`, `${opts.tag}${peer}${n >> 1}`));
    }
    await orFail(pool(target - from, opts['open-concurrency'], (i) => clients[from + i].connect()));
    const seconds = (performance.now() - started) / 1000;
    check();
    if (counts.opened !== target) throw new Failure(`${counts.opened} sockets open, expected ${target}`);
    await event('opened', { sockets: target, batch: target - from, seconds, opened_per_s: (target - from) / seconds });
  }
  // The driver holds the sockets idle for as long as it measures, then says go.
  const pings = counts.pingsReceived;
  const heartbeats = counts.heartbeatsSent;
  await event('holding', { sockets: clients.length });
  check();
  await event('held', {
    sockets: clients.length,
    unexpected_closes: counts.unexpectedCloses,
    pings_received: counts.pingsReceived - pings,
    heartbeats_sent: counts.heartbeatsSent - heartbeats,
  });
  if (counts.unexpectedCloses) throw new Failure(`${counts.unexpectedCloses} held sockets were closed by the server`);
  return clients;
}

export async function idle() {
  const clients = await hold(opts.steps.split(',').map(Number), {});
  await pool(clients.length, 500, (i) => clients[i].close());
}

export async function capacity() {
  const clients = await hold([opts.sockets], { sockets: opts.sockets });
  // Every load generator of the group says it, those with no --overflow too.
  const extra = opts.overflow > 0 ? await overflow(opts.overflow) : { sockets: 0, outcomes: {}, verdict_ms: summary([]) };
  check();
  await event('overflowed', extra);
  await pool(clients.length, 500, (i) => clients[i].close());
}

/**
 * Open `count` sockets beyond what the server holds, `open-concurrency` at a time: how each was
 * answered, {outcomes: {kind: count}, verdict_ms: summary}. Kinds: "close CODE" (opened, then
 * closed with CODE: webrtc_app's 1013 SERVER-FULL), "http STATUS" (503: its front door out of
 * descriptors), "reset", "refused", "timeout", "held" (still open --overflow-wait-ms later, or
 * PeerJS's OPEN received), "hung" (no verdict by then).
 */
async function overflow(count) {
  const outcomes = {};
  const times = [];
  const held = [];
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
      const ws = new WebSocket(url(k), clientOptions());
      const verdict = (kind) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (kind === 'held') held.push(ws);
        else if (kind === 'hung') ws.terminate();
        outcomes[kind] = (outcomes[kind] || 0) + 1;
        if (kind !== 'held' && kind !== 'hung') times.push(performance.now() - started);
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
