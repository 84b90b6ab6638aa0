// Load generator for the signaling benchmarks (docs/benchmarks.md): one Node.js process
// speaking either webrtc_app's protocol or PeerJS's, driving one workload.
//
//   node bench/loadgen.mjs --proto webrtc|peerjs --url ws://127.0.0.1:PORT --workload relay|calls|idle|capacity|storm [options]
//
// Its parts are in bench/loadgen/: options.mjs (every option and its default), driver.mjs
// (the link with bench/run.py), client.mjs (a socket in either protocol), common.mjs (the
// run's counters and first error, pools, percentiles), and one module per workload:
// relay.mjs, calls.mjs, idle.mjs, capacity.mjs and storm.mjs (with the pages' own
// reconnection policy, static/js/backoff.js).
//
// Several load generators can share one workload (the driver splits it between them and
// sums the results): each then gets its own --tag and --local-address (127.0.0.2, ...), and
// with --raw 1 its measured event carries every sample so the percentiles can be merged.
//
// Across nodes (webrtc_app's Redis backplane): `--workload relay --url2 ws://127.0.0.1:PORT2`
// connects the callers to --url and the callees to --url2, so every message and every
// acknowledgement goes from one node to the other through Redis. Before the warm-up it then
// probes every pair until a message gets through both ways (the first probe should: the
// probes check it) and prints `EVENT {"event": "probed", ...}`; from then on any
// PEER-UNAVAILABLE notice fails the run. --url2 may be --url itself (one server of several
// worker processes on one port): the kernel then decides where each socket lands.
//
// It needs the `ws` package: set BENCH_NODE_MODULES to the node_modules folder holding it
// (bench/run.py installs it into a temporary folder), or run it where `ws` resolves.
//
// Talking to bench/run.py: at every measurement point the load generator prints one line
// `EVENT {"event": NAME, ...}` on stdout and waits for a line `go` on stdin, so the driver
// can read the server's CPU time and memory at that exact point. The last line is
// `EVENT {"event": "done", ...}` (no wait). Progress and errors go to stderr. Every wait is
// bounded by --timeout seconds: past it the process exits with status 3.
//
// Counting: a "relayed message" is one text frame that the server forwarded from one client
// to another, in either direction (data messages and acknowledgements alike): exactly what
// webrtc_app counts in webrtc_messages_relayed_total. Heartbeats and pings are not counted.

import { calls } from './loadgen/calls.mjs';
import { capacity } from './loadgen/capacity.mjs';
import { check, counts } from './loadgen/common.mjs';
import { say } from './loadgen/driver.mjs';
import { idle } from './loadgen/idle.mjs';
import { log, opts } from './loadgen/options.mjs';
import { relay } from './loadgen/relay.mjs';
import { stormWorkload } from './loadgen/storm.mjs';

// Everything is bounded in time: the whole process, whatever it waits for.
const killer = setTimeout(() => {
  log(`timed out after ${opts.timeout} s`);
  process.exit(3);
}, opts.timeout * 1000);

const workloads = { relay, calls, idle, capacity, storm: stormWorkload };

try {
  await workloads[opts.workload]();
  check();
  say('done', { notices: counts.notices, unexpected_closes: counts.unexpectedCloses });
  clearTimeout(killer);
  process.exit(0);
} catch (error) {
  log(`failed: ${error && error.stack ? error.stack : error}`);
  process.stdout.write(`EVENT ${JSON.stringify({ event: 'error', message: String(error && error.message ? error.message : error) })}\n`);
  process.exit(1);
}
