"""Line charts as inline SVG, coloured by the admin's own CSS (light and dark).

A chart is a ``<figure>``: its title, an SVG of lines over the window's slots
(a gap where a slot has no figure) with a y axis scaled to a round maximum,
bands where a database was down, and a legend. Colours are classes
(``socketsvc-line-0`` … and ``socketsvc-line-bad``) that admin.css maps to
variables of the admin's palette, so the charts follow its theme. No script:
the page reads the same without JavaScript.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.formats import time_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 640, 180
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 24
PALETTE = 6


@dataclass(frozen=True)
class Line:
    """One line: its name in the legend, a value (or None) per slot, and its class."""

    name: str
    values: Sequence[float | None]
    css: str = ""


def nice_ceiling(value: float) -> float:
    """Return a round number at least *value* (1, 2, 2.5 or 5 times a power of ten)."""
    if value <= 0:
        return 1.0
    power: float = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power:
            return step * power
    return 10.0 * power


def number(value: float) -> str:
    """Return *value* short: 1.5k, 12, 0.25."""
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"


def seconds(value: float) -> str:
    """Return a duration short: 250 ms, 1.5 s, 2 min."""
    if value < 1:
        return f"{value * 1000:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{value / 60:.3g} min"


def _x(slot: int, slots: int) -> float:
    usable = WIDTH - LEFT - RIGHT
    return LEFT + (usable * slot / max(1, slots - 1))


def _y(value: float, top: float) -> float:
    usable = HEIGHT - TOP - BOTTOM
    return TOP + usable * (1 - min(value, top) / top)


def _segments(values: Sequence[float | None], slots: int, top: float) -> list[str]:
    """Return the polylines' points: a new one after each gap."""
    found: list[str] = []
    points: list[str] = []
    for n, value in enumerate(values):
        if value is None:
            if points:
                found.append(" ".join(points))
            points = []
            continue
        points.append(f"{_x(n, slots):.1f},{_y(value, top):.1f}")
    if points:
        found.append(" ".join(points))
    return found


def chart(  # noqa: PLR0917
    title: str,
    times: Sequence[datetime],
    lines: Sequence[Line],
    down: Sequence[float],
    fmt: Callable[[float], str] = number,
    empty: str = "Nothing yet",
) -> SafeString:
    """Return a chart of *lines* over the slots starting at *times* (see the module)."""
    slots = len(times)
    highest = max((v for line in lines for v in line.values if v is not None), default=0.0)
    top = nice_ceiling(highest)
    parts: list[str] = []
    step = (WIDTH - LEFT - RIGHT) / max(1, slots - 1)
    for n, fraction in enumerate(down):
        if fraction > 0:
            parts.append(
                format_html(
                    '<rect class="socketsvc-down" x="{}" y="{}" width="{}" height="{}" '
                    'opacity="{}"><title>database down</title></rect>',
                    f"{_x(n, slots) - step / 2:.1f}",
                    TOP,
                    f"{step:.1f}",
                    HEIGHT - TOP - BOTTOM,
                    f"{0.25 + 0.5 * fraction:.2f}",
                )
            )
    for fraction in (0.0, 0.5, 1.0):
        y = _y(top * fraction, top)
        parts.append(
            format_html(
                '<line class="socketsvc-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="socketsvc-axis" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                f"{y:.1f}",
                f"{y:.1f}",
                LEFT - 6,
                f"{y + 4:.1f}",
                fmt(top * fraction),
            )
        )
    for n in (0, slots // 2, slots - 1):
        anchor = "start" if n == 0 else ("end" if n == slots - 1 else "middle")
        parts.append(
            format_html(
                '<text class="socketsvc-axis" x="{}" y="{}" text-anchor="{}">{}</text>',
                f"{_x(n, slots):.1f}",
                HEIGHT - 6,
                anchor,
                time_format(timezone.localtime(times[n]), "H:i"),
            )
        )
    for n, line in enumerate(lines):
        css = line.css or f"socketsvc-line-{n % PALETTE}"
        for points in _segments(line.values, slots, top):
            parts.append(
                format_html(
                    '<polyline class="socketsvc-line {}" points="{}"><title>{}</title></polyline>',
                    css,
                    points,
                    line.name,
                )
            )
    drawn = any(v is not None and v > 0 for line in lines for v in line.values)
    legend = format_html_join(
        "",
        '<li><span class="socketsvc-swatch {}"></span>{}</li>',
        ((line.css or f"socketsvc-line-{n % PALETTE}", line.name) for n, line in enumerate(lines)),
    )
    return format_html(
        '<figure class="socketsvc-chart"><figcaption>{}{}</figcaption>'
        '<svg viewBox="0 0 {} {}" role="img" aria-label="{}" preserveAspectRatio="none">{}</svg>'
        '<ul class="socketsvc-legend">{}</ul></figure>',
        title,
        "" if drawn else format_html(' <span class="socketsvc-empty">({})</span>', empty),
        WIDTH,
        HEIGHT,
        title,
        mark_safe("".join(parts)),  # noqa: S308 (each part built by format_html)
        legend,
    )
