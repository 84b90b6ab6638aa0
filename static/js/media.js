// What this page sends: a microphone, and a camera or a shared screen, in one MediaStream.
//
// A change (another camera or microphone, the camera turned off, a screen shared or no longer
// shared, a device unplugged) swaps one track of the stream and says so with a "track" event
// (detail: {kind, track}; track may be null: nothing of that kind is sent). The call turns it
// into RTCRtpSender.replaceTrack(): no renegotiation, the call goes on.
//
// Other events: "sharing" (detail: true | false).

export class LocalMedia extends EventTarget {
  constructor() {
    super();
    this.stream = new MediaStream();
    this.devices = { camera: null, microphone: null }; // the chosen deviceIds (null: the browser's default)
    this.video = {}; // resolution constraints for the camera
    this.cameraOff = false;
    this.screen = null; // the shared screen's track, while sharing
    this.screenWatch = null;
  }

  get audioTrack() {
    return this.stream.getAudioTracks()[0] || null;
  }

  get videoTrack() {
    return this.stream.getVideoTracks()[0] || null;
  }

  get sharing() {
    return this.screen !== null;
  }

  // Camera and microphone; else the microphone alone (no camera, or the camera refused), so
  // the call goes on with sound and chat; else nothing (the page still receives).
  // Answers null, or {error, audioOnly} when the camera (and maybe the microphone) failed.
  async open({ camera = null, microphone = null, video = {} } = {}) {
    this.devices = { camera, microphone };
    this.video = video;
    try {
      const stream = await this.request({ audio: true, video: true });
      for (const track of stream.getTracks()) this.setTrack(track.kind, track);
      return null;
    } catch (error) {
      try {
        const stream = await this.request({ audio: true });
        this.setTrack("audio", stream.getAudioTracks()[0]);
        return { error, audioOnly: true };
      } catch {
        return { error, audioOnly: false };
      }
    }
  }

  // getUserMedia() for the chosen devices. The ids are "exact" (Chromium ignores an "ideal"
  // deviceId): a chosen device that is gone gives way to the browser's default.
  async request({ audio = false, video = false }) {
    const { camera, microphone } = this.devices;
    const constraints = {};
    if (audio) constraints.audio = microphone ? { deviceId: { exact: microphone } } : true;
    if (video) constraints.video = camera ? { ...this.video, deviceId: { exact: camera } } : { ...this.video };
    try {
      return await navigator.mediaDevices.getUserMedia(constraints);
    } catch (error) {
      const gone = error.name === "OverconstrainedError" || error.name === "NotFoundError";
      if (!gone || !((audio && microphone) || (video && camera))) throw error;
      if (audio) this.devices.microphone = null;
      if (video) this.devices.camera = null;
      return this.request({ audio, video });
    }
  }

  // Put `track` (or nothing) in the stream in place of the one of its kind.
  setTrack(kind, track) {
    const old = kind === "audio" ? this.audioTrack : this.videoTrack;
    if (old === track) return;
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    if (track) {
      this.stream.addTrack(track);
      // A device unplugged (or a capture the browser ended) ends its track: fall back.
      track.addEventListener("ended", () => this.onEnded(kind, track));
    }
    this.dispatchEvent(new CustomEvent("track", { detail: { kind, track } }));
  }

  async onEnded(kind, track) {
    if (track === this.screen) {
      await this.stopSharing();
    } else if (kind === "audio" && track === this.audioTrack) {
      this.devices.microphone = null;
      await this.useMicrophone(null).catch(() => this.setTrack("audio", null));
    } else if (kind === "video" && track === this.videoTrack) {
      this.devices.camera = null;
      await this.useCamera(null).catch(() => this.setTrack("video", null));
    }
  }

  async useMicrophone(deviceId) {
    this.devices.microphone = deviceId;
    const stream = await this.request({ audio: true });
    this.setTrack("audio", stream.getAudioTracks()[0]);
  }

  // Another camera: sent at once, unless the camera is off or a screen is shared (then it is
  // the one that comes back).
  async useCamera(deviceId) {
    this.devices.camera = deviceId;
    if (this.cameraOff || this.sharing) return;
    await this.startCamera();
  }

  async startCamera() {
    const stream = await this.request({ video: true });
    this.setTrack("video", stream.getVideoTracks()[0]);
  }

  // The resolution selector: applied to the camera now, and to every camera opened later.
  async setResolution(video) {
    this.video = video;
    const track = this.videoTrack;
    if (track && !this.sharing) await track.applyConstraints(video);
  }

  // Camera off: its light goes off and the peer gets no video; sound and chat go on.
  async setCameraOff(off) {
    this.cameraOff = off;
    if (this.sharing) return;
    if (off) this.setTrack("video", null);
    else await this.startCamera();
  }

  // A screen, window or tab in place of the camera, until stopSharing() or until the browser
  // ends the capture (its own "Stop sharing" button, a closed tab).
  async shareScreen() {
    if (this.sharing) return;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const track = stream.getVideoTracks()[0];
    track.contentHint = "detail"; // text stays sharp: encoders drop frames rather than resolution
    this.screen = track;
    this.setTrack("video", track);
    // "ended" does not fire when a track is stopped from the page itself (track.stop()):
    // look at its state too.
    this.screenWatch = setInterval(() => {
      if (track.readyState === "ended") this.onEnded("video", track);
    }, 500);
    this.dispatchEvent(new CustomEvent("sharing", { detail: true }));
  }

  async stopSharing() {
    if (!this.sharing) return;
    clearInterval(this.screenWatch);
    const screen = this.screen;
    this.screen = null;
    this.dispatchEvent(new CustomEvent("sharing", { detail: false }));
    try {
      if (this.cameraOff) this.setTrack("video", null);
      else await this.startCamera();
    } catch (error) {
      console.warn("media: camera unavailable after sharing", error);
      this.setTrack("video", null);
    } finally {
      screen.stop();
    }
  }
}
