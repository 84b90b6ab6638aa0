// The page: status line, chat log and controls. Peer text is always shown as text.

const $ = (id) => document.getElementById(id);

export const elements = {
  status: $("status"),
  localVideo: $("local-video"),
  remoteVideo: $("remote-video"),
  hangup: $("hangup"),
  restart: $("restart"),
  mute: $("mute"),
  cameraOff: $("camera-off"),
  share: $("share"),
  camera: $("camera"),
  microphone: $("microphone"),
  speaker: $("speaker"),
  resolution: $("resolution"),
  codec: $("codec"),
  bandwidth: $("bandwidth"),
  chat: $("chat"),
  chatLog: $("chat-log"),
  showChat: $("show-chat"),
  showMore: $("show-more"),
  chatUnread: $("chat-unread"),
  chatForm: $("chat-form"),
  chatInput: $("chat-input"),
  peerId: $("peer-id"),
  invite: { panel: $("invite"), link: $("invite-link"), copy: $("invite-copy"), done: $("invite-done"), qr: $("invite-qr") },
};

// state: a short word tests and styles can rely on (waiting, connecting, connected, ...).
export function setStatus(state, text) {
  elements.status.dataset.state = state;
  elements.status.textContent = text;
}

// What the page says when the server refused its join token (close code 4401), by reason.
const TOKEN_REFUSALS = {
  "TOKEN-REQUIRED": [
    "token-required",
    "This server lets in only people its site invited, and this page's address carries no join token. Open the link you were given.",
  ],
  "TOKEN-INVALID": [
    "token-invalid",
    "The server refused this page's join token (TOKEN-INVALID): it is not for this call or room, or not from this site. Ask for a new link.",
  ],
  "TOKEN-EXPIRED": ["token-expired", "Your session has ended: its join token expired. Open the link again to get a new one."],
};

// The refusals that retrying cannot fix (signaling.js stops on them): say which, and answer
// true; false for any other close code. `names`: what the page asked for ("these ids");
// `reason`: the close reason; `token`: the page's JoinToken (why its renewal failed).
export function showRefusal(code, names, reason = "", token = null) {
  if (code === 4401) {
    const [state, text] = TOKEN_REFUSALS[reason] || TOKEN_REFUSALS["TOKEN-INVALID"];
    const why = reason === "TOKEN-EXPIRED" && token && token.problem ? ` (No new token: ${token.problem}.)` : "";
    setStatus(state, text + why);
  } else if (code === 4400) setStatus("bad-request", `The server refused ${names} (BAD-REQUEST).`);
  else if (code === 4403) setStatus("forbidden", "The server refused this page's connection (FORBIDDEN).");
  else if (code === 4429) setStatus("too-many", "Too many pages are open with this id: close one and reload.");
  else return false;
  return true;
}

// who: "me", "peer" or "system".
export function addChatLine(who, name, text, date) {
  const item = document.createElement("li");
  item.className = `chat-line ${who}`;
  const time = document.createElement("time");
  const when = new Date(Number.isFinite(date) ? date : Date.now());
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString();
  item.append(time);
  if (name) {
    const author = document.createElement("strong");
    author.textContent = name;
    item.append(author);
  }
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(body);
  const log = elements.chatLog;
  // Scroll the log, never the page: on a phone the call stays where it is.
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
  log.append(item);
  if (atEnd || who === "me") log.scrollTop = log.scrollHeight;
  if (who === "peer" && !isShown(elements.chat)) {
    unread += 1;
    elements.chatUnread.textContent = String(unread);
    elements.chatUnread.hidden = false;
  }
}

let unread = 0; // peer lines that arrived while the chat was behind its toggle (a phone)

function isShown(element) {
  return element.getClientRects().length > 0;
}

// On a phone the chat and the "more" panels (devices, invite, call quality) open one at a time
// below the call controls; on a laptop they are all shown and the toggles are hidden (CSS).
export function wirePanels() {
  const open = (name) => {
    document.body.dataset.open = document.body.dataset.open === name ? "" : name;
    elements.showChat.setAttribute("aria-expanded", String(document.body.dataset.open === "chat"));
    elements.showMore.setAttribute("aria-expanded", String(document.body.dataset.open === "more"));
    if (document.body.dataset.open === "chat") {
      unread = 0;
      elements.chatUnread.hidden = true;
      elements.chatLog.scrollTop = elements.chatLog.scrollHeight;
    }
  };
  elements.showChat.addEventListener("click", () => open("chat"));
  elements.showMore.addEventListener("click", () => open("more"));
}

export function setMuted(muted) {
  elements.mute.textContent = muted ? "Unmute" : "Mute";
  elements.mute.setAttribute("aria-pressed", String(muted));
}

export function setCameraOff(off) {
  elements.cameraOff.textContent = off ? "Start video" : "Stop video";
  elements.cameraOff.setAttribute("aria-pressed", String(off));
}

export function setSharing(sharing) {
  elements.share.textContent = sharing ? "Stop sharing" : "Share screen";
  elements.share.setAttribute("aria-pressed", String(sharing));
}

export function setInCall(inCall) {
  elements.hangup.disabled = !inCall;
}

// Offer only the codecs this browser can send: the others stay listed, disabled, with the
// reason, so the choice is honest (codecs: upper-case names, or null when unknown).
export function offerOnlyCodecs(codecs) {
  if (!codecs) return;
  for (const option of elements.codec.options) {
    if (!option.value || codecs.includes(option.value.toUpperCase())) continue;
    option.disabled = true;
    option.textContent = `${option.value} (not available in this browser)`;
    if (option.selected) elements.codec.value = "";
  }
}
