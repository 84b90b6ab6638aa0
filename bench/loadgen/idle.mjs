// The idle workload (docs/benchmarks.md, "idle"): open sockets step by step up to each of
// --steps (the driver samples the server after each step), then hold them all while the
// driver measures, counting the pings and heartbeats that keep them alive.

import { performance } from 'node:perf_hooks';

import { Client } from './client.mjs';
import { check, counts, Failure, orFail, pool } from './common.mjs';
import { event } from './driver.mjs';
import { opts } from './options.mjs';

export async function idle() {
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
  if (counts.unexpectedCloses) throw new Failure(`${counts.unexpectedCloses} idle sockets were closed by the server`);
  await pool(clients.length, 500, (i) => clients[i].close());
}
