// Load generator for the signaling benchmarks (docs/benchmarks.md, "The load generator"): one
// Node.js process speaking webrtc_app's protocol or PeerJS's, driving one workload:
//
//   node bench/loadgen.mjs --proto webrtc|peerjs --url ws://127.0.0.1:PORT --workload relay|calls|idle|capacity|storm [options]
//
// Its modules are in bench/loadgen/: options.mjs (every option and its default), driver.mjs
// (the EVENT/go link with bench/run.py), client.mjs (a socket in either protocol), common.mjs
// (counters, the first error, pools, percentiles), and relay.mjs, calls.mjs, hold.mjs (idle and
// capacity) and storm.mjs. It needs the `ws` package (BENCH_NODE_MODULES: the node_modules
// folder holding it). Every wait is bounded by --timeout seconds: past it the process exits 3.

import { calls } from './loadgen/calls.mjs';
import { check, counts } from './loadgen/common.mjs';
import { say } from './loadgen/driver.mjs';
import { capacity, idle } from './loadgen/hold.mjs';
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
