"""A workflow drawn as inline SVG: steps as boxes in columns, arrows from what each waits for.

A step's column is its depth (the longest path of steps before it); steps of
one column stand in the order written. Each box is a link to the step's task
page, coloured by its state through the admin's own CSS variables (dark mode
included), with a progress bar while it runs. The page's script changes the
classes, bars and labels in place (``data-step``); without it the drawing is
as of the page's load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from socketsvc.models import TaskRecord, TaskStatus
from socketsvc.tasks.workflows import shapes

_WIDTH, _GAP_X = 204, 56
_HEIGHT, _GAP_Y = 46, 12
# Columns taller than this are drawn compact (a chord of hundreds stays readable).
_COMPACT_AFTER = 24
_COMPACT_HEIGHT, _COMPACT_GAP_Y = 22, 4
_PAD = 8


def step_state(record: TaskRecord) -> str:
    """Return how a step is drawn: waiting, ready, running, successful, failed, cancelled."""
    last = record.errors[-1].get("exception_class_path") if record.errors else None
    if record.status == TaskStatus.FAILED and last == "socketsvc.tasks.Cancelled":
        return "cancelled"
    return str(record.status).lower()


def step_percent(record: TaskRecord) -> int | None:
    """Return 0..100 of a step's progress (100 once it succeeded), None if unknown."""
    if record.status == TaskStatus.SUCCESSFUL:
        return 100
    if record.status != TaskStatus.RUNNING or not record.progress_total:
        return None
    done = record.progress_done or 0
    return max(0, min(100, round(100 * done / record.progress_total)))


def step_live(record: TaskRecord) -> dict[str, Any]:
    """Return what the page changes in place for one step."""
    state = step_state(record)
    percent = step_percent(record)
    label = state if percent is None or state != "running" else f"running {percent}%"
    return {"state": state, "percent": percent, "label": label}


@dataclass
class _Box:
    record: TaskRecord
    column: int
    row: int
    x: int = 0
    y: int = 0


def draw(rows: list[TaskRecord], url_of: Callable[[str], str]) -> SafeString:
    """Return the SVG of a workflow's steps (*rows*, in the order written)."""
    steps = [row for row in rows if (row.flow or {}).get("role") != "on_error"]
    handler = next((row for row in rows if (row.flow or {}).get("role") == "on_error"), None)
    depth: dict[str, int] = {}
    for row in steps:
        before = shapes.refs((row.flow or {}).get("input"))
        depth[row.id] = 1 + max((depth.get(ref, 0) for ref in before), default=-1)
    columns: dict[int, list[TaskRecord]] = {}
    for row in steps:
        columns.setdefault(depth[row.id], []).append(row)
    if handler is not None:
        columns[len(columns)] = [handler]
    tallest = max((len(column) for column in columns.values()), default=1)
    compact = tallest > _COMPACT_AFTER
    height, gap_y = (_COMPACT_HEIGHT, _COMPACT_GAP_Y) if compact else (_HEIGHT, _GAP_Y)
    total_height = tallest * (height + gap_y) - gap_y + 2 * _PAD
    boxes: dict[str, _Box] = {}
    for column, members in columns.items():
        offset = (tallest - len(members)) * (height + gap_y) / 2
        for row_number, record in enumerate(members):
            box = _Box(record, column, row_number)
            box.x = _PAD + column * (_WIDTH + _GAP_X)
            box.y = round(_PAD + offset + row_number * (height + gap_y))
            boxes[record.id] = box
    total_width = len(columns) * (_WIDTH + _GAP_X) - _GAP_X + 2 * _PAD
    edges = []
    for row in steps:
        for ref in shapes.refs((row.flow or {}).get("input")):
            if ref in boxes:
                edges.append(_edge(boxes[ref], boxes[row.id], height))
    nodes = [_node(box, height, compact, url_of(box.record.id)) for box in boxes.values()]
    return format_html(
        '<svg class="socketsvc-graph" role="img" aria-label="workflow graph" '
        'xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" viewBox="0 0 {} {}">'
        '<defs><marker id="socketsvc-arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" class="socketsvc-arrowhead"/></marker></defs>'
        "<g>{}</g><g>{}</g></svg>",
        total_width,
        total_height,
        total_width,
        total_height,
        mark_safe("".join(edges)),  # noqa: S308 - built by format_html below
        mark_safe("".join(nodes)),  # noqa: S308 - built by format_html below
    )


def _edge(start: _Box, end: _Box, height: int) -> str:
    x1, y1 = start.x + _WIDTH, start.y + height / 2
    x2, y2 = end.x - 2, end.y + height / 2
    bend = (x2 - x1) / 2
    return str(
        format_html(
            '<path class="socketsvc-edge" d="M {} {} C {} {}, {} {}, {} {}" '
            'marker-end="url(#socketsvc-arrow)"/>',
            x1,
            y1,
            x1 + bend,
            y1,
            x2 - bend,
            y2,
            x2,
            y2,
        )
    )


def _node(box: _Box, height: int, compact: bool, url: str) -> str:
    record = box.record
    live = step_live(record)
    on_error = (record.flow or {}).get("role") == "on_error"
    name = ("on error: " if on_error else "") + record.task_name
    shown = name if len(name) <= 21 else name[:20] + "…"
    bar_width = _WIDTH - 16
    fill = round(bar_width * (live["percent"] or 0) / 100)
    classes = f"socketsvc-node socketsvc-node-{live['state']}" + (
        " socketsvc-node-handler" if on_error else ""
    )
    label_y = box.y + 15
    details = (
        ""
        if compact
        else str(
            format_html(
                '<text class="socketsvc-node-status" x="{}" y="{}" data-part="label">{}</text>'
                '<rect class="socketsvc-node-track" x="{}" y="{}" width="{}" height="5" rx="2"/>'
                '<rect class="socketsvc-node-fill" x="{}" y="{}" width="{}" height="5" rx="2" '
                'data-width="{}"/>',
                box.x + 8,
                box.y + 29,
                live["label"],
                box.x + 8,
                box.y + 35,
                bar_width,
                box.x + 8,
                box.y + 35,
                fill,
                bar_width,
            )
        )
    )
    return str(
        format_html(
            '<a href="{}" class="socketsvc-node-link"><g class="{}" data-step="{}">'
            "<title>{} ({}): {}</title>"
            '<rect class="socketsvc-node-box" x="{}" y="{}" width="{}" height="{}" rx="6"/>'
            '<text class="socketsvc-node-name" x="{}" y="{}">{} <tspan class="socketsvc-node-id">'
            "{}</tspan></text>{}</g></a>",
            url,
            classes,
            record.id,
            record.task_path,
            record.id[:8],
            live["state"],
            box.x,
            box.y,
            _WIDTH,
            height,
            box.x + 8,
            label_y,
            shown,
            record.id[:6],
            mark_safe(details),  # noqa: S308 - built by format_html above
        )
    )


def legend() -> SafeString:
    """Return the colours' key."""
    states = ["waiting", "ready", "running", "successful", "failed", "cancelled"]
    return format_html(
        '<ul class="socketsvc-legend">{}</ul>',
        format_html_join(
            "",
            '<li><span class="socketsvc-swatch socketsvc-node-{}"></span>{}</li>',
            ((state, state) for state in states),
        ),
    )
