// The link with the Python driver (bench/loadgen.py): at every measurement point the load
// generator prints one line `EVENT {"event": NAME, ...}` on stdout and waits for a line `go`
// on stdin, so the driver can read the server's CPU time and memory at that exact point.

import { performance } from 'node:perf_hooks';
import readline from 'node:readline';

const stdinLines = [];
const stdinWaiters = [];
let stdinClosed = false;
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
  const waiter = stdinWaiters.shift();
  if (waiter) waiter.resolve(line.trim());
  else stdinLines.push(line.trim());
});
rl.on('close', () => {
  stdinClosed = true;
  for (const waiter of stdinWaiters.splice(0)) waiter.reject(new Error('stdin closed: the driver is gone'));
});

function nextLine() {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  if (stdinClosed) return Promise.reject(new Error('stdin closed: the driver is gone'));
  return new Promise((resolve, reject) => stdinWaiters.push({ resolve, reject }));
}

/** Print an event without waiting (the last one: `done` or `error`). */
export function say(name, data = {}) {
  process.stdout.write(`EVENT ${JSON.stringify({ event: name, t: performance.now() / 1000, ...data })}\n`);
}

/** Print an event and wait for the driver's `go`. */
export async function event(name, data = {}) {
  say(name, data);
  const line = await nextLine();
  if (line !== 'go') throw new Error(`driver said ${JSON.stringify(line)} instead of go`);
}
