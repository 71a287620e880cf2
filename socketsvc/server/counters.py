"""The loop's request counters: the router and the connection table count, health reports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    """Request counters for ``rpc.status``; only the loop thread writes them."""

    requests: int = 0
    notifications: int = 0
    errors: int = 0
    dropped_replies: int = 0
