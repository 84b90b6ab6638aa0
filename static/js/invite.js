// The invite: the receiver's link for this call, a button that copies it, and its QR code for
// a phone's camera (drawn here with the vendored qrcodegen.js: nothing from the internet).

import qrcodegen from "./vendor/qrcodegen.js";

const QUIET_ZONE = 4; // modules of white around the code, as the QR standard asks

// url: the receiver page's absolute URL; elements: {panel, link, copy, done, qr}.
export function showInvite(url, elements) {
  elements.link.href = url;
  elements.link.textContent = url;
  elements.copy.addEventListener("click", () => copy(url, elements));
  drawQrCode(elements.qr, url);
  elements.panel.hidden = false;
}

async function copy(url, { done, link }) {
  try {
    await navigator.clipboard.writeText(url);
    done.textContent = "Copied";
  } catch {
    // No clipboard access (an insecure page, a refused permission): select the link instead.
    getSelection().selectAllChildren(link);
    done.textContent = "Press Ctrl+C to copy";
  }
}

export function drawQrCode(canvas, text) {
  const qr = qrcodegen.QrCode.encodeText(text, qrcodegen.QrCode.Ecc.MEDIUM);
  const modules = qr.size + 2 * QUIET_ZONE;
  const scale = Math.max(2, Math.floor(canvas.width / modules));
  canvas.width = canvas.height = modules * scale;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "#000";
  for (let y = 0; y < qr.size; y++) {
    for (let x = 0; x < qr.size; x++) {
      if (qr.getModule(x, y)) context.fillRect((x + QUIET_ZONE) * scale, (y + QUIET_ZONE) * scale, scale, scale);
    }
  }
}
