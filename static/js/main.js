// Wires the page together: ICE servers, camera and microphone, signaling socket, call,
// controls, the quality panel and the invite.

import { Call } from "./call.js";
import { DevicePickers } from "./devices.js";
import { showInvite } from "./invite.js";
import { applyMute, fetchIceServers, openMedia, sendableVideoCodecs, wireMedia, wireMediaControls } from "./local.js";
import { LocalMedia } from "./media.js";
import { QualityPanel } from "./quality.js";
import { pageSession, Signaling } from "./signaling.js";
import { JoinToken } from "./tokens.js";
import { addChatLine, elements, offerOnlyCodecs, setInCall, setStatus, showRefusal, wirePanels } from "./ui.js";

const config = JSON.parse(document.getElementById("page-config").textContent);
// A call whose ICE restarts did not bring media back is replaced by a new connection, this
// many times in a row at most; then the page says it failed.
const MAX_RENEWALS = 3;

const media = new LocalMedia();
const state = {
  peerId: config.peerId,
  iceServers: [],
  localStream: media.stream, // what we send: microphone, and camera or screen (media.js)
  call: null,
  peerSession: null, // the page session of the peer our call is with
  muted: false,
  renewals: 0, // new connections made in a row after the path broke
  cameraProblem: null, // why getUserMedia failed, shown until a call connects
  cameraOff: false,
  speaker: null, // the chosen speaker's deviceId (null: the browser's default)
  elsewhere: false, // another tab of ours took the call: this one stays out until Restart call
  preferences: { codec: elements.codec.value, bandwidth: elements.bandwidth.value },
};

const joinToken = new JoinToken(config, () => ({ id: config.myId, peer_id: state.peerId }));
const signaling = new Signaling(config.wsUri, joinToken);
const pickers = new DevicePickers({ camera: elements.camera, microphone: elements.microphone, speaker: elements.speaker });
const quality = new QualityPanel(() => state.call);
window.webrtcApp = { config, state, signaling, media, pickers, quality }; // for the console and the end-to-end tests
// What local.js needs of this page: its one call, and the remote video.
const page = {
  config,
  media,
  pickers,
  state,
  calls: () => (state.call ? [state.call] : []),
  sinks: () => [elements.remoteVideo],
  whom: () => peerName(),
};

// Perfect negotiation needs one polite side: the larger id yields.
function polite() {
  return config.myId > state.peerId;
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
function newCall(peerSession, { startedByUs = false } = {}) {
  endCall();
  state.peerSession = peerSession || null;
  const call = new Call({
    myId: config.myId,
    peerId: state.peerId,
    iceServers: state.iceServers,
    localStream: media.stream,
    polite: polite(),
    send: (message) => signaling.send({ ...message, session: pageSession }),
    preferences: state.preferences,
    // Before an ICE restart: the socket may have died with the old network.
    beforeRestart: () => signaling.reopen(),
  });
  // Restart call (or a renewal) from this side: see "start-call" in onMessage.
  call.startedByUs = startedByUs;
  state.call = call;
  setInCall(true);
  setStatus("connecting", `Connecting to ${peerName()}…`);
  call.addEventListener("track", ({ detail }) => {
    if (elements.remoteVideo.srcObject !== detail) elements.remoteVideo.srcObject = detail;
  });
  call.addEventListener("state", ({ detail }) => {
    if (call !== state.call) return;
    if (detail === "connected") {
      call.startedByUs = false;
      if (call.isHealthy) state.renewals = 0;
      setStatus("connected", `In a call with ${peerName()}`);
    } else if (call.isRecovering) setStatus("reconnecting", `Connection to ${peerName()} interrupted: reconnecting…`);
  });
  call.addEventListener("stalled", () => {
    if (call !== state.call) return;
    setStatus("reconnecting", `No picture or sound from ${peerName()}: reconnecting…`);
  });
  call.addEventListener("recovering", ({ detail }) => {
    if (call !== state.call) return;
    setStatus("reconnecting", `Connection to ${peerName()} lost: reconnecting (attempt ${detail.attempt})…`);
  });
  call.addEventListener("failed", ({ detail }) => {
    if (call !== state.call) return;
    // ICE restarts were not enough (a browser may keep a broken path after its network came
    // back), or a first connection found no candidate: a new connection, as if Restart call
    // had been pressed.
    if ((call.everConnected || call.renewal || detail.reason === "no-candidates") && state.renewals < MAX_RENEWALS) {
      renewCall();
      return;
    }
    // No candidate at all, even after new connections: say what the page can tell about why.
    const text = failureText(detail.reason === "no-candidates" ? call.diagnose() : detail.reason);
    setStatus("failed", text);
    addChatLine("system", "", text);
  });
  call.addEventListener("turn-error", ({ detail }) => {
    if (call !== state.call) return;
    const text = `The relay (TURN) server refused this page's credentials (error ${detail.code}): reload the page to get new ones. Until then the call can only connect directly.`;
    addChatLine("system", "", text);
    if (call.pc.connectionState !== "connected") setStatus("turn-refused", text);
  });
  call.addEventListener("channel", ({ detail }) => {
    if (detail === "open") addChatLine("system", "", `Connected to ${peerName()}`);
  });
  call.addEventListener("chat", ({ detail }) => showChat(detail));
  call.addEventListener("bye", ({ detail }) => {
    if (call === state.call) peerHungUp(detail.reason === "left");
  });
  if (state.muted) applyMute(page);
  return call;
}

// Why a call failed, in words for the person in front of the page (reasons: Call.diagnose()).
function failureText(reason) {
  const peer = peerName();
  switch (reason) {
    case "no-relay":
      return `Cannot reach ${peer}: your networks allow no direct connection, and this server offers no relay (TURN) server to carry the call. Ask the site's administrator for one, or press Restart call to try again.`;
    case "turn-refused":
      return `Cannot reach ${peer}: no direct connection is possible and the relay (TURN) server refused this page's credentials. Reload the page, then call again.`;
    case "turn-unreachable":
      return `Cannot reach ${peer}: no direct connection is possible and the relay (TURN) server cannot be reached from your network. Press Restart call to try again.`;
    case "gave-up":
      return `The connection to ${peer} was lost and could not be restored. Press Restart call to try again.`;
    default:
      return `Cannot reach ${peer}: no network path between you, even through the relay. Press Restart call to try again.`;
  }
}

// What Restart call does: tell the peer, then a new connection that offers by itself. Both go
// through the signaling socket, so they wait for it to be open (it may be reconnecting).
async function restartCall({ renewal = false } = {}) {
  await signaling.whenOpen();
  signaling.send({ type: "start-call", name: config.myId, target: state.peerId, date: Date.now(), session: pageSession });
  const call = newCall(null, { startedByUs: true });
  call.renewal = renewal;
  return call;
}

async function renewCall() {
  state.renewals += 1;
  const text = `Connection to ${peerName()} lost: making a new connection (attempt ${state.renewals})…`;
  setStatus("reconnecting", text);
  await restartCall({ renewal: true });
  setStatus("reconnecting", text); // newCall() said "Connecting"
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
  // A call that is recovering from a network change is still current; one given up is not.
  if (!call || call.closed || call.givenUp) return false;
  if (state.peerSession === null) state.peerSession = session;
  return state.peerSession === session;
}

// Whether our current call is with the peer's page `session`, known from something that page
// sent (an offer, an answer, its presence), without adopting it as isCurrent() does.
function isCallWith(session) {
  const call = state.call;
  return Boolean(call && !call.closed && !call.givenUp && state.peerSession !== null && state.peerSession === session);
}

// What our own id sent to our peer from another tab (the server copies what one socket of an
// id sends to the id's other sockets in the same conversation): that tab has the call now.
function fromAnotherTab(message) {
  return (
    message.name === config.myId &&
    message.target === state.peerId &&
    typeof message.session === "string" &&
    message.session !== pageSession &&
    ["username", "video-offer", "video-answer"].includes(message.type)
  );
}

// Another tab with our id took the call: this one steps aside, without a retry loop, and says
// so. Restart call brings the call back here (the other tab then steps aside in turn).
function yieldToAnotherTab() {
  if (state.elsewhere) return;
  state.elsewhere = true;
  endCall();
  signaling.stop();
  setStatus("elsewhere", `Answered in another tab: the call with ${peerName()} goes on there. Press Restart call to bring it back here.`);
}

function onMessage(message) {
  if (state.elsewhere) return;
  if (fromAnotherTab(message)) {
    yieldToAnotherTab();
    return;
  }
  if (message.target !== config.myId) return; // not our conversation
  if (!state.peerId && typeof message.name === "string" && message.name) {
    adoptPeer(message.name);
  }
  if (message.name !== state.peerId) return;
  switch (message.type) {
    case "username":
      // The same page reopening its socket while our call recovers: restart ICE again now.
      // Any other page (one that arrived or reloaded), or a call that has heard nothing from
      // the peer yet (a retry made while it was away, whose offer went nowhere): call it now
      // (our new connection offers by itself).
      if (isCallWith(message.session)) state.call.peerReturned();
      else newCall(message.session);
      break;
    case "start-call":
      // The peer restarts the call: its offer follows. If both sides restarted at once, the
      // impolite side keeps its own new call, and the polite one answers it.
      if (state.call && state.call.startedByUs && !polite()) break;
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
      // From a page of the peer's that our call is not with (a tab that gave the call up to
      // another one, closing now): not our call's end.
      if (state.call && state.peerSession !== null && message.session && message.session !== state.peerSession) break;
      peerHungUp(message.reason === "left");
      break;
    case "message":
      showChat(message);
      break;
    default:
      break; // add-stream and future types: nothing to do
  }
}

function peerHungUp(left) {
  endCall();
  if (left) setStatus("peer-left", `${peerName()} left.`);
  else setStatus("peer-left", `${peerName()} hung up.`);
}

// The tab closes, reloads or navigates away: say so at once, on the socket and on the data
// channel, or the peer would wait for its call to time out before saying it is over. A page
// that has given the call to another tab has nothing to say.
function leavePage() {
  if (state.elsewhere || !state.peerId) return;
  const bye = { type: "hang-up", reason: "left", name: config.myId, target: state.peerId, date: Date.now(), session: pageSession };
  if (state.call && state.call.channel.readyState === "open") state.call.channel.send(JSON.stringify(bye));
  signaling.send(bye);
  endCall();
  signaling.stop();
}

function wireControls() {
  elements.hangup.addEventListener("click", () => {
    if (state.call) state.call.signal({ type: "hang-up" });
    else signaling.send({ type: "hang-up", name: config.myId, target: state.peerId, session: pageSession });
    endCall();
    setStatus("ended", "Call ended. Press Restart call to call again.");
  });
  elements.restart.addEventListener("click", () => {
    state.renewals = 0;
    if (state.elsewhere) {
      // Take the call back from the other tab: our presence makes the peer call this tab.
      state.elsewhere = false;
      setStatus("waiting", `Waiting for ${peerName()}…`);
      signaling.resume();
      return;
    }
    restartCall();
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

// The status once the socket is open: in a call, or waiting for the peer. A call that is
// recovering keeps what its recovery says.
function showOpenStatus() {
  const call = state.call;
  if (call && call.isRecovering) return;
  if (call && call.pc.connectionState === "connected") {
    setStatus("connected", `In a call with ${peerName()}`);
    return;
  }
  const waiting = state.peerId ? `Waiting for ${peerName()}…` : "Waiting for a caller…";
  if (state.cameraProblem) setStatus("camera-refused", `${waiting} ${state.cameraProblem}`);
  else setStatus("waiting", waiting);
}

function wireSignaling() {
  signaling.addEventListener("open", () => {
    showOpenStatus();
    if (state.peerId) presence();
  });
  signaling.addEventListener("message", ({ detail }) => onMessage(detail));
  signaling.addEventListener("notice", ({ detail }) => {
    if (detail === "RATE-LIMITED") {
      addChatLine("system", "", "Slow down: the server dropped a message (rate limit).");
    } else if (detail === "PEER-UNAVAILABLE") {
      if (!state.call || (state.call.pc.connectionState !== "connected" && !state.call.isRecovering)) {
        setStatus("not-online", `${peerName()} not online`);
      }
    }
  });
  signaling.addEventListener("close", ({ detail }) => {
    if (detail.retryInMs === null && showRefusal(detail.code, "these ids", detail.reason, joinToken)) return;
    if (detail.retryInMs !== null) {
      const inCall = state.call && state.call.pc.connectionState === "connected";
      const tooMuch = detail.reason === "SERVER-BUSY" ? "The server is busy" : "The server is full";
      let what = detail.code === 1013 ? tooMuch : inCall ? "Signaling lost (the call goes on)" : "Signaling lost";
      if (detail.code === 4401) what = "The join token expired, asking the site for a new one";
      setStatus(inCall ? "connected" : "reconnecting", `${what}: reconnecting in ${Math.round(detail.retryInMs / 1000)} s…`);
    }
  });
}

async function start() {
  addEventListener("pagehide", leavePage);
  // Back from the browser's back/forward cache: the call was ended on the way out.
  addEventListener("pageshow", (event) => {
    if (event.persisted) location.reload();
  });
  offerOnlyCodecs(sendableVideoCodecs());
  wirePanels();
  wireControls();
  wireMediaControls(page);
  wireMedia(page);
  wireSignaling();
  if (config.inviteUrl) showInvite(new URL(config.inviteUrl, location.href).href, elements.invite);
  quality.start();
  setStatus("starting", "Starting camera…");
  const [iceServers] = await Promise.all([joinToken.ready().then(() => fetchIceServers(config, joinToken)), openMedia(page)]);
  state.iceServers = iceServers;
  signaling.connect();
}

start();
