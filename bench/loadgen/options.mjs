// The load generator's options and their defaults: the command line of bench/loadgen.mjs.
// One process is one run, so the options are parsed once, when this module is first imported.

export const DEFAULTS = {
  proto: 'webrtc', // webrtc | peerjs
  url: '', // ws://127.0.0.1:PORT (no path)
  url2: '', // relay only: the callees connect here (another node of a cluster) instead of --url
  workload: 'relay', // relay | calls | idle | capacity | storm
  tag: 'x', // prefix of every id, so rounds (and the processes of one run) never collide
  timeout: 300, // seconds: the whole run, waits included
  'local-address': '', // source address(es) of the sockets, comma-separated, taken in turn ('' for the system's)
  raw: 0, // 1: the measured event carries every sample, for the driver to merge several load generators' percentiles
  // relay
  pairs: 50,
  messages: 1000, // measured data messages per caller
  warmup: 100, // data messages per caller before the measurement
  window: 20, // unacknowledged data messages in flight per caller
  size: 200, // bytes of each data frame the caller sends
  'probe-tries': 100, // with --url2: probes per pair before giving up (one every 50 ms at most, 1 s each)
  // calls
  calls: 1000,
  'warmup-calls': 50,
  concurrency: 50,
  candidates: 9, // per side: 1 offer + 1 answer + 2 * 9 candidates = 20 messages a call
  'sdp-size': 1000, // bytes of the offer and answer frames
  'candidate-size': 200,
  // idle
  steps: '4000,10000', // hold this many sockets, step by step
  'open-concurrency': 50, // handshakes in flight while opening (capacity and storm too)
  // capacity and storm: the sockets this process opens and holds
  sockets: 1000,
  // capacity: after the hold, sockets opened beyond what the server holds, to see how each is refused
  overflow: 0,
  'overflow-wait-ms': 10000, // an overflow socket with no verdict after this long is "hung"
  // storm: the longest wait for every socket to come back after the restart (s)
  'storm-timeout': 120,
  // storm: reconnections whose handshake is under way at once in this process; the others wait
  // their turn. Each of the many clients one process stands for sends its request head as soon
  // as it connects; a single Node process that started thousands of connections in one turn
  // of its loop would send their heads seconds later (see docs/benchmarks.md, "storm").
  'storm-in-flight': 400,
  cork: -1, // 1: a socket's frames of one turn of the event loop go out in one write (-1: on for relay only)
  // PeerJS clients send {"type":"HEARTBEAT"} every pingInterval ms (peerjs' default 5000)
  'peerjs-heartbeat-ms': 5000,
  key: 'peerjs',
};

/** `--name value` pairs over DEFAULTS; a wrong option exits with status 2. */
export function parseArgs(argv) {
  const opts = { ...DEFAULTS };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) die(`unexpected argument ${arg}`);
    const name = arg.slice(2);
    if (!(name in DEFAULTS)) die(`unknown option ${arg}`);
    const value = argv[++i];
    if (value === undefined) die(`${arg} needs a value`);
    opts[name] = typeof DEFAULTS[name] === 'number' ? Number(value) : value;
    if (typeof DEFAULTS[name] === 'number' && !Number.isFinite(opts[name])) die(`${arg}: not a number: ${value}`);
  }
  if (!['webrtc', 'peerjs'].includes(opts.proto)) die(`--proto must be webrtc or peerjs`);
  if (!['relay', 'calls', 'idle', 'capacity', 'storm'].includes(opts.workload)) {
    die('--workload must be relay, calls, idle, capacity or storm');
  }
  if (opts.workload === 'storm' && opts.proto !== 'webrtc') die('--workload storm is for --proto webrtc only');
  if (!opts.url.startsWith('ws://')) die('--url ws://HOST:PORT is required');
  if (opts.url2) {
    if (!opts.url2.startsWith('ws://')) die('--url2 must be ws://HOST:PORT');
    if (opts.workload !== 'relay' || opts.proto !== 'webrtc') die('--url2 is for --proto webrtc --workload relay only');
  }
  if (opts.cork === -1) opts.cork = opts.workload === 'relay' ? 1 : 0;
  return opts;
}

function die(message) {
  process.stderr.write(`loadgen: error: ${message}\n`);
  process.exit(2);
}

/** This run's options. */
export const opts = parseArgs(process.argv.slice(2));

/** A progress or error line on stderr (stdout is the driver's). */
export const log = (message) => process.stderr.write(`loadgen[${opts.proto}/${opts.workload}]: ${message}\n`);
