"""A workflow's graph as data: its steps in order, and the shape of each step's input.

A shape is ``None`` (nothing: a first step), ``{"one": step}`` (that step's
result) or ``{"all": [shape, ...]}`` (a list, nested as written); an empty
group after other steps is ``{"all": [], "after": shape}``: an empty list, once
the steps *after* names succeeded. Compiled, a step is named by its number;
stored, by its task id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Shape = dict[str, Any] | None


@dataclass
class Node:
    """One step as compiled: its number, the step (a canvas Step), its input's shape."""

    index: int
    step: Any
    input: Shape


@dataclass
class Plan:
    """A compiled canvas: the steps in order, the tree as written, the output's shape."""

    nodes: list[Node]
    tree: dict[str, Any]
    output: Shape


def refs(shape: Shape) -> list[Any]:
    """Return the steps a shape names, in order, each once."""
    found: list[Any] = []

    def visit(part: Shape) -> None:
        if part is None:
            return
        if "one" in part:
            if part["one"] not in found:
                found.append(part["one"])
            return
        for inner in part["all"]:
            visit(inner)
        visit(part.get("after"))

    visit(shape)
    return found


def renamed(shape: Shape, names: dict[Any, Any]) -> Shape:
    """Return *shape* with the steps it names replaced by ``names[step]``."""
    if shape is None:
        return None
    if "one" in shape:
        return {"one": names[shape["one"]]}
    found: dict[str, Any] = {"all": [renamed(inner, names) for inner in shape["all"]]}
    if shape.get("after") is not None:
        found["after"] = renamed(shape["after"], names)
    return found


def evaluate(shape: Shape, results: dict[Any, Any]) -> Any:
    """Return the value *shape* stands for, given each named step's result."""
    if shape is None:
        return None
    if "one" in shape:
        return results[shape["one"]]
    return [evaluate(inner, results) for inner in shape["all"]]


def given(receive: str | None, value: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Return *args* and *kwargs* with the input *value* passed as *receive* says."""
    if receive is None:
        return args, kwargs
    if receive == "first":
        return [value, *args], kwargs
    return args, {**kwargs, receive: value}
