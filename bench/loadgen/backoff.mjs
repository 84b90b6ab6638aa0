// The pages' reconnection policy, for the reconnect storm (storm.mjs). It mirrors
// static/js/backoff.js (branch issue-10-client): the same numbers and the same formula; change
// both together. Exponential backoff with "full jitter": the wait before reconnection number
// `attempt` (0 for the first retry after a drop) is a floor plus a random part in
// [0, min(cap, base * 2^attempt)], the floor being longer after 1013 SERVER-FULL.

export const RECONNECT = Object.freeze({
  baseMs: 1000, // the first retry waits up to this long
  capMs: 30000, // the random part never exceeds this
  floorMs: 250, // the least wait, so that a refusing server is never hammered
  serverFullMs: 5000, // the least wait after close code 1013 (SERVER-FULL, "try again later")
  stableMs: 10000, // a socket open this long counts as a success: the next drop starts over
});

export const TRY_AGAIN_LATER = 1013;

/** The wait (ms) before reconnection number `attempt`; `random` answers a number in [0, 1). */
export function reconnectDelay(attempt, { closeCode = null, random = Math.random } = {}) {
  const ceiling = Math.min(RECONNECT.capMs, RECONNECT.baseMs * 2 ** Math.max(0, attempt));
  const floor = closeCode === TRY_AGAIN_LATER ? RECONNECT.serverFullMs : RECONNECT.floorMs;
  return Math.round(floor + random() * ceiling);
}
