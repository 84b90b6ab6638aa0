// The camera, microphone and speaker pickers: filled from enumerateDevices() (devices have
// names only once the page may use the camera or microphone), remembered for the next visit
// in localStorage, and filled again when a device is plugged in or out.

const STORAGE_KEY = "webrtc_app.devices";
const KINDS = { camera: "videoinput", microphone: "audioinput", speaker: "audiooutput" };
const NAMES = { camera: "Camera", microphone: "Microphone", speaker: "Speaker" };

// Chromium and Firefox can choose where a media element plays (setSinkId); Safari cannot.
export const canChooseSpeaker = "setSinkId" in HTMLMediaElement.prototype;

// The deviceId remembered for role ("camera", "microphone", "speaker"), or null.
export function remembered(role) {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}")[role] || null;
  } catch {
    return null; // storage disabled, or not ours
  }
}

function remember(role, deviceId) {
  try {
    const choices = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
    choices[role] = deviceId;
    localStorage.setItem(STORAGE_KEY, JSON.stringify(choices));
  } catch {
    // storage disabled: the choice lasts for this visit only
  }
}

// Events: "pick" (detail: {role, deviceId}) when the person chooses a device.
export class DevicePickers extends EventTarget {
  // selects: {camera, microphone, speaker} <select> elements.
  constructor(selects) {
    super();
    this.selects = selects;
    this.inUse = {}; // role -> deviceId the page uses now
    for (const [role, select] of Object.entries(selects)) {
      select.addEventListener("change", () => {
        remember(role, select.value);
        this.dispatchEvent(new CustomEvent("pick", { detail: { role, deviceId: select.value } }));
      });
    }
    if (!canChooseSpeaker) selects.speaker.closest("label").hidden = true;
    navigator.mediaDevices.addEventListener("devicechange", () => this.refresh());
  }

  // Say which devices the page uses now (role -> deviceId), and show them selected.
  async use(inUse) {
    Object.assign(this.inUse, inUse);
    await this.refresh();
  }

  async refresh() {
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch (error) {
      console.warn("devices: cannot list them", error);
    }
    for (const [role, select] of Object.entries(this.selects)) {
      // Before permission, browsers list a device without id or name: nothing to choose yet.
      const list = devices.filter((device) => device.kind === KINDS[role] && device.deviceId);
      const wanted = this.inUse[role] || remembered(role);
      select.replaceChildren(
        ...list.map((device, index) => new Option(device.label || `${NAMES[role]} ${index + 1}`, device.deviceId)),
      );
      if (!list.length) select.append(new Option(`No ${NAMES[role].toLowerCase()} found`, ""));
      select.disabled = !list.length;
      if (list.some((device) => device.deviceId === wanted)) select.value = wanted;
    }
    this.dispatchEvent(new Event("refresh"));
  }
}
