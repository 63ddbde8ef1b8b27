"""Small server-rendered SVG charts for the operations page (no JavaScript, no CDN)."""

from __future__ import annotations

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# Text size in viewBox units: a chart is drawn 480 wide and shown at ~380-600 px in the page
# grid, so labels render at 12-20 px (never under 11 px).
FONT = 16


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10000):
        if value <= step:
            return step
    magnitude = 10 ** (len(str(int(value))) - 1)
    return ((int(value) // magnitude) + 1) * magnitude


def bar_chart(
    points: list[tuple[str, float]],
    *,
    title: str,
    color: str,
    chart_id: str,
    width: int = 480,
    height: int = 180,
) -> SafeString:
    """A vertical bar chart: one ``rect.bar`` per point, an axis with the maximum, a label
    every few bars, and a <title> per bar for the exact value on hover."""
    left, bottom, top = 44, 26, 12
    plot_w, plot_h = width - left - 6, height - bottom - top
    top_value = _nice_max(max((v for _, v in points), default=0))
    n = max(1, len(points))
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.75)
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg" data-points="{len(points)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - 6}" '
        f'y2="{top + plot_h}" stroke="#94a3b8"/>',
        f'<line class="grid" x1="{left}" y1="{top}" x2="{width - 6}" y2="{top}" '
        f'stroke="#e2e8f0" stroke-dasharray="3 3"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="{FONT}" '
        f'fill="#475569">{top_value:g}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="{FONT}" '
        f'fill="#475569">0</text>',
    ]
    label_every = max(1, n // 8)
    for i, (label, value) in enumerate(points):
        h = 0 if not value else max(1.0, plot_h * value / top_value)
        x = left + i * slot + (slot - bar_w) / 2
        y = top + plot_h - h
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
            f'fill="{escape(color)}" data-value="{value:g}"><title>{escape(label)}: {value:g}'
            f"</title></rect>"
        )
        if i % label_every == 0:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" text-anchor="middle" '
                f'font-size="{FONT}" fill="#475569">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped


def stacked_bars(
    rows: list[tuple[str, dict[str, int]]],
    *,
    colors: dict[str, str],
    title: str,
    chart_id: str,
    width: int = 480,
) -> SafeString:
    """Horizontal stacked bars (one row per queue, one segment per status) with a legend."""
    row_h, left, legend_h = 30, 110, 26
    height = legend_h + row_h * max(1, len(rows)) + 6
    plot_w = width - left - 50
    top_value = _nice_max(max((sum(v.values()) for _, v in rows), default=0))
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" role="img" aria-label="{escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg" '
        f'data-points="{len(rows)}"><title>{escape(title)}</title>'
    ]
    x = left
    for status, color in colors.items():
        parts.append(
            f'<rect x="{x}" y="4" width="12" height="12" fill="{color}"/><text x="{x + 14}" '
            f'y="15" font-size="{FONT}" fill="#334155">{escape(status)}</text>'
        )
        x += 26 + 9 * len(status)
    for i, (name, values) in enumerate(rows):
        y = legend_h + i * row_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 20}" text-anchor="end" font-size="{FONT}" '
            f'fill="#0f172a">{escape(name)}</text>'
        )
        x = float(left)
        for status, color in colors.items():
            value = values.get(status, 0)
            if not value:
                continue
            w = max(2.0, plot_w * value / top_value)
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="16" '
                f'fill="{color}" data-value="{value}"><title>{escape(name)} {escape(status)}: '
                f"{value}</title></rect>"
            )
            x += w
        parts.append(
            f'<text x="{x + 4:.1f}" y="{y + 20}" font-size="{FONT}" fill="#475569">'
            f"{sum(values.values())}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped
