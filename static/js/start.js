// The start form: each button needs its own field ("Call" a peer id: a caller page for
// "anyone" calls nobody; "Join room" a room), and the address it opens has only that button's
// fields, without empty ones (/recieve?id=bob, not /recieve?id=bob&peer_id=&room=).

const form = document.getElementById("start-form");
const MISSING = { "start-peer": "Enter the id of the person to call.", "start-room": "Enter the room's name." };
let fields = null; // the names the pressed button sends

// The browser checks `required` after the click: the button pressed decides.
for (const button of form.querySelectorAll("button[type=submit]")) {
  button.addEventListener("click", () => {
    fields = (button.dataset.fields || "").split(" ");
    for (const id of Object.keys(MISSING)) {
      const input = document.getElementById(id);
      input.setCustomValidity("");
      input.required = button.dataset.needs === id;
    }
  });
}
for (const [id, text] of Object.entries(MISSING)) {
  const input = document.getElementById(id);
  input.addEventListener("invalid", () => input.setCustomValidity(input.validity.valueMissing ? text : ""));
  input.addEventListener("input", () => input.setCustomValidity(""));
}

form.addEventListener("formdata", ({ formData }) => {
  for (const [name, value] of [...formData]) {
    if ((typeof value === "string" && !value.trim()) || (fields && !fields.includes(name))) formData.delete(name);
  }
});
