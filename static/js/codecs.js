// The preferred video codec, applied by ordering the payload types of the SDP's m=video line,
// as AppRTC's sdputils.js did. setCodecPreferences() would be the modern way, but Firefox
// (153 ESR) then renumbers the payload types of its offers and answers, and Chromium refuses
// them ("Failed to parse codecs correctly") as soon as Chromium made the first offer.
//
// An offer we send lists the codec first (the answer follows its order); an offer we receive
// is reordered before we answer it (our answer, and so what both sides send, follow it).
// Payload numbers never change, only their order.

export function preferVideoCodec(sdp, codec) {
  if (!codec) return sdp;
  const lines = sdp.split("\r\n");
  lines.forEach((line, index) => {
    if (!line.startsWith("m=video ")) return;
    const section = sectionAt(lines, index);
    const wanted = new Set();
    for (const attribute of section) {
      const rtpmap = /^a=rtpmap:(\d+) ([^/]+)\//.exec(attribute);
      if (rtpmap && rtpmap[2].toUpperCase() === codec.toUpperCase()) wanted.add(rtpmap[1]);
    }
    // Their retransmission payloads ("rtx", apt=<payload>) move with them.
    for (const attribute of section) {
      const fmtp = /^a=fmtp:(\d+) apt=(\d+)/.exec(attribute);
      if (fmtp && wanted.has(fmtp[2])) wanted.add(fmtp[1]);
    }
    if (!wanted.size) return;
    const [media, port, proto, ...formats] = line.split(" ");
    const ordered = [...formats.filter((f) => wanted.has(f)), ...formats.filter((f) => !wanted.has(f))];
    lines[index] = [media, port, proto, ...ordered].join(" ");
  });
  return lines.join("\r\n");
}

// The attribute lines of the media section whose m= line is lines[index].
function sectionAt(lines, index) {
  const next = lines.findIndex((line, i) => i > index && line.startsWith("m="));
  return lines.slice(index + 1, next < 0 ? lines.length : next);
}
