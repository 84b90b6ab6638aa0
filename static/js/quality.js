// The call-quality panel: once a second, the current call's getStats() turned into numbers
// (stats.js), a sparkline of the bitrate both ways, and a warning when the connection is poor.

import { assess, summarize } from "./stats.js";

const SAMPLE_MS = 1000;
const HISTORY = 60; // seconds of bitrate in the sparkline

const $ = (id) => document.getElementById(id);

export class QualityPanel {
  // currentCall: () => the Call to watch, or null.
  constructor(currentCall) {
    this.currentCall = currentCall;
    this.fields = {
      rtt: $("q-rtt"),
      loss: $("q-loss"),
      bitrate: $("q-bitrate"),
      video: $("q-video"),
      codec: $("q-codec"),
      path: $("q-path"),
    };
    this.warning = $("q-warning");
    this.canvas = $("q-sparkline");
    this.pc = null; // the connection the history belongs to
    this.last = null; // the previous sample
    this.history = [];
    this.timer = null;
  }

  start() {
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
  }

  async sample() {
    const call = this.currentCall();
    if (!call || call.closed) {
      if (this.pc) this.clear();
      return;
    }
    if (call.pc !== this.pc) this.clear(call.pc);
    let report;
    try {
      report = await call.pc.getStats();
    } catch {
      return; // closed meanwhile
    }
    if (call.pc !== this.pc) return;
    const summary = summarize(report, this.last, performance.now());
    this.last = summary;
    if (summary.kbpsIn !== null) {
      this.history.push({ in: summary.kbpsIn, out: summary.kbpsOut });
      if (this.history.length > HISTORY) this.history.shift();
    }
    this.show(summary);
    this.drawSparkline();
  }

  clear(pc = null) {
    this.pc = pc;
    this.last = null;
    this.history = [];
    for (const field of Object.values(this.fields)) show(field, "–", "");
    this.warning.hidden = true;
    this.warning.textContent = "";
    this.drawSparkline();
  }

  show(s) {
    const { fields } = this;
    const ms = (value) => (value < 10 ? value.toFixed(1) : Math.round(value)); // loopback and LAN: under a millisecond
    show(fields.rtt, s.rttMs === null ? "–" : `${ms(s.rttMs)} ms`, s.rttMs);
    const percent = (value) => (value === null ? "–" : `${value < 1 && value > 0 ? value.toFixed(1) : Math.round(value)}%`);
    show(fields.loss, `↓ ${percent(s.lossIn)} ↑ ${percent(s.lossOut)}`, s.lossIn);
    const kbps = (value) => (value === null ? "–" : value >= 1000 ? `${(value / 1000).toFixed(1)} Mb/s` : `${Math.round(value)} kb/s`);
    show(fields.bitrate, `↓ ${kbps(s.kbpsIn)} ↑ ${kbps(s.kbpsOut)}`, s.kbpsIn);
    const picture = s.width ? `${s.width}×${s.height}${s.fps === null ? "" : `, ${Math.round(s.fps)} fps`}` : "none";
    show(fields.video, picture, s.width ? `${s.width}x${s.height}` : "");
    show(fields.codec, `↓ ${s.codecIn || "–"} ↑ ${s.codecOut || "–"}`, s.codecIn || "");
    show(fields.path, s.path ? s.path.text : "–", s.path ? s.path.kind : "");
    // Changed only when it changes: it is a live region, read out to screen-reader users.
    const poor = assess(s) || "";
    if (this.warning.textContent !== poor) {
      this.warning.textContent = poor;
      this.warning.hidden = !poor;
    }
  }

  // Received bitrate as a filled line, sent bitrate as a plain one, on a shared scale.
  drawSparkline() {
    const canvas = this.canvas;
    // As many pixels as the canvas shows, so the line stays sharp at any width.
    const pixels = Math.round(canvas.clientWidth * devicePixelRatio);
    if (pixels && canvas.width !== pixels) {
      canvas.height = Math.round(canvas.clientHeight * devicePixelRatio);
      canvas.width = pixels;
    }
    const context = canvas.getContext("2d");
    const { width, height } = canvas;
    context.clearRect(0, 0, width, height);
    if (this.history.length < 2) return;
    const top = Math.max(1, ...this.history.map((point) => Math.max(point.in, point.out || 0)));
    // The newest second at the right edge; the minute before it to the left.
    const x = (index) => width - ((this.history.length - 1 - index) / (HISTORY - 1)) * width;
    const y = (value) => height - 1 - (value / top) * (height - 2);
    const line = (key) => {
      context.beginPath();
      this.history.forEach((point, index) => context.lineTo(x(index), y(point[key] || 0)));
    };
    line("in");
    context.lineTo(width, height);
    context.lineTo(x(0), height);
    context.fillStyle = "rgba(59, 130, 246, 0.35)";
    context.fill();
    line("in");
    context.strokeStyle = "#3b82f6";
    context.lineWidth = 1.5;
    context.stroke();
    line("out");
    context.strokeStyle = "#c4b5fd";
    context.stroke();
  }
}

// The text a person reads, and the raw value (data-value) for scripts and tests.
function show(field, text, value) {
  field.textContent = text;
  field.dataset.value = value === null || value === undefined ? "" : String(value);
}
