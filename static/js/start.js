// The start form: "Call" needs a peer id (a caller page for "anyone" calls nobody), and the
// address it opens leaves out empty fields (/recieve?id=bob, not /recieve?id=bob&peer_id=).

const form = document.getElementById("start-form");
const peer = document.getElementById("start-peer");

// The browser checks `required` after the click: the button pressed decides.
for (const button of form.querySelectorAll("button[type=submit]")) {
  button.addEventListener("click", () => {
    peer.setCustomValidity("");
    peer.required = button.hasAttribute("data-needs-peer");
  });
}
peer.addEventListener("invalid", () => peer.setCustomValidity(peer.validity.valueMissing ? "Enter the id of the person to call." : ""));
peer.addEventListener("input", () => peer.setCustomValidity(""));

form.addEventListener("formdata", ({ formData }) => {
  for (const [name, value] of [...formData]) if (typeof value === "string" && !value.trim()) formData.delete(name);
});
