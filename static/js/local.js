// What a page sends and the controls for it, shared by the call page (main.js) and the room
// page (room.js): the ICE servers, the camera and microphone opened at start, the preview,
// the speaker, and the Mute, Stop video, Share screen, resolution, codec and bandwidth
// controls, applied to every connection the page has.
//
// `page` is {config, media, pickers, state, calls, sinks, whom}: state holds muted,
// cameraOff, cameraProblem, speaker and preferences ({codec, bandwidth}); calls() the page's
// Call objects now; sinks() the media elements that play what the others send; whom() the
// people on the other side, in words ("alice", "the room").

import { canChooseSpeaker, remembered } from "./devices.js";
import { addChatLine, elements, setCameraOff, setMuted, setSharing, setStatus } from "./ui.js";

export function parseResolution(value) {
  const [width, height] = value.split("x").map(Number);
  return { width: { ideal: width }, height: { ideal: height } };
}

// `token`: the page's JoinToken (tokens.js): its join token replaces the ICE token when the
// server wants join tokens.
export async function fetchIceServers(config, token) {
  try {
    // The id names us in time-limited TURN credentials, when the server hands those out.
    const url = `${config.iceUrl}?id=${encodeURIComponent(config.myId)}`;
    const response = await fetch(url, { method: "POST", body: token.iceBody(config.icePass) });
    if (response.ok) return await response.json();
    console.warn("ICE servers refused:", response.status);
  } catch (error) {
    console.warn("ICE servers unavailable:", error);
  }
  return [];
}

// The video codecs this browser can send (Firefox without its OpenH264 plugin has no H264).
export function sendableVideoCodecs() {
  if (!window.RTCRtpSender || !RTCRtpSender.getCapabilities) return null;
  return RTCRtpSender.getCapabilities("video").codecs.map((codec) => codec.mimeType.split("/")[1].toUpperCase());
}

// The remembered camera and microphone (devices.js), else the browser's; without a camera,
// the microphone alone; without either, the page still receives.
export async function openMedia(page) {
  const { media, state } = page;
  const problem = await media.open({
    camera: remembered("camera"),
    microphone: remembered("microphone"),
    video: parseResolution(elements.resolution.value),
  });
  if (problem && problem.audioOnly) {
    // Start video tries the camera again (allowed or plugged in since): sent in the same call.
    state.cameraOff = true;
    media.cameraOff = true;
    setCameraOff(true);
  }
  if (problem) {
    state.cameraProblem = problem.audioOnly
      ? `Camera unavailable (${problem.error.name}): the call goes on with sound and chat.`
      : `Camera or microphone unavailable (${problem.error.name}): you can still see and chat with ${page.whom()}.`;
    setStatus("camera-refused", state.cameraProblem);
    addChatLine("system", "", state.cameraProblem);
  }
  showPreview(media);
  const speaker = remembered("speaker");
  if (speaker && canChooseSpeaker) await useSpeaker(page, speaker).catch(() => {}); // that speaker is gone: the default plays
  await page.pickers.use(devicesInUse(media));
}

export function showPreview(media) {
  const track = media.videoTrack;
  if (elements.localVideo.srcObject && elements.localVideo.srcObject.getVideoTracks()[0] === track) return;
  elements.localVideo.srcObject = track ? new MediaStream([track]) : null;
}

// The deviceIds the page uses now, for the pickers (a shared screen is no camera).
function devicesInUse(media) {
  const idOf = (track) => (track ? track.getSettings().deviceId : undefined);
  return { camera: media.sharing ? undefined : idOf(media.videoTrack), microphone: idOf(media.audioTrack) };
}

// Play the others on this speaker; a media element added later is given it by playOn().
async function useSpeaker(page, deviceId) {
  await Promise.all(page.sinks().map((sink) => sink.setSinkId(deviceId)));
  page.state.speaker = deviceId;
  await page.pickers.use({ speaker: deviceId });
}

// A new media element (a room's tile) plays on the chosen speaker.
export function playOn(page, sink) {
  if (page.state.speaker && canChooseSpeaker) sink.setSinkId(page.state.speaker).catch(() => {});
}

export function applyMute(page) {
  for (const track of page.media.stream.getAudioTracks()) track.enabled = !page.state.muted;
  setMuted(page.state.muted);
}

// A device or the screen changed what we send: every connection sends it on the same
// transceiver (no renegotiation). `onChange` is told after each change (the room tells the
// others whether we are muted or sending video).
export function wireMedia(page, onChange = () => {}) {
  const { media, pickers } = page;
  media.addEventListener("track", ({ detail }) => {
    showPreview(media);
    if (detail.kind === "audio") applyMute(page);
    for (const call of page.calls()) {
      call.replaceTrack(detail.kind, detail.track).catch((error) => console.warn("cannot send the new track", error));
    }
    pickers.use(devicesInUse(media));
    onChange();
  });
  media.addEventListener("sharing", ({ detail }) => setSharing(detail));
  pickers.addEventListener("pick", async ({ detail: { role, deviceId } }) => {
    try {
      if (role === "camera") await media.useCamera(deviceId);
      else if (role === "microphone") await media.useMicrophone(deviceId);
      else await useSpeaker(page, deviceId);
    } catch (error) {
      addChatLine("system", "", `Cannot use that ${role} (${error.name}).`);
      pickers.refresh();
    }
  });
}

// Mute, Stop video, Share screen, and the resolution, codec and bandwidth selectors;
// `onChange` is told when Mute is pressed (what we send is wireMedia's).
export function wireMediaControls(page, onChange = () => {}) {
  const { media, state } = page;
  elements.mute.addEventListener("click", () => {
    state.muted = !state.muted;
    applyMute(page);
    onChange();
  });
  elements.cameraOff.addEventListener("click", async () => {
    state.cameraOff = !state.cameraOff;
    setCameraOff(state.cameraOff);
    try {
      await media.setCameraOff(state.cameraOff);
    } catch (error) {
      addChatLine("system", "", `Cannot start the camera (${error.name}).`);
      state.cameraOff = true;
      setCameraOff(true);
    }
  });
  if (navigator.mediaDevices.getDisplayMedia) {
    elements.share.addEventListener("click", async () => {
      try {
        if (media.sharing) await media.stopSharing();
        else await media.shareScreen();
      } catch (error) {
        addChatLine("system", "", `Screen not shared (${error.name}).`);
      }
    });
  } else {
    elements.share.hidden = true; // phones: no screen sharing in the browser
  }
  elements.resolution.addEventListener("change", async () => {
    try {
      await media.setResolution(parseResolution(elements.resolution.value));
    } catch (error) {
      addChatLine("system", "", `This camera cannot use that resolution (${error.name}).`);
    }
  });
  elements.codec.addEventListener("change", () => {
    const codec = elements.codec.value;
    state.preferences.codec = codec;
    for (const call of page.calls()) useCodec(page, call, codec);
  });
  elements.bandwidth.addEventListener("change", () => {
    state.preferences.bandwidth = elements.bandwidth.value;
    for (const call of page.calls()) call.setBandwidth(elements.bandwidth.value);
  });
}

async function useCodec(page, call, codec) {
  await call.setCodec(codec);
  if (!codec || call.pc.connectionState !== "connected") return;
  // Both browsers must have the codec: say so when the peer's lacks it.
  const used = await call.codecSettled(codec);
  if (!call.closed && page.calls().includes(call) && used && used !== codec) {
    addChatLine("system", "", `${call.peerId || "Your peer"}'s browser cannot use ${codec}: the call goes on with ${used}.`);
  }
}
