// The quality panel's numbers (static/js/stats.js) from getStats()-shaped reports, run by
// Node's test runner. The reports follow what Chromium and Firefox give (field names of the
// W3C "Identifiers for WebRTC's Statistics API").

import assert from "node:assert/strict";
import { test } from "node:test";
import { assess, summarize } from "../../static/js/stats.js";

// A Chromium-like report one second into a call: audio and video each way, a direct pair.
function chromiumReport({ bytesIn = 0, bytesOut = 0, packetsIn = 0, lostIn = 0, rtt = 0.004, localType = "host", relayProtocol } = {}) {
  const stats = [
    { id: "T", type: "transport", selectedCandidatePairId: "P" },
    { id: "P", type: "candidate-pair", localCandidateId: "L", remoteCandidateId: "R", currentRoundTripTime: rtt, state: "succeeded" },
    { id: "L", type: "local-candidate", candidateType: localType, protocol: "udp", relayProtocol },
    { id: "R", type: "remote-candidate", candidateType: "host", protocol: "udp" },
    { id: "CV", type: "codec", mimeType: "video/VP8" },
    { id: "CO", type: "codec", mimeType: "video/VP9" },
    { id: "CA", type: "codec", mimeType: "audio/opus" },
    { id: "IA", type: "inbound-rtp", kind: "audio", codecId: "CA", bytesReceived: bytesIn / 4, packetsReceived: packetsIn / 2, packetsLost: lostIn / 2 },
    {
      id: "IV",
      type: "inbound-rtp",
      kind: "video",
      codecId: "CV",
      bytesReceived: (bytesIn * 3) / 4,
      packetsReceived: packetsIn / 2,
      packetsLost: lostIn / 2,
      frameWidth: 640,
      frameHeight: 480,
      framesPerSecond: 20,
    },
    { id: "OA", type: "outbound-rtp", kind: "audio", codecId: "CA", bytesSent: bytesOut / 4 },
    { id: "OV", type: "outbound-rtp", kind: "video", codecId: "CO", bytesSent: (bytesOut * 3) / 4 },
  ];
  return new Map(stats.map((stat) => [stat.id, stat]));
}

test("the first sample has the path, codec and picture but no rates yet", () => {
  const summary = summarize(chromiumReport({ bytesIn: 1000, bytesOut: 1000, packetsIn: 10 }), null, 1000);
  assert.equal(summary.kbpsIn, null);
  assert.equal(summary.lossIn, null);
  assert.equal(summary.rttMs, 4);
  assert.deepEqual([summary.width, summary.height, summary.fps], [640, 480, 20]);
  assert.deepEqual([summary.codecIn, summary.codecOut], ["VP8", "VP9"]);
  assert.deepEqual(summary.path, { kind: "direct", text: "Direct (UDP, host to host)" });
  assert.equal(assess(summary), null);
});

test("bitrates both ways and loss come from the difference between two samples", () => {
  const first = summarize(chromiumReport({ bytesIn: 10000, bytesOut: 20000, packetsIn: 100, lostIn: 0 }), null, 1000);
  // 2 s later: 250,000 bytes more in (1000 kbps), 125,000 more out (500 kbps), 90 packets, 10 lost.
  const second = summarize(chromiumReport({ bytesIn: 260000, bytesOut: 145000, packetsIn: 190, lostIn: 10 }), first, 3000);
  assert.equal(second.kbpsIn, 1000);
  assert.equal(second.kbpsOut, 500);
  assert.equal(second.lossIn, 10);
  assert.equal(assess(second), "Poor connection: 10% of packets lost");
});

test("a new connection (counters back to zero) gives no rate rather than a negative one", () => {
  const old = summarize(chromiumReport({ bytesIn: 900000, bytesOut: 900000, packetsIn: 900 }), null, 1000);
  const fresh = summarize(chromiumReport({ bytesIn: 1000, bytesOut: 1000, packetsIn: 10 }), old, 2000);
  assert.equal(fresh.kbpsIn, null);
  assert.equal(fresh.lossIn, null);
});

test("a relayed path is named, with the protocol to the relay", () => {
  const summary = summarize(chromiumReport({ localType: "relay", relayProtocol: "tcp" }), null, 1000);
  assert.deepEqual(summary.path, { kind: "relay", text: "Through a TURN relay (TCP)" });
  // The far side of a relayed call sees the relay as the remote candidate.
  const report = chromiumReport();
  report.get("R").candidateType = "relay";
  assert.equal(summarize(report, null, 1000).path.kind, "relay");
});

test("Firefox: the selected pair is marked, and the round trip comes from RTCP", () => {
  const report = chromiumReport();
  report.delete("T");
  const pair = report.get("P");
  pair.selected = true;
  delete pair.currentRoundTripTime;
  report.set("RI", { id: "RI", type: "remote-inbound-rtp", kind: "video", roundTripTime: 0.5, fractionLost: 0.02 });
  const summary = summarize(report, null, 1000);
  assert.equal(summary.path.kind, "direct");
  assert.equal(summary.rttMs, 500);
  assert.equal(summary.lossOut, 2);
  assert.equal(assess(summary), "Poor connection: 500 ms round trip");
});

test("no pair chosen yet: no path, and a quiet report is not called poor", () => {
  const summary = summarize(new Map(), null, 1000);
  assert.equal(summary.path, null);
  assert.equal(summary.rttMs, null);
  assert.equal(assess(summary), null);
});
