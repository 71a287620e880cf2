"""What a workflow is made of: steps, chains, groups and chords, and the graph they make.

::

    from socketsvc.tasks import chain, chord, group, step

    chain(export.using(queue_name="exports").with_args("north"), merge, mail_link)
    chord(group(resize.with_args(image) for image in images), rebuild_gallery)

A step is a task with its arguments (``step(task, *args, **kwargs)``, or
``task.with_args(*args, **kwargs)``; a bare task takes none). A step after
another receives what came before as its **first positional argument**: the
previous step's return value in a chain, the list of a group's results (in
member order) after a group. ``.result_as("name")`` passes it as that keyword
argument instead, ``.result_as(None)`` not at all (the step still waits).

Compiling a canvas numbers its steps in the order written and gives each the
*shape* of its input: ``None`` (a first step: nothing), ``{"one": n}`` (step
n's result), ``{"all": [shape, ...]}`` (a list of results, nested as written).
Every step a shape names must succeed before the step starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from socketsvc.tasks.compat import Task
from socketsvc.tasks.workflows import enqueue
from socketsvc.tasks.workflows.shapes import Node, Plan, Shape

if TYPE_CHECKING:
    from socketsvc.tasks.workflows.state import WorkflowResult

# How a step receives its input: prepended to its positional arguments.
FIRST = "first"


@dataclass(frozen=True)
class Step:
    """One task of a workflow, with its own arguments."""

    task: Task[Any, Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    receive: str | None = FIRST

    def result_as(self, name: str | None) -> Step:
        """Pass the input as keyword argument *name* (None: do not pass it; the step still
        waits for what comes before it)."""
        if name is not None and (not name.isidentifier() or name == FIRST):
            raise ValueError(f"result_as() takes a keyword argument's name or None, not {name!r}")
        return replace(self, receive=name)

    def enqueue(self, *, name: str | None = None, on_error: Any = None) -> WorkflowResult:
        """Enqueue this step alone as a workflow."""
        return _enqueue(self, name, on_error)


def step(task: Task[Any, Any], *args: Any, **kwargs: Any) -> Step:
    """Return *task* as a step of a workflow, called with *args* and *kwargs*."""
    if not isinstance(task, Task):
        raise TypeError(f"a workflow step is a task (made with @task), not {type(task).__name__}")
    return Step(task, tuple(args), dict(kwargs))


def _with_args(self: Task[Any, Any], *args: Any, **kwargs: Any) -> Step:
    """Return this task as a workflow step called with *args* and *kwargs*."""
    return step(self, *args, **kwargs)


def install_with_args() -> None:
    """Give Django's Task a ``with_args()`` (a step of a workflow), unless it has one."""
    if not hasattr(Task, "with_args"):
        Task.with_args = _with_args  # type: ignore[attr-defined]


class _Composite:
    parts: tuple[Canvas, ...]

    def enqueue(self, *, name: str | None = None, on_error: Any = None) -> WorkflowResult:
        """Enqueue the workflow: every step's row in one transaction (the caller's, if any).

        *on_error*: a task (or step) run once if a step fails (after its
        retries); it receives ``{"workflow", "step", "task", "error"}`` as its
        input. *name* labels the workflow in the admin (default: its shape).
        """
        return _enqueue(cast("Canvas", self), name, on_error)


class Chain(_Composite):
    """Steps one after another, each receiving the previous one's result."""

    def __init__(self, *parts: Any) -> None:
        self.parts = tuple(as_canvas(part) for part in parts)

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.parts))})"


class Group(_Composite):
    """Steps side by side, each receiving the same input; the result is the list of theirs."""

    def __init__(self, *parts: Any) -> None:
        if len(parts) == 1 and not isinstance(parts[0], (Task, Step, _Composite)):
            parts = tuple(parts[0])  # group(a generator of steps)
        self.parts = tuple(as_canvas(part) for part in parts)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.parts))})"


class Chord(_Composite):
    """A group, then a callback receiving the list of every member's result (member order)."""

    def __init__(self, header: Any, callback: Any) -> None:
        header = header if isinstance(header, Group) else Group(header)
        self.parts = (header, as_canvas(callback))

    def __repr__(self) -> str:
        return f"chord({self.parts[0]!r}, {self.parts[1]!r})"


Canvas = Step | Chain | Group | Chord


def chain(*parts: Any) -> Chain:
    """Return the steps (or workflows) run one after another."""
    return Chain(*parts)


def group(*parts: Any) -> Group:
    """Return the steps (or workflows) run in parallel; ``group(generator)`` works too."""
    return Group(*parts)


def chord(header: Any, callback: Any) -> Chord:
    """Return *header* (a group, or an iterable of steps) followed by *callback*."""
    if not isinstance(header, Group):
        header = Group(*header) if isinstance(header, Iterable) else Group(header)
    return Chord(header, callback)


def as_canvas(part: Any) -> Canvas:
    """Return *part* as a canvas: a bare task becomes a step without arguments."""
    if isinstance(part, (Step, Chain, Group, Chord)):
        return part
    if isinstance(part, Task):
        return Step(part)
    raise TypeError(
        f"a workflow is made of tasks, steps, chain(), group() and chord(), not "
        f"{type(part).__name__}"
    )


def compile_canvas(canvas: Canvas) -> Plan:
    """Number the steps of *canvas* and give each its input's shape."""
    nodes: list[Node] = []

    def walk(part: Canvas, incoming: Shape) -> tuple[Shape, dict[str, Any]]:
        if isinstance(part, Step):
            nodes.append(Node(len(nodes), part, incoming))
            return {"one": len(nodes) - 1}, {"step": len(nodes) - 1}
        if isinstance(part, Group):
            walked = [walk(member, incoming) for member in part.parts]
            shape: Shape = {"all": [out for out, _ in walked]}
            if not walked and incoming is not None:
                # An empty group gives an empty list, but only once what came before it is done.
                shape = {"all": [], "after": incoming}
            return shape, {"group": [tree for _, tree in walked]}
        kind = "chord" if isinstance(part, Chord) else "chain"
        trees = []
        for member in part.parts:
            incoming, tree = walk(member, incoming)
            trees.append(tree)
        return incoming, {kind: trees}

    output, tree = walk(canvas, None)
    if not nodes:
        raise ValueError("a workflow needs at least one step")
    return Plan(nodes, tree, output)


def _enqueue(canvas: Canvas, name: str | None, on_error: Any) -> WorkflowResult:
    handler = as_canvas(on_error) if on_error is not None else None
    if handler is not None and not isinstance(handler, Step):
        raise TypeError("on_error is one task (or step), not a workflow")
    return enqueue.enqueue_plan(
        compile_canvas(canvas), name=name or _label(canvas), on_error=handler
    )


def _label(canvas: Canvas, room: int = 120) -> str:
    """Return a short name for *canvas*: its shape with the tasks' names."""

    def show(part: Canvas) -> str:
        if isinstance(part, Step):
            return part.task.name
        kind = type(part).__name__.lower()
        if isinstance(part, Group) and len(part.parts) > 3:
            return f"{kind}({show(part.parts[0])}, … {len(part.parts)} steps)"
        return f"{kind}({', '.join(show(member) for member in part.parts)})"

    text = show(canvas)
    return text if len(text) <= room else text[: room - 1] + "…"
