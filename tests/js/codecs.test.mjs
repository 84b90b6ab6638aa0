// Ordering the preferred video codec in an SDP (static/js/codecs.js), run by Node's test runner.

import assert from "node:assert/strict";
import { test } from "node:test";
import { preferVideoCodec } from "../../static/js/codecs.js";

// A Chromium-like offer: audio, then video with VP8, VP9 (two profiles), H264, their rtx.
const SDP = [
  "v=0",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111 63",
  "a=rtpmap:111 opus/48000/2",
  "a=rtpmap:63 red/48000/2",
  "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 100 101 102 103",
  "a=rtpmap:96 VP8/90000",
  "a=rtpmap:97 rtx/90000",
  "a=fmtp:97 apt=96",
  "a=rtpmap:98 VP9/90000",
  "a=rtpmap:99 rtx/90000",
  "a=fmtp:99 apt=98",
  "a=rtpmap:100 VP9/90000",
  "a=fmtp:100 profile-id=2",
  "a=rtpmap:101 rtx/90000",
  "a=fmtp:101 apt=100",
  "a=rtpmap:102 H264/90000",
  "a=rtpmap:103 rtx/90000",
  "a=fmtp:103 apt=102",
  "",
].join("\r\n");

const videoLine = (sdp) => sdp.split("\r\n").find((line) => line.startsWith("m=video"));

test("the preferred codec and its retransmission payloads come first, in their order", () => {
  assert.equal(videoLine(preferVideoCodec(SDP, "VP9")), "m=video 9 UDP/TLS/RTP/SAVPF 98 99 100 101 96 97 102 103");
  assert.equal(videoLine(preferVideoCodec(SDP, "h264")), "m=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97 98 99 100 101");
});

test("only the order of the m=video line changes", () => {
  const before = SDP.split("\r\n");
  const after = preferVideoCodec(SDP, "VP9").split("\r\n");
  assert.equal(after.length, before.length);
  const changed = after.filter((line, i) => line !== before[i]);
  assert.deepEqual(changed, ["m=video 9 UDP/TLS/RTP/SAVPF 98 99 100 101 96 97 102 103"]);
  assert.deepEqual([...videoLine(SDP).split(" ")].sort(), [...changed[0].split(" ")].sort());
});

test("no preference, or a codec the SDP does not have, leaves it as it is", () => {
  assert.equal(preferVideoCodec(SDP, ""), SDP);
  assert.equal(preferVideoCodec(SDP, "AV1"), SDP);
  // Audio is never touched, even for a name that only audio has.
  assert.equal(preferVideoCodec(SDP, "opus"), SDP);
});
