"""The fine-tune's loss curves as an inline SVG chart, drawn on the server (no script, no image library)."""

from __future__ import annotations

from html import escape

from shared.report import COLORS, Curve

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40  # the margins around the plot
CURVE_COLORS = {"train": COLORS["distilled"], "eval": COLORS["base"]}


def loss_svg(curves: list[Curve]) -> str:
    """An `<svg>` of the curves against their steps (or epochs), with the loss range and the x range marked. Curves
    measured against different things (steps, epochs) each span the whole width."""
    spans = {key: (min(xs), max(xs)) for key in {curve.x for curve in curves}
             for xs in [[x for curve in curves if curve.x == key for x, _ in curve.points]]}
    ys = [y for curve in curves for _, y in curve.points]
    y0, y1 = min(0.0, min(ys)), max(ys)
    width, height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x0, x1 = spans[curves[0].x]

    def at(key: str, x: float, y: float) -> tuple[float, float]:
        low, high = spans[key]
        return LEFT + (x - low) / ((high - low) or 1) * width, TOP + (1 - (y - y0) / ((y1 - y0) or 1)) * height

    label = escape(" / ".join(dict.fromkeys(curve.x for curve in curves)))
    parts = [f'<svg class="loss" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="loss-title" '
             f'xmlns="http://www.w3.org/2000/svg">',
             '<title id="loss-title">Fine-tune loss by ' + label + "</title>",
             f'<rect x="{LEFT}" y="{TOP}" width="{width}" height="{height}" fill="none" stroke="#ccc"/>',
             _text(LEFT - 6, TOP + 4, f"{y1:.3g}", "end"), _text(LEFT - 6, TOP + height, f"{y0:.3g}", "end"),
             _text(LEFT, HEIGHT - BOTTOM + 16, f"{x0:g}", "start"),
             _text(LEFT + width, HEIGHT - BOTTOM + 16, f"{x1:g}", "end"),
             _text(LEFT + width / 2, HEIGHT - 6, label, "middle")]
    for n, curve in enumerate(curves):
        color = CURVE_COLORS.get(curve.name, "#333")
        points = [at(curve.x, x, y) for x, y in curve.points]
        if len(points) == 1:
            parts.append(f'<circle cx="{points[0][0]:.1f}" cy="{points[0][1]:.1f}" r="3" fill="{color}"/>')
        else:
            line = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts.append(_text(LEFT + width - 8, TOP + 16 + 16 * n, f"{curve.name} loss", "end", color))
    parts.append("</svg>")
    return "\n".join(parts)


def _text(x: float, y: float, text: str, anchor: str, color: str = "#555") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="12" fill="{color}">'
            f"{escape(text)}</text>")
