// Wires the page together: ICE servers, camera, signaling socket, call and controls.

import { Call } from "./call.js";
import { Signaling } from "./signaling.js";
import { addChatLine, elements, setInCall, setMuted, setStatus } from "./ui.js";

const config = JSON.parse(document.getElementById("page-config").textContent);
const pageSession = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);

const state = {
  peerId: config.peerId,
  iceServers: [],
  localStream: null,
  call: null,
  peerSession: null, // the page session of the peer our call is with
  muted: false,
  cameraProblem: null, // why getUserMedia failed, shown until a call connects
  preferences: { codec: elements.codec.value, bandwidth: elements.bandwidth.value },
};

const signaling = new Signaling(config.wsUri);
window.webrtcApp = { config, state, signaling }; // for the console and the end-to-end tests

function parseResolution(value) {
  const [width, height] = value.split("x").map(Number);
  return { width: { ideal: width }, height: { ideal: height } };
}

async function fetchIceServers() {
  try {
    // The id names us in time-limited TURN credentials, when the server hands those out.
    const url = `${config.iceUrl}?id=${encodeURIComponent(config.myId)}`;
    const response = await fetch(url, { method: "POST", body: config.icePass });
    if (response.ok) return await response.json();
    console.warn("ICE servers refused:", response.status);
  } catch (error) {
    console.warn("ICE servers unavailable:", error);
  }
  return [];
}

async function openCamera() {
  try {
    state.localStream = await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: parseResolution(elements.resolution.value),
    });
    elements.localVideo.srcObject = state.localStream;
  } catch (error) {
    state.localStream = null;
    state.cameraProblem = `Camera or microphone unavailable (${error.name}): you can still see and chat with ${peerName()}.`;
    setStatus("camera-refused", state.cameraProblem);
    addChatLine("system", "", state.cameraProblem);
  }
}

function peerName() {
  return state.peerId || "your peer";
}

function presence() {
  signaling.send({ type: "username", name: config.myId, target: state.peerId, date: Date.now(), session: pageSession });
}

function endCall() {
  if (state.call) {
    state.call.close();
    state.call = null;
  }
  state.peerSession = null;
  elements.remoteVideo.srcObject = null;
  setInCall(false);
}

// Start (or restart) a call: the new connection offers as soon as it has tracks, and
// perfect negotiation sorts out two offers crossing.
function newCall(peerSession) {
  endCall();
  state.peerSession = peerSession || null;
  const call = new Call({
    myId: config.myId,
    peerId: state.peerId,
    iceServers: state.iceServers,
    localStream: state.localStream,
    // Perfect negotiation needs one polite side: the larger id yields.
    polite: config.myId > state.peerId,
    send: (message) => signaling.send({ ...message, session: pageSession }),
    preferences: state.preferences,
  });
  state.call = call;
  setInCall(true);
  setStatus("connecting", `Connecting to ${peerName()}…`);
  call.addEventListener("track", ({ detail }) => {
    if (elements.remoteVideo.srcObject !== detail) elements.remoteVideo.srcObject = detail;
  });
  call.addEventListener("state", ({ detail }) => {
    if (call !== state.call) return;
    if (detail === "connected") setStatus("connected", `In a call with ${peerName()}`);
    else if (detail === "failed") setStatus("failed", `The connection to ${peerName()} failed: press Restart call.`);
    else if (detail === "disconnected") setStatus("connecting", `Connection to ${peerName()} interrupted…`);
  });
  call.addEventListener("channel", ({ detail }) => {
    if (detail === "open") addChatLine("system", "", `Connected to ${peerName()}`);
  });
  call.addEventListener("chat", ({ detail }) => showChat(detail));
  if (state.muted) applyMute();
  return call;
}

function showChat(message) {
  if (typeof message.text !== "string" || !message.text.trim()) return;
  addChatLine("peer", String(message.name || peerName()), message.text, Number(message.date));
}

// Learn who calls a receiver page opened without a peer_id, and reconnect as that pair.
function adoptPeer(name) {
  state.peerId = name;
  elements.peerId.textContent = name;
  const url = new URL(config.wsUri, location.href);
  url.searchParams.set("peer_id", name);
  signaling.reconnect(url.pathname + url.search);
}

// Whether a message from the peer's page `session` belongs to our current call. A call
// started before we knew the peer's page (restart) adopts the first one that answers.
function isCurrent(session) {
  const call = state.call;
  if (!call || call.pc.connectionState === "failed" || call.pc.connectionState === "closed") return false;
  if (state.peerSession === null) state.peerSession = session;
  return state.peerSession === session;
}

function onMessage(message) {
  if (message.target !== config.myId) return; // not our conversation
  if (!state.peerId && typeof message.name === "string" && message.name) {
    adoptPeer(message.name);
  }
  if (message.name !== state.peerId) return;
  switch (message.type) {
    case "username":
      // The peer's page arrived or reloaded: call it (our new connection offers by itself).
      if (!isCurrent(message.session)) newCall(message.session);
      break;
    case "start-call":
      // The peer restarts the call: its offer follows.
      endCall();
      break;
    case "video-offer":
      if (!isCurrent(message.session)) newCall(message.session);
      state.call.handle(message);
      break;
    case "video-answer":
    case "new-ice-candidate":
      if (isCurrent(message.session)) state.call.handle(message);
      break;
    case "hang-up":
      endCall();
      setStatus("peer-left", `${peerName()} hung up.`);
      break;
    case "message":
      showChat(message);
      break;
    default:
      break; // add-stream and future types: nothing to do
  }
}

function applyMute() {
  if (state.localStream) {
    for (const track of state.localStream.getAudioTracks()) track.enabled = !state.muted;
  }
  setMuted(state.muted);
}

function wireControls() {
  elements.hangup.addEventListener("click", () => {
    if (state.call) state.call.signal({ type: "hang-up" });
    else signaling.send({ type: "hang-up", name: config.myId, target: state.peerId, session: pageSession });
    endCall();
    setStatus("ended", "Call ended. Press Restart call to call again.");
  });
  elements.restart.addEventListener("click", () => {
    signaling.send({ type: "start-call", name: config.myId, target: state.peerId, date: Date.now(), session: pageSession });
    newCall(null);
  });
  elements.mute.addEventListener("click", () => {
    state.muted = !state.muted;
    applyMute();
  });
  elements.resolution.addEventListener("change", async () => {
    const track = state.localStream && state.localStream.getVideoTracks()[0];
    if (!track) return;
    try {
      await track.applyConstraints(parseResolution(elements.resolution.value));
    } catch (error) {
      addChatLine("system", "", `This camera cannot use that resolution (${error.name}).`);
    }
  });
  elements.codec.addEventListener("change", () => {
    state.preferences.codec = elements.codec.value;
    if (state.call) state.call.setCodec(elements.codec.value);
  });
  elements.bandwidth.addEventListener("change", () => {
    state.preferences.bandwidth = elements.bandwidth.value;
    if (state.call) state.call.setBandwidth(elements.bandwidth.value);
  });
  elements.chatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = elements.chatInput.value;
    if (!text.trim()) return;
    const message = { type: "message", name: config.myId, target: state.peerId, text, date: Date.now() };
    const sent = state.call ? state.call.sendChat(message) : signaling.send(message);
    if (sent) {
      addChatLine("me", config.myId, text, message.date);
      elements.chatInput.value = "";
    } else {
      addChatLine("system", "", "Not sent: the connection is down, try again in a moment.");
    }
  });
}

function wireSignaling() {
  signaling.addEventListener("open", () => {
    if (!state.call || state.call.pc.connectionState !== "connected") {
      const waiting = state.peerId ? `Waiting for ${peerName()}…` : "Waiting for a caller…";
      if (state.cameraProblem) setStatus("camera-refused", `${waiting} ${state.cameraProblem}`);
      else setStatus("waiting", waiting);
    }
    if (state.peerId) presence();
  });
  signaling.addEventListener("message", ({ detail }) => onMessage(detail));
  signaling.addEventListener("notice", ({ detail }) => {
    if (detail === "RATE-LIMITED") {
      addChatLine("system", "", "Slow down: the server dropped a message (rate limit).");
    } else if (detail === "PEER-UNAVAILABLE") {
      if (!state.call || state.call.pc.connectionState !== "connected") {
        setStatus("not-online", `${peerName()} not online`);
      }
    }
  });
  signaling.addEventListener("close", ({ detail }) => {
    if (detail.code === 4400) {
      setStatus("bad-request", "The server refused these ids (BAD-REQUEST).");
    } else if (detail.code === 4403) {
      setStatus("forbidden", "The server refused this page's connection (FORBIDDEN).");
    } else if (detail.code === 4429) {
      setStatus("too-many", "Too many pages are open with this id: close one and reload.");
    } else if (detail.retryInMs !== null) {
      const inCall = state.call && state.call.pc.connectionState === "connected";
      const what = inCall ? "Signaling lost (the call goes on)" : "Signaling lost";
      setStatus(inCall ? "connected" : "reconnecting", `${what}: reconnecting in ${Math.round(detail.retryInMs / 1000)} s…`);
    }
  });
}

async function start() {
  wireControls();
  wireSignaling();
  setStatus("starting", "Starting camera…");
  const [iceServers] = await Promise.all([fetchIceServers(), openCamera()]);
  state.iceServers = iceServers;
  signaling.connect();
}

start();
