// Runs the PeerJS server (npm package `peer`) for the benchmarks the way an application embeds
// it, PeerServer({...}), without its CLI's log line for every socket (docs/benchmarks.md, "PeerJS").
//
//   BENCH_PEER_MODULES=/path/to/node_modules node bench/peerjs_server.mjs --port 0 [--host 127.0.0.1]
//
// Prints `peerjs listening on http://HOST:PORT (pid N)` on stdout once it accepts connections.
// Options: --concurrent_limit (default 100000 here, 5000 in peer), --alive_timeout (peer's
// default 90000 ms), --path (default "/": sockets at /peerjs).

import { createRequire } from 'node:module';
import path from 'node:path';

const requirePeer = createRequire(
  process.env.BENCH_PEER_MODULES ? path.join(process.env.BENCH_PEER_MODULES, 'noop.js') : import.meta.url,
);
const { PeerServer } = requirePeer('peer');

const options = { host: '127.0.0.1', port: 0, path: '/', concurrent_limit: 100000 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const name = argv[i].replace(/^--/, '');
  const value = argv[i + 1];
  if (value === undefined) {
    process.stderr.write(`peerjs_server: ${argv[i]} needs a value\n`);
    process.exit(2);
  }
  options[name] = /^\d+$/.test(value) ? Number(value) : value;
}

const peer = PeerServer(options, (server) => {
  const { address, port } = server.address();
  process.stdout.write(`peerjs listening on http://${address}:${port} (pid ${process.pid})\n`);
});
peer.on('error', (error) => process.stderr.write(`peerjs error: ${error && error.stack ? error.stack : error}\n`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
