// The room page: a group call of up to config.maxMembers people, as a mesh: one Call (call.js,
// perfect negotiation, ICE restart on a network change) per other member, all sending the
// same microphone and camera (local.js), a tile per member, and a chat to everyone.
//
// The room's socket (docs/protocol.md, "Rooms") says who is here: "members" on each
// admission, then "joined" and "left". A newcomer offers to everyone in its "members"; a
// member who hears "joined" waits for the newcomer's offer. Messages are sent with "to" (one
// member) or without (everyone); the server sets "from". Every message carries this page's
// session, so a member's second tab or reload is told apart from the page we are connected to.

import { Call } from "./call.js";
import { DevicePickers } from "./devices.js";
import { showInvite } from "./invite.js";
import { applyMute, fetchIceServers, openMedia, playOn, sendableVideoCodecs, wireMedia, wireMediaControls } from "./local.js";
import { LocalMedia } from "./media.js";
import { pageSession, Signaling } from "./signaling.js";
import { JoinToken } from "./tokens.js";
import { addChatLine, elements, offerOnlyCodecs, setStatus, showRefusal, wirePanels } from "./ui.js";

const config = JSON.parse(document.getElementById("page-config").textContent);
// A connection that failed for good is replaced by a new one, this many times in a row at most.
const MAX_RENEWALS = 3;
const NEGOTIATION = new Set(["video-offer", "video-answer", "new-ice-candidate"]);

const $ = (id) => document.getElementById(id);
const tiles = $("tiles");
const leaveButton = $("leave");
const rejoinButton = $("rejoin");

const media = new LocalMedia();
const state = {
  members: new Map(), // id -> {id, tile, video, call, session, renewals, muted, sending}, in the order they joined
  iceServers: [],
  muted: false,
  cameraOff: false,
  cameraProblem: null,
  speaker: null,
  admitted: false, // the socket had its "members": we are in the room
  away: null, // why this page is out of the room: "left" (Leave), "elsewhere" (another tab), "full"
  preferences: { codec: elements.codec.value, bandwidth: elements.bandwidth.value },
};
const joinToken = new JoinToken(config, () => ({ id: config.myId, room: config.room }));
const signaling = new Signaling(config.wsUri, joinToken);
const pickers = new DevicePickers({ camera: elements.camera, microphone: elements.microphone, speaker: elements.speaker });
const page = {
  config,
  media,
  pickers,
  state,
  calls: () => [...state.members.values()].map((member) => member.call).filter(Boolean),
  sinks: () => [...state.members.values()].map((member) => member.video),
  whom: () => "the room",
};
window.webrtcApp = { config, state, signaling, media, pickers }; // for the console and the end-to-end tests

// --- members and their tiles ----------------------------------------------------------------

function addMember(id) {
  let member = state.members.get(id);
  if (member) return member;
  const tile = $("tile-template").content.firstElementChild.cloneNode(true);
  tile.dataset.id = id;
  tile.querySelector(".name").textContent = id;
  const video = tile.querySelector("video");
  playOn(page, video);
  tiles.append(tile);
  member = { id, tile, video, call: null, session: null, renewals: 0, muted: false, sending: true };
  state.members.set(id, member);
  showCount();
  return member;
}

function removeMember(id) {
  const member = state.members.get(id);
  if (!member) return;
  endCall(member);
  member.tile.remove();
  state.members.delete(id);
  showCount();
}

function removeEveryone() {
  for (const id of [...state.members.keys()]) removeMember(id);
}

function showCount() {
  const count = state.members.size + 1;
  tiles.dataset.count = String(count);
  $("member-count").textContent = `${count} of ${config.maxMembers} here`;
}

function setTileState(member, text) {
  member.tile.querySelector(".tile-state").textContent = text;
  member.tile.dataset.state = text ? "busy" : "connected";
}

function showBadges(member) {
  member.tile.querySelector(".badge-muted").hidden = !member.muted;
  member.tile.classList.toggle("no-video", !member.sending);
}

// --- one connection per member ---------------------------------------------------------------

function endCall(member) {
  if (member.call) member.call.close();
  member.call = null;
  member.session = null;
  member.video.srcObject = null;
}

// A new connection with `member`: it offers as soon as it has tracks (perfect negotiation
// sorts out two offers crossing; the larger id is the polite side, as on the call page).
function newCall(member, session = null) {
  endCall(member);
  member.session = session;
  const call = new Call({
    myId: config.myId,
    peerId: member.id,
    iceServers: state.iceServers,
    localStream: media.stream,
    polite: config.myId > member.id,
    send: (message) => signaling.send({ ...message, to: member.id, session: pageSession }),
    preferences: state.preferences,
    // The room's socket reconnects by itself; reopening it here would make us leave the room
    // and come back, and every member would start over with us.
    beforeRestart: () => signaling.whenOpen(),
  });
  member.call = call;
  setTileState(member, "connecting…");
  const current = () => member.call === call && state.members.get(member.id) === member;
  call.addEventListener("track", ({ detail }) => {
    if (current() && member.video.srcObject !== detail) member.video.srcObject = detail;
  });
  call.addEventListener("state", ({ detail }) => {
    if (!current()) return;
    if (detail === "connected" && call.isHealthy) {
      call.startedByUs = false; // a later start-call from the member is a restart to follow
      member.renewals = 0;
      setTileState(member, "");
    } else if (call.isRecovering) setTileState(member, "reconnecting…");
    showRoomStatus();
  });
  for (const type of ["stalled", "recovering"]) {
    call.addEventListener(type, () => {
      if (!current()) return;
      setTileState(member, "reconnecting…");
      showRoomStatus();
    });
  }
  call.addEventListener("failed", ({ detail }) => {
    if (!current()) return;
    if (detail.reason === "gave-up") {
      // A connection that worked lost its path and ICE restarts did not bring it back: a
      // network change, after which our socket may be dead without knowing it (its offers went
      // nowhere). A new socket: "members" again, and every connection starts over.
      reopen();
    } else if (member.renewals < MAX_RENEWALS) {
      member.renewals += 1;
      renewCall(member);
    } else {
      setTileState(member, "cannot connect");
      addChatLine("system", "", `Cannot reach ${member.id} (${detail.reason}).`);
    }
    showRoomStatus();
  });
  if (state.muted) applyMute(page);
  return call;
}

// A new socket (one at a time): the server answers "members", and every connection starts over.
let reopening = null;
function reopen() {
  if (!reopening) reopening = signaling.reopen().finally(() => (reopening = null));
}

// What the call page's Restart call does, for one member: tell it, then a new connection. The
// member ends the connection it has with us, if any (it may not have seen us leave: our old
// socket may still be open on the server), and answers the new one's offer.
function renewCall(member) {
  signaling.send({ type: "start-call", to: member.id, date: Date.now(), session: pageSession });
  newCall(member).startedByUs = true;
}

// --- the room's socket ------------------------------------------------------------------------

function onRoomEvent(frame) {
  if (frame.event === "members") {
    // (Re)admitted: every connection starts over, offered by us to each member in the order
    // they joined (those who saw us leave and join wait for it; the others end theirs first).
    state.admitted = true;
    const present = new Set(frame.members);
    for (const id of [...state.members.keys()]) if (!present.has(id)) removeMember(id);
    for (const id of frame.members) {
      const member = addMember(id);
      member.renewals = 0;
      renewCall(member);
    }
    tellState();
  } else if (frame.event === "joined") {
    // A newcomer (or a member back after a reconnection): its offer follows.
    const member = addMember(frame.id);
    endCall(member);
    setTileState(member, "joining…");
    tellState(frame.id);
  } else if (frame.event === "left") {
    removeMember(frame.id);
  } else if (frame.event === "message") {
    onMessage(frame.from, frame.data);
  }
  showRoomStatus();
}

function onMessage(from, data) {
  if (!data || typeof data !== "object" || state.away) return;
  if (from === config.myId) {
    // What another tab of ours sent in this room: it has joined, this one steps aside.
    if (data.session !== pageSession && NEGOTIATION.has(data.type)) stepAside();
    return;
  }
  const member = state.members.get(from);
  if (!member) return; // the server says joined before any message: not a member any more
  if (data.type === "video-offer") {
    // An offer from another page of that member's (a reload, a second tab), or one to a call
    // that failed for good: a new connection.
    const call = member.call;
    if (!call || call.closed || call.givenUp || (member.session !== null && member.session !== data.session)) newCall(member, data.session);
    if (member.session === null) member.session = data.session;
    member.call.handle(data);
  } else if (data.type === "video-answer" || data.type === "new-ice-candidate") {
    if (!member.call) return;
    if (member.session === null) member.session = data.session;
    if (member.session === data.session) member.call.handle(data);
  } else if (data.type === "start-call") {
    // The member starts our connection over; its offer follows. If both of us did at once, the
    // impolite side keeps its own.
    if (member.call && member.call.startedByUs && config.myId < member.id) return;
    endCall(member);
    setTileState(member, "connecting…");
  } else if (data.type === "state") {
    member.muted = Boolean(data.muted);
    member.sending = data.video !== false;
    showBadges(member);
  } else if (data.type === "message" && typeof data.text === "string" && data.text.trim()) {
    addChatLine("peer", from, data.text, Number(data.date));
  }
}

// Whether we are muted and send video: to everyone, or to the member `to`.
function tellState(to) {
  const message = { type: "state", muted: state.muted, video: Boolean(media.videoTrack), session: pageSession };
  signaling.send(to ? { ...message, to } : message);
  tiles.querySelector(".tile.self .badge-muted").hidden = !state.muted;
}

// --- the room as a whole ---------------------------------------------------------------------

function showRoomStatus() {
  if (state.away || !signaling.isOpen || !state.admitted) return;
  const members = [...state.members.values()];
  if (!members.length) {
    const waiting = `Waiting for others to join ${config.room}…`;
    if (state.cameraProblem) setStatus("camera-refused", `${waiting} ${state.cameraProblem}`);
    else setStatus("alone", waiting);
    return;
  }
  const connected = members.filter((member) => member.call && member.call.isHealthy);
  if (connected.length === members.length) setStatus("connected", `In ${config.room} with ${members.map((m) => m.id).join(", ")}`);
  else if (members.some((member) => member.call && member.call.isRecovering)) setStatus("reconnecting", "Connection interrupted: reconnecting…");
  else setStatus("connecting", `Connecting (${connected.length} of ${members.length})…`);
}

// Out of the room, for `why`: the socket closes, every connection ends, Join again brings us back.
function goAway(why, text) {
  state.away = why;
  state.admitted = false;
  signaling.stop();
  removeEveryone();
  setStatus(why === "full" ? "room-full" : why, text);
  leaveButton.hidden = true;
  rejoinButton.hidden = false;
}

function stepAside() {
  goAway("elsewhere", "Joined from another tab: the room goes on there. Press Join again to bring it back here.");
}

function rejoin() {
  state.away = null;
  leaveButton.hidden = false;
  rejoinButton.hidden = true;
  setStatus("joining", `Joining ${config.room}…`);
  signaling.resume();
}

function wireSignaling() {
  signaling.addEventListener("open", () => setStatus("joining", `Joining ${config.room}…`));
  signaling.addEventListener("message", ({ detail }) => {
    if (detail.msg_type === "ROOM" && detail.room === config.room) onRoomEvent(detail);
  });
  signaling.addEventListener("notice", ({ detail }) => {
    if (detail === "RATE-LIMITED") addChatLine("system", "", "Slow down: the server dropped a message (rate limit).");
    else if (detail === "BAD-MESSAGE") console.warn("room: the server refused a message of ours");
  });
  signaling.addEventListener("close", ({ detail }) => {
    state.admitted = false;
    if (state.away) return;
    if (detail.code === 4409) {
      goAway("full", `This room is full: it has ${config.maxMembers} people, the most it takes. Press Join again to try later.`);
    } else if (detail.retryInMs === null) {
      showRefusal(detail.code, "this id or room", detail.reason, joinToken);
    } else {
      let what = detail.code === 1013 ? "The server is busy" : "Connection to the room lost";
      if (detail.code === 4401) what = "The join token expired, asking the site for a new one";
      setStatus("reconnecting", `${what}: reconnecting in ${Math.round(detail.retryInMs / 1000)} s…`);
    }
  });
}

function wireControls() {
  leaveButton.addEventListener("click", () => goAway("left", `You left ${config.room}. Press Join again to come back.`));
  rejoinButton.addEventListener("click", rejoin);
  elements.chatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = elements.chatInput.value;
    if (!text.trim()) return;
    const date = Date.now();
    if (state.admitted && signaling.send({ type: "message", text, date, session: pageSession })) {
      addChatLine("me", config.myId, text, date);
      elements.chatInput.value = "";
    } else {
      addChatLine("system", "", "Not sent: you are not in the room right now, try again in a moment.");
    }
  });
}

async function start() {
  // The tab closes or navigates away: the socket closes with it, and the others hear "left".
  addEventListener("pagehide", () => {
    signaling.stop();
    removeEveryone();
  });
  addEventListener("pageshow", (event) => {
    if (event.persisted) location.reload();
  });
  offerOnlyCodecs(sendableVideoCodecs());
  wirePanels();
  wireControls();
  wireMediaControls(page, () => tellState());
  wireMedia(page, () => tellState());
  wireSignaling();
  showInvite(new URL(config.inviteUrl, location.href).href, elements.invite);
  setStatus("starting", "Starting camera…");
  const [iceServers] = await Promise.all([joinToken.ready().then(() => fetchIceServers(config, joinToken)), openMedia(page)]);
  state.iceServers = iceServers;
  setStatus("joining", `Joining ${config.room}…`);
  signaling.connect();
}

start();
