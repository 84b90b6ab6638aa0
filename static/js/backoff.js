// When to reconnect the signaling socket: exponential backoff with "full jitter", so that
// thousands of pages dropped by one server restart do not all come back at the same instant.
// webrtc_client.py follows the same policy with the same numbers (tests/test_reconnect.py
// checks they agree); docs/protocol.md explains it.

export const RECONNECT = Object.freeze({
  baseMs: 1000, // the first retry waits up to this long
  capMs: 30000, // the random part never exceeds this
  floorMs: 250, // the least wait, so that a refusing server is never hammered
  serverFullMs: 5000, // the least wait after close code 1013 (SERVER-FULL, "try again later")
  stableMs: 10000, // a socket open this long counts as a success: the next drop starts over
});

export const TRY_AGAIN_LATER = 1013;

// The wait before reconnection number `attempt` (0 for the first retry after a drop):
// a floor plus a random part in [0, min(cap, base * 2^attempt)].
// `random` is injectable for tests; it must answer a number in [0, 1).
export function reconnectDelay(attempt, { closeCode = null, random = Math.random } = {}) {
  const ceiling = Math.min(RECONNECT.capMs, RECONNECT.baseMs * 2 ** Math.max(0, attempt));
  const floor = closeCode === TRY_AGAIN_LATER ? RECONNECT.serverFullMs : RECONNECT.floorMs;
  return Math.round(floor + random() * ceiling);
}
