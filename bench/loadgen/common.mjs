// What the workloads share: the run's counters, its first error (which fails every wait at
// once), a pool of concurrent tasks, and percentiles.

import { performance } from 'node:perf_hooks';

/** A failure of the server under test (a lost, duplicated or misrouted message, a closed socket). */
export class Failure extends Error {}

export const counts = {
  opened: 0, // sockets that completed their open (and PeerJS's OPEN)
  unexpectedCloses: 0,
  pingsReceived: 0,
  heartbeatsSent: 0,
  notices: 0, // webrtc_app SERVER_NOTICE frames, PeerJS ERROR/EXPIRE/LEAVE/ID-TAKEN frames
};

let firstError = null;

// Rejected by the first error of any socket, so a workload waiting on sockets fails at once
// instead of at --timeout: every wait races against it (orFail).
let failNow;
const failed = new Promise((_, reject) => {
  failNow = reject;
});
failed.catch(() => {});

/** Remember the first error of the run; every wait under orFail() then fails with it. */
export function recordError(error) {
  if (!firstError) {
    firstError = error;
    failNow(error);
  }
}

/** `promise`, or the run's first error if that comes first. */
export const orFail = (promise) => Promise.race([promise, failed]);

/** Throw the run's first error, if any. */
export function check() {
  if (firstError) throw firstError;
}

/** Run `task(0..count-1)`, `concurrency` at a time. */
export async function pool(count, concurrency, task) {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const n = next++;
      await task(n);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** Milliseconds since the epoch, to the µs: comparable across processes (and with the driver's clock). */
export const epochMs = () => performance.timeOrigin + performance.now();

/** `values` (ms) rounded to the µs, for the driver to merge with other load generators' (--raw 1). */
export const rawSamples = (values) => Array.from(values, (x) => Math.round(x * 1000) / 1000);

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

/** Count, p50, p99 and max of `values` (ms), to the µs. */
export function summary(values) {
  const sorted = Float64Array.from(values).sort();
  const round = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return {
    count: sorted.length,
    p50: round(percentile(sorted, 0.5)),
    p99: round(percentile(sorted, 0.99)),
    max: round(sorted.length ? sorted[sorted.length - 1] : null),
  };
}
