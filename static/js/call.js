// One peer connection with the peer: media, the "chat" data channel, and perfect
// negotiation (either side may start; the polite side yields when offers collide).

// Events: "state" (detail: RTCPeerConnection.connectionState), "track" (detail: the remote
// MediaStream), "chat" (detail: a chat message), "channel" (detail: "open" | "closed").
export class Call extends EventTarget {
  constructor({ myId, peerId, iceServers, localStream, polite, send, preferences }) {
    super();
    this.myId = myId;
    this.peerId = peerId;
    this.send = send; // (message) => boolean: through the signaling socket
    this.polite = polite;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.preferences = preferences;
    this.queue = Promise.resolve(); // signaling messages are handled one at a time
    this.remoteStream = new MediaStream();

    const pc = new RTCPeerConnection({ iceServers });
    this.pc = pc;
    if (localStream) {
      for (const track of localStream.getTracks()) pc.addTrack(track, localStream);
    } else {
      // No camera: still receive the peer's media.
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    this.applyCodec();
    // Negotiated with a fixed id, so both sides open the same channel whoever offers first.
    this.channel = pc.createDataChannel("chat", { negotiated: true, id: 0 });
    this.channel.addEventListener("open", () => this.dispatchEvent(new CustomEvent("channel", { detail: "open" })));
    this.channel.addEventListener("close", () => this.dispatchEvent(new CustomEvent("channel", { detail: "closed" })));
    this.channel.addEventListener("message", (event) => this.onChannelMessage(event.data));

    pc.addEventListener("track", ({ track }) => {
      this.remoteStream.addTrack(track);
      this.dispatchEvent(new CustomEvent("track", { detail: this.remoteStream }));
    });
    pc.addEventListener("icecandidate", ({ candidate }) => {
      if (candidate) this.signal({ type: "new-ice-candidate", candidate: candidate.toJSON() });
    });
    pc.addEventListener("connectionstatechange", () => {
      this.dispatchEvent(new CustomEvent("state", { detail: pc.connectionState }));
      if (pc.connectionState === "connected") this.applyBandwidth();
    });
    pc.addEventListener("negotiationneeded", () => this.offer());
  }

  signal(message) {
    return this.send({ ...message, name: this.myId, target: this.peerId });
  }

  async offer() {
    if (this.makingOffer || this.pc.signalingState !== "stable") return;
    try {
      this.makingOffer = true;
      await this.pc.setLocalDescription();
      this.signal({ type: "video-offer", sdp: this.pc.localDescription.toJSON() });
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
      const collision = description.type === "offer" && (this.makingOffer || pc.signalingState !== "stable");
      this.ignoreOffer = !this.polite && collision;
      if (this.ignoreOffer) return;
      await pc.setRemoteDescription(description);
      if (description.type === "offer") {
        await pc.setLocalDescription();
        this.signal({ type: "video-answer", sdp: pc.localDescription.toJSON() });
      }
    } else if (message.type === "new-ice-candidate" && message.candidate) {
      try {
        await pc.addIceCandidate(message.candidate);
      } catch (error) {
        if (!this.ignoreOffer) throw error;
      }
    }
  }

  onChannelMessage(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    if (message.type === "message") this.dispatchEvent(new CustomEvent("chat", { detail: message }));
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

  videoSender() {
    return this.pc.getSenders().find((sender) => sender.track && sender.track.kind === "video");
  }

  // Put the preferred video codec first; takes effect at the next negotiation.
  applyCodec() {
    const wanted = this.preferences.codec;
    if (!wanted || !RTCRtpReceiver.getCapabilities) return false;
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const mime = `video/${wanted}`.toLowerCase();
    const preferred = codecs.filter((c) => c.mimeType.toLowerCase() === mime);
    if (!preferred.length) return false;
    const ordered = [...preferred, ...codecs.filter((c) => c.mimeType.toLowerCase() !== mime)];
    for (const transceiver of this.pc.getTransceivers()) {
      const kind = transceiver.receiver.track && transceiver.receiver.track.kind;
      if (kind === "video" && transceiver.setCodecPreferences) transceiver.setCodecPreferences(ordered);
    }
    return true;
  }

  async setCodec(codec) {
    this.preferences.codec = codec;
    // setCodecPreferences does not start a negotiation by itself.
    if (this.applyCodec() && this.pc.connectionState === "connected") await this.offer();
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
    this.channel.close();
    this.pc.close();
    this.dispatchEvent(new CustomEvent("state", { detail: "closed" }));
  }
}
