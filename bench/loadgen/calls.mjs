// The calls workload (docs/benchmarks.md, "calls"): --calls calls, --concurrency at a time;
// in each both sides connect, the caller offers, the callee answers and both send their
// --candidates candidates, then both close.

import { performance } from 'node:perf_hooks';

import { Client, decode, padded } from './client.mjs';
import { check, epochMs, Failure, orFail, pool, rawSamples, summary } from './common.mjs';
import { event } from './driver.mjs';
import { opts } from './options.mjs';

export async function calls() {
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
  const startedAt = epochMs();
  const started = performance.now();
  await orFail(pool(opts.calls, opts.concurrency, (n) => oneCall(n, setups)));
  const seconds = (performance.now() - started) / 1000;
  const endedAt = epochMs();
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
    started_at_ms: startedAt, // since the epoch: the driver sums several load generators' calls over their common span
    ended_at_ms: endedAt,
    ...(opts.raw ? { setup_samples_ms: rawSamples(setups) } : {}),
  });
}
