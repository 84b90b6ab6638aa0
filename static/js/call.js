// One peer connection with the peer: media, the "chat" data channel, perfect negotiation
// (either side may start; the polite side yields when offers collide), and recovery: when the
// network path breaks, the call restarts ICE by itself instead of ending.

import { preferVideoCodec } from "./codecs.js";

// How a call recovers from a network change (docs/protocol.md, "Network changes").
export const RECOVERY = Object.freeze({
  stallMs: 2000, // no media packet for this long: restart ICE (browsers take ~5 s to say "disconnected")
  disconnectedGraceMs: 2000, // "disconnected" may heal by itself; this long, and we restart ICE
  restartTimeoutMs: 5000, // a restart not healthy by then is tried again...
  maxRestarts: 2, // ...this many times in all; then the call gives up ("gave-up": main.js replaces it)
  connectTimeoutMs: 30000, // a call that never connected is given up after this (from its first answer)
  gatherTimeoutMs: 4000, // offer and answer set, yet no local candidate and ICE still "new": a new connection
});

// TURN answers that mean "your credentials are wrong or expired" (RFC 8489/8656).
const TURN_AUTH_ERRORS = new Set([401, 403, 437, 441]);

const isTurnUrl = (url) => /^turns?:/i.test(url);

// Events: "state" (detail: RTCPeerConnection.connectionState), "track" (detail: the remote
// MediaStream), "chat" (detail: a chat message), "channel" (detail: "open" | "closed"),
// "stalled" (no media for RECOVERY.stallMs), "recovering" (detail: {attempt}), "failed"
// (detail: {reason}, see diagnose()), "bye" (detail: the peer's hang-up, sent on the channel
// as its page closes),
// "turn-error" (detail: {code, url, text}: a TURN server refused our credentials).
export class Call extends EventTarget {
  constructor({ myId, peerId, iceServers, localStream, polite, send, preferences, beforeRestart }) {
    super();
    this.myId = myId;
    this.peerId = peerId;
    this.send = send; // (message) => boolean: through the signaling socket
    this.beforeRestart = beforeRestart || (() => Promise.resolve()); // e.g. reopen the signaling socket
    this.polite = polite;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.preferences = preferences;
    this.queue = Promise.resolve(); // signaling messages are handled one at a time
    this.remoteStream = new MediaStream();
    this.iceServers = iceServers;
    this.everConnected = false;
    this.restarts = 0; // ICE restarts since the path broke
    this.recoveries = 0; // times this call started to recover (for the console and the tests)
    this.iceRestarts = 0; // ICE restarts it asked for
    this.stalled = false; // connected, but no media arrives
    this.media = { packets: 0, at: 0, flowing: false }; // what the stall watchdog saw last
    this.gatheredRelay = false; // did a TURN server give us a relay candidate?
    this.describedAt = 0; // performance.now() when our last offer or answer was set
    this.candidateAt = 0; // ... and when we last found a local candidate
    this.turnRefused = false;
    this.timers = {};
    this.closed = false;
    this.givenUp = false; // failed for good: the next call from the peer replaces this one

    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    this.localStream = localStream;
    this.senders = {}; // kind -> the RTCRtpSender of our microphone, and of our camera or screen
    for (const kind of ["audio", "video"]) this.addSender(kind);
    // Negotiated with a fixed id, so both sides open the same channel whoever offers first.
    this.channel = pc.createDataChannel("chat", { negotiated: true, id: 0 });
    this.channel.addEventListener("open", () => this.dispatchEvent(new CustomEvent("channel", { detail: "open" })));
    this.channel.addEventListener("close", () => this.dispatchEvent(new CustomEvent("channel", { detail: "closed" })));
    this.channel.addEventListener("message", (event) => this.onChannelMessage(event.data));

    pc.addEventListener("track", ({ track }) => {
      if (!this.remoteStream.getTracks().includes(track)) this.remoteStream.addTrack(track);
      this.dispatchEvent(new CustomEvent("track", { detail: this.remoteStream }));
    });
    pc.addEventListener("icecandidate", ({ candidate }) => {
      if (!candidate) return;
      this.candidateAt = performance.now();
      if (candidate.type === "relay") this.gatheredRelay = true;
      this.signal({ type: "new-ice-candidate", candidate: candidate.toJSON() });
    });
    pc.addEventListener("icecandidateerror", (event) => this.onCandidateError(event));
    pc.addEventListener("connectionstatechange", () => this.onConnectionState());
    pc.addEventListener("negotiationneeded", () => this.offer());
    this.watchdog = setInterval(() => this.checkMedia(), 1000);
  }

  // addTrack(), not addTransceiver(): the side that answers then sends on the transceivers of
  // the offer instead of adding its own (which would take a second round of negotiation).
  addSender(kind) {
    const stream = this.localStream;
    const track = stream && stream.getTracks().find((t) => t.kind === kind);
    if (track) {
      this.senders[kind] = this.pc.addTrack(track, stream);
    } else if (kind === "video" && stream && stream.getAudioTracks().length) {
      // Sound only (no camera, or it is off): a video sender all the same, without a track,
      // so that a camera or a screen can be sent later with replaceTrack(). addTrack() needs
      // a track: a blank one, taken out at once.
      const canvas = document.createElement("canvas");
      canvas.getContext("2d");
      const blank = canvas.captureStream(0).getVideoTracks()[0];
      this.senders.video = this.pc.addTrack(blank, stream);
      this.senders.video.replaceTrack(null).catch((error) => console.warn("call: cannot clear the blank track", error));
      blank.stop();
    } else {
      // Nothing to send of this kind: still receive the peer's.
      this.pc.addTransceiver(kind, { direction: "recvonly" });
    }
  }

  // Send `track` (null: nothing) in place of what this call sends of its kind: the same
  // transceiver, so no renegotiation. A call that had nothing to send of that kind adds it,
  // which renegotiates (perfect negotiation makes the offer).
  async replaceTrack(kind, track) {
    const sender = this.senders[kind];
    if (this.closed) return;
    if (sender) {
      await sender.replaceTrack(track);
    } else if (track) {
      this.senders[kind] = this.pc.addTrack(track, this.localStream);
    }
    if (kind === "video") await this.applyBandwidth();
  }

  signal(message) {
    return this.send({ ...message, name: this.myId, target: this.peerId });
  }

  async offer() {
    if (this.makingOffer || this.pc.signalingState !== "stable") return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.describedAt = performance.now();
      const { type, sdp } = this.pc.localDescription;
      this.signal({ type: "video-offer", sdp: { type, sdp: preferVideoCodec(sdp, this.preferences.codec) } });
    } catch (error) {
      console.error("call: cannot make an offer", error);
    } finally {
      this.makingOffer = false;
    }
  }

  // A signaling message from the peer (video-offer, video-answer, new-ice-candidate).
  handle(message) {
    this.queue = this.queue.then(() => this.handleNow(message)).catch((error) => console.error("call:", error));
    return this.queue;
  }

  async handleNow(message) {
    const pc = this.pc;
    if (pc.signalingState === "closed") return;
    if (message.type === "video-offer" || message.type === "video-answer") {
      const description = message.sdp;
      // An answer to an offer we have since rolled back (a restart that was retried): stale.
      if (description.type === "answer" && pc.signalingState !== "have-local-offer") return;
      const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      // Our preferred codec first in the offer we answer: our answer follows its order.
      const sdp = description.type === "offer" ? preferVideoCodec(description.sdp, this.preferences.codec) : description.sdp;
      await pc.setRemoteDescription({ type: description.type, sdp });
      if (description.type === "offer") {
        await pc.setLocalDescription();
        this.describedAt = performance.now();
        this.signal({ type: "video-answer", sdp: pc.localDescription.toJSON() });
      }
      this.startConnectTimer();
    } else if (message.type === "new-ice-candidate" && message.candidate) {
      try {
        await pc.addIceCandidate(message.candidate);
      } catch (error) {
        if (!this.ignoreOffer) throw error;
      }
    }
  }

  // --- recovery -----------------------------------------------------------------------

  onConnectionState() {
    const state = this.pc.connectionState;
    clearTimeout(this.timers.grace);
    if (state === "connected") {
      this.everConnected = true;
      this.givenUp = false;
      // Media has its own say (checkMedia): a restart counts as done once packets flow again.
      if (!this.media.flowing) this.restarts = 0;
      this.stalled = false;
      this.media.at = performance.now();
      clearTimeout(this.timers.restart);
      clearTimeout(this.timers.connect);
      this.applyBandwidth();
    } else if (state === "disconnected" && this.everConnected) {
      this.timers.grace = setTimeout(() => this.recover(), RECOVERY.disconnectedGraceMs);
    } else if (state === "failed") {
      if (this.everConnected) this.recover();
      else this.fail(this.diagnose());
    }
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  get isHealthy() {
    return this.pc.connectionState === "connected" && !this.stalled;
  }

  get isRecovering() {
    return this.everConnected && !this.closed && !this.givenUp && !this.isHealthy;
  }

  // Browsers call a dead path "disconnected" only after about five seconds; a person sees the
  // video freeze at once. Once media has flowed, no packet for RECOVERY.stallMs starts the
  // recovery (audio alone sends one every 20 ms, silence included). Restarting ICE while the
  // old path still works costs little: media stays on it until the new one is chosen.
  async checkMedia() {
    if (this.closed) return;
    if (this.gatheredNothing()) {
      this.fail("no-candidates");
      return;
    }
    let packets = 0;
    try {
      (await this.pc.getStats()).forEach((report) => {
        if (report.type === "inbound-rtp") packets += report.packetsReceived || 0;
      });
    } catch {
      return; // closed meanwhile
    }
    const now = performance.now();
    if (packets !== this.media.packets) {
      this.media = { packets, at: now, flowing: packets > 0 };
      if (this.stalled || this.pc.connectionState === "connected") {
        if (this.stalled) {
          this.stalled = false;
          clearTimeout(this.timers.grace);
          clearTimeout(this.timers.restart);
          this.dispatchEvent(new CustomEvent("state", { detail: this.pc.connectionState }));
        }
        if (this.pc.connectionState === "connected") this.restarts = 0;
      }
      return;
    }
    const silent = now - this.media.at >= RECOVERY.stallMs;
    if (this.media.flowing && silent && !this.stalled && this.pc.connectionState === "connected") {
      this.stalled = true;
      this.dispatchEvent(new Event("stalled"));
      this.recover();
    }
  }

  // Restart ICE: new candidates, maybe through a new network, on the same connection (media
  // keeps its DTLS keys, the chat channel stays open). The signaling socket is reopened
  // first: after a network change the old one may be dead without knowing it.
  async recover() {
    if (this.closed || this.givenUp || this.isHealthy) return;
    if (this.restarts >= RECOVERY.maxRestarts) {
      this.fail("gave-up");
      return;
    }
    this.restarts += 1;
    this.recoveries += 1;
    this.dispatchEvent(new CustomEvent("recovering", { detail: { attempt: this.restarts } }));
    clearTimeout(this.timers.restart);
    this.timers.restart = setTimeout(() => this.recover(), RECOVERY.restartTimeoutMs);
    await this.beforeRestart();
    await this.restartNow();
  }

  // The peer is back on the signaling socket while we recover: our last offer may have been
  // lost on its way, so restart again now instead of waiting for the timer.
  async peerReturned() {
    if (this.isRecovering && this.restarts > 0) await this.restartNow();
  }

  async restartNow() {
    if (this.closed || this.isHealthy) return;
    try {
      // An offer still waiting for its answer was probably lost: take it back first.
      if (this.pc.signalingState === "have-local-offer") await this.pc.setLocalDescription({ type: "rollback" });
    } catch (error) {
      console.warn("call: rollback before restart failed", error);
    }
    // Fires "negotiationneeded": offer() sends an offer with new ICE credentials.
    this.iceRestarts += 1;
    this.pc.restartIce();
  }

  // Offers crossed and the polite side rolled its own back: Chromium (156) then sometimes
  // gathers no candidate for its answer, and the call would wait at "new" until the connect
  // timeout. A first connection with no local candidate after RECOVERY.gatherTimeoutMs fails
  // with "no-candidates", which main.js answers with a new connection (up to three times: a
  // browser with no route but through a TURN server finds none either, and then the page
  // says why as for any call that cannot connect).
  gatheredNothing() {
    const pc = this.pc;
    return (
      !this.everConnected &&
      !this.givenUp &&
      this.describedAt > 0 &&
      this.candidateAt < this.describedAt &&
      pc.signalingState === "stable" &&
      pc.iceConnectionState === "new" &&
      performance.now() - this.describedAt >= RECOVERY.gatherTimeoutMs
    );
  }

  startConnectTimer() {
    if (this.everConnected || this.timers.connect) return;
    this.timers.connect = setTimeout(() => {
      if (!this.everConnected && !this.closed) this.fail(this.diagnose());
    }, RECOVERY.connectTimeoutMs);
  }

  onCandidateError(event) {
    // Only TURN refusals tell the user something: STUN timeouts are routine.
    if (!isTurnUrl(event.url || "") || !TURN_AUTH_ERRORS.has(event.errorCode)) return;
    if (this.turnRefused) return;
    this.turnRefused = true;
    this.dispatchEvent(new CustomEvent("turn-error", { detail: { code: event.errorCode, url: event.url, text: event.errorText } }));
  }

  // Why a call that never connected failed, as far as this page can tell:
  // "turn-refused": the TURN server refused our credentials; "no-relay": no TURN server is
  // configured, and no direct path exists; "turn-unreachable": TURN configured but it gave us
  // no relay; "unreachable": even the relay could not carry it.
  diagnose() {
    if (this.turnRefused) return "turn-refused";
    const urls = this.iceServers.flatMap((server) => [].concat(server.urls || []));
    if (!urls.some(isTurnUrl)) return "no-relay";
    if (!this.gatheredRelay) return "turn-unreachable";
    return "unreachable";
  }

  fail(reason) {
    if (this.closed || this.givenUp) return;
    this.givenUp = true;
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.dispatchEvent(new CustomEvent("failed", { detail: { reason } }));
  }

  // --- chat -----------------------------------------------------------------------------

  onChannelMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "message") this.dispatchEvent(new CustomEvent("chat", { detail: message }));
    else if (message.type === "hang-up") this.dispatchEvent(new CustomEvent("bye", { detail: message }));
  }

  // Chat: over the data channel when it is open, else through the signaling socket.
  sendChat(message) {
    const full = { ...message, type: "message", name: this.myId, target: this.peerId };
    if (this.channel.readyState === "open") {
      this.channel.send(JSON.stringify(full));
      return true;
    }
    return this.send(full);
  }

  // --- media settings -------------------------------------------------------------------

  videoSender() {
    return this.senders.video || null;
  }

  // A new preferred codec takes effect with a renegotiation (see codecs.js).
  async setCodec(codec) {
    this.preferences.codec = codec;
    if (this.pc.connectionState === "connected") await this.offer();
  }

  // The video codec this call sends ("VP8", ...), or null before any video went out.
  async sendingCodec() {
    const stats = await this.pc.getStats();
    let mime = null;
    stats.forEach((report) => {
      const codec = report.type === "outbound-rtp" && report.kind === "video" && report.codecId && stats.get(report.codecId);
      if (codec) mime = codec.mimeType;
    });
    return mime && mime.split("/")[1].toUpperCase();
  }

  // After a change of codec: the codec in use once it is `wanted`, or what is still in use
  // after `timeoutMs` (the peer's browser may not have the wanted one).
  async codecSettled(wanted, timeoutMs = 5000) {
    const deadline = performance.now() + timeoutMs;
    let current = await this.sendingCodec();
    while (current !== wanted.toUpperCase() && performance.now() < deadline && !this.closed) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      current = await this.sendingCodec();
    }
    return current;
  }

  async applyBandwidth() {
    const sender = this.videoSender();
    if (!sender) return;
    const parameters = sender.getParameters();
    if (!parameters.encodings || !parameters.encodings.length) parameters.encodings = [{}];
    const kbps = this.preferences.bandwidth;
    if (kbps === "unlimited") delete parameters.encodings[0].maxBitrate;
    else parameters.encodings[0].maxBitrate = Number(kbps) * 1000;
    try {
      await sender.setParameters(parameters);
    } catch (error) {
      console.warn("call: cannot cap the bandwidth", error);
    }
  }

  async setBandwidth(kbps) {
    this.preferences.bandwidth = kbps;
    await this.applyBandwidth();
  }

  close() {
    this.closed = true;
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    clearInterval(this.watchdog);
    this.channel.close();
    this.pc.close();
    this.dispatchEvent(new CustomEvent("state", { detail: "closed" }));
  }
}
