// The relay workload (docs/benchmarks.md, "relay"): caller/callee pairs, each caller sending
// --messages data messages of --size bytes, at most --window unacknowledged, the callee
// acknowledging each; a relayed message is one frame forwarded either way (as webrtc_app's
// webrtc_messages_relayed_total counts). With --url2 the callees connect there (another node,
// or the same port of several workers) and every pair is probed first (probe() below).

import { performance } from 'node:perf_hooks';

import { Client, dataPayload, decode } from './client.mjs';
import { check, counts, epochMs, Failure, orFail, pool, rawSamples, recordError, summary } from './common.mjs';
import { event } from './driver.mjs';
import { opts } from './options.mjs';

export async function relay() {
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
  await event('ready', { sockets: counts.opened });
  const rtts = [];
  const startedAt = epochMs();
  const started = performance.now();
  await orFail(phase(opts.messages, rtts));
  const seconds = (performance.now() - started) / 1000;
  const endedAt = epochMs();
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
    started_at_ms: startedAt,
    ended_at_ms: endedAt,
    ...(opts.raw ? { rtt_samples_ms: rawSamples(rtts) } : {}),
  });
  await Promise.all(pairs.flatMap(({ caller, callee }) => [caller.close(), callee.close()]));
}

/**
 * Across nodes: every pair delivers both ways before anything is measured (docs/benchmarks.md,
 * "Before measuring, every pair must deliver"). Each caller sends {"type":"probe","n":k} until
 * the callee's {"type":"probe-ack","n":k} arrives, retrying after a notice or 1 s of silence,
 * `probe-tries` times at most. Answers the counts; any notice after this fails the run.
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
