// What the quality panel shows, computed from one RTCPeerConnection.getStats() report and the
// one before it. Pure functions: the tests feed them Maps of plain objects, as a report is a
// Map of dictionaries (tests/js/stats.test.mjs).

// A call is "poor" from these on: people notice frozen video and broken speech past a few
// percent of loss, and talk over each other past a few hundred milliseconds of round trip.
export const POOR = Object.freeze({ lossPercent: 5, rttMs: 400 });

// The numbers of one sample. `previous` is the sample a second ago (or null); `at` is now in
// milliseconds (performance.now()). Rates and loss need two samples: until then they are null.
export function summarize(report, previous = null, at = 0) {
  const totals = { at, bytesIn: 0, bytesOut: 0, packetsIn: 0, lostIn: 0 };
  let video = null; // the received video (inbound-rtp)
  let codecIn = null;
  let codecOut = null;
  let remoteRttMs = null; // RTCP round trip, where the pair has none (Firefox)
  let lossOut = null; // what the peer reports losing of ours (RTCP), in percent
  report.forEach((stat) => {
    if (stat.type === "inbound-rtp") {
      totals.bytesIn += stat.bytesReceived || 0;
      totals.packetsIn += stat.packetsReceived || 0;
      totals.lostIn += Math.max(0, stat.packetsLost || 0);
      if (stat.kind === "video") {
        video = stat;
        codecIn = codecName(report, stat) || codecIn;
      }
    } else if (stat.type === "outbound-rtp") {
      totals.bytesOut += stat.bytesSent || 0;
      if (stat.kind === "video") codecOut = codecName(report, stat) || codecOut;
    } else if (stat.type === "remote-inbound-rtp") {
      if (Number.isFinite(stat.fractionLost)) lossOut = Math.max(lossOut ?? 0, stat.fractionLost * 100);
      if (Number.isFinite(stat.roundTripTime)) remoteRttMs = stat.roundTripTime * 1000;
    }
  });
  const pair = selectedPair(report);
  const pairRtt = pair && Number.isFinite(pair.currentRoundTripTime) ? pair.currentRoundTripTime * 1000 : null;
  // A new connection starts its counters again: no rate across two connections.
  const comparable = previous && at > previous.at && totals.bytesIn >= previous.totals.bytesIn && totals.bytesOut >= previous.totals.bytesOut;
  const seconds = comparable ? (at - previous.at) / 1000 : 0;
  let lossIn = null;
  if (comparable) {
    const received = totals.packetsIn - previous.totals.packetsIn;
    const lost = Math.max(0, totals.lostIn - previous.totals.lostIn);
    lossIn = received + lost > 0 ? (100 * lost) / (received + lost) : 0;
  }
  return {
    at,
    totals,
    rttMs: pairRtt ?? remoteRttMs,
    lossIn,
    lossOut,
    kbpsIn: comparable ? ((totals.bytesIn - previous.totals.bytesIn) * 8) / 1000 / seconds : null,
    kbpsOut: comparable ? ((totals.bytesOut - previous.totals.bytesOut) * 8) / 1000 / seconds : null,
    width: video && video.frameWidth ? video.frameWidth : null,
    height: video && video.frameHeight ? video.frameHeight : null,
    fps: video && Number.isFinite(video.framesPerSecond) ? video.framesPerSecond : null,
    codecIn,
    codecOut,
    path: pathOf(report, pair),
  };
}

// The candidate pair the connection uses: Chromium names it in the transport stats, Firefox
// marks it "selected".
export function selectedPair(report) {
  let pair = null;
  report.forEach((stat) => {
    if (stat.type === "transport" && stat.selectedCandidatePairId) pair = report.get(stat.selectedCandidatePairId) || pair;
  });
  if (!pair) {
    report.forEach((stat) => {
      if (stat.type === "candidate-pair" && stat.selected) pair = stat;
    });
  }
  return pair;
}

// "direct" or "relay" (through a TURN server), with words for a person; null before a path is chosen.
export function pathOf(report, pair) {
  if (!pair) return null;
  const local = report.get(pair.localCandidateId) || {};
  const remote = report.get(pair.remoteCandidateId) || {};
  const protocol = (local.protocol || "udp").toUpperCase();
  if (local.candidateType === "relay" || remote.candidateType === "relay") {
    const leg = local.candidateType === "relay" && local.relayProtocol ? local.relayProtocol.toUpperCase() : protocol;
    return { kind: "relay", text: `Through a TURN relay (${leg})` };
  }
  return { kind: "direct", text: `Direct (${protocol}, ${local.candidateType || "?"} to ${remote.candidateType || "?"})` };
}

function codecName(report, stat) {
  const codec = stat.codecId && report.get(stat.codecId);
  return codec && codec.mimeType ? codec.mimeType.split("/")[1] : null;
}

// Words for a poor connection, or null when it is fine.
export function assess(summary) {
  const problems = [];
  const loss = Math.max(summary.lossIn ?? 0, summary.lossOut ?? 0);
  if (loss >= POOR.lossPercent) problems.push(`${Math.round(loss)}% of packets lost`);
  if (summary.rttMs !== null && summary.rttMs >= POOR.rttMs) problems.push(`${Math.round(summary.rttMs)} ms round trip`);
  return problems.length ? `Poor connection: ${problems.join(", ")}` : null;
}
