// The pages' reconnection policy (static/js/backoff.js), run by Node's test runner.
// tests/test_reconnect.py runs this file under pytest.

import assert from "node:assert/strict";
import { test } from "node:test";
import { RECONNECT, TRY_AGAIN_LATER, reconnectDelay } from "../../static/js/backoff.js";

const SAMPLES = 2000;

function sample(attempt, options = {}) {
  return Array.from({ length: SAMPLES }, () => reconnectDelay(attempt, options));
}

test("the first retry waits between the floor and the base delay", () => {
  for (const delay of sample(0)) {
    assert.ok(delay >= RECONNECT.floorMs && delay <= RECONNECT.floorMs + RECONNECT.baseMs, `${delay}`);
  }
});

test("delays are spread, not equal: a thousand pages do not come back at once", () => {
  for (const attempt of [0, 1, 3, 6]) {
    const delays = sample(attempt);
    const distinct = new Set(delays).size;
    assert.ok(distinct > SAMPLES / 4, `attempt ${attempt}: only ${distinct} distinct delays`);
    // Full jitter: the delays fill their window, from near the floor to near the ceiling.
    const ceiling = Math.min(RECONNECT.capMs, RECONNECT.baseMs * 2 ** attempt);
    const low = Math.min(...delays) - RECONNECT.floorMs;
    const high = Math.max(...delays) - RECONNECT.floorMs;
    assert.ok(low < ceiling * 0.05 && high > ceiling * 0.95, `attempt ${attempt}: ${low}..${high} of ${ceiling}`);
  }
});

test("the window doubles with each attempt up to the cap", () => {
  const top = (attempt) => reconnectDelay(attempt, { random: () => 0.999999 });
  assert.equal(top(0), Math.round(RECONNECT.floorMs + 0.999999 * 1000));
  assert.equal(top(1), Math.round(RECONNECT.floorMs + 0.999999 * 2000));
  assert.equal(top(3), Math.round(RECONNECT.floorMs + 0.999999 * 8000));
  for (const attempt of [5, 6, 20, 1000]) {
    assert.ok(top(attempt) <= RECONNECT.floorMs + RECONNECT.capMs, `attempt ${attempt}: ${top(attempt)}`);
  }
  assert.equal(RECONNECT.capMs, 30000);
});

test("no delay is below the floor, whatever the random draw", () => {
  for (const attempt of [0, 2, 9]) assert.equal(reconnectDelay(attempt, { random: () => 0 }), RECONNECT.floorMs);
});

test("1013 SERVER-FULL waits at least five seconds, still jittered", () => {
  assert.equal(TRY_AGAIN_LATER, 1013);
  for (const attempt of [0, 1, 4]) {
    const delays = sample(attempt, { closeCode: TRY_AGAIN_LATER });
    assert.ok(Math.min(...delays) >= RECONNECT.serverFullMs, `attempt ${attempt}: ${Math.min(...delays)}`);
    assert.ok(new Set(delays).size > SAMPLES / 4);
    assert.ok(Math.max(...delays) <= RECONNECT.serverFullMs + RECONNECT.capMs);
  }
  // Other close codes keep the small floor.
  assert.ok(Math.min(...sample(0, { closeCode: 1001 })) < RECONNECT.serverFullMs);
});
