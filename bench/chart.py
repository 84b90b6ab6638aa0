"""The headline comparison as a chart (docs/benchmarks.svg): for four figures of the results,
a horizontal bar per server (webrtc_app, each further revision, PeerJS), its median written at
its end; a plain hand-written SVG, no plotting library."""

from __future__ import annotations

from html import escape

from bench.config import Config
from bench.table import Column

WIDTH, LABELS, BARS, ROW, GAP = 760, 150, 470, 22, 18
COLOURS = {"webrtc_app": "#2563eb", "PeerJS": "#ea580c"}
OTHERS = ("#0d9488", "#7c3aed", "#64748b")  # further revisions


def figures(cfg: Config) -> list[tuple[str, str, str, str]]:
    """(workload, figure, title, format) of each group of bars."""
    steps = cfg.idle_steps
    span = f"{steps[-2] if len(steps) > 1 else 0:,} → {steps[-1]:,}"
    return [
        ("relay", "cpu_us_per_msg", "server CPU per relayed message", "{:.1f} µs"),
        ("idle", f"cpu_us_per_open_{steps[-1]}", f"server CPU per socket opened, {span}", "{:.0f} µs"),
        ("idle", f"rss_kib_per_socket_{steps[-1]}", f"server RSS per idle socket at {steps[-1]:,}", "{:.1f} KiB"),
        ("calls", "cpu_ms_per_call", "server CPU per call", "{:.2f} ms"),
    ]


def chart(cfg: Config, results: dict[str, dict[str, list[dict[str, float]]]], facts: dict[str, str], command: str) -> str | None:
    """The SVG of the medians of ``results`` (suite.run_rounds), or None if none of its figures was measured."""
    columns = [Column(s.label, results[s.key]) for s in cfg.subjects if s.key in results]
    others = iter(OTHERS * 3)
    colours = {c.label: COLOURS.get(c.label) or next(others) for c in columns}
    parts, y = [], 40
    for workload, key, title, fmt in figures(cfg):
        values = [(c.label, c.value(key, workload)) for c in columns]
        values = [(label, v) for label, v in values if v is not None]
        if not values:
            continue
        top = max(v for _, v in values) or 1
        parts.append(f'<text x="10" y="{y + 14}" class="title">{escape(title)}</text>')
        y += 22
        for label, value in values:
            length = max(1.0, BARS * value / top)
            parts += [
                f'<text x="{LABELS - 8}" y="{y + 15}" text-anchor="end">{escape(label)}</text>',
                f'<rect x="{LABELS}" y="{y + 2}" width="{length:.1f}" height="{ROW - 6}" fill="{colours[label]}"/>',
                f'<text x="{LABELS + length + 6:.1f}" y="{y + 15}">{escape(fmt.format(value))}</text>',
            ]
            y += ROW
        y += GAP
    if not parts:
        return None
    note = f"Medians of {cfg.rounds} round(s); lower is better. {facts['date']}, webrtc_app {facts['webrtc_app commit']}."
    height = y + 36
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
            'font-family="sans-serif" font-size="13">',
            "<style>.title { font-weight: bold; } .note { font-size: 11px; fill: #555; }</style>",
            f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>',
            '<text x="10" y="22" class="title" font-size="15">What the server spends for the same work</text>',
            *parts,
            f'<text x="10" y="{height - 26}" class="note">{escape(note)}</text>',
            f'<text x="10" y="{height - 10}" class="note">Drawn by {escape(command)}</text>',
            "</svg>",
        ]
    )
