"""What clients do while the faults fall: enqueue tasks of every kind, cancel some, call.

Runs in the campaign's own process, which is a Django process of the test project on the
campaign's database (as a web host would be); its wake-ups go to daemon ``a``'s socket.
Everything it does is written down with the time: which task of which kind was enqueued,
which was cancelled when, and what each call was answered.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# Kinds of task, and how often each is picked. A long task is likely to be in flight when
# its daemon is frozen or killed, so that its run is taken over while it still runs.
# The controlled kinds (tests/testapp/campaign.py) share a few keys, so that their tasks
# meet; a timed task that sleeps has its worker process replaced, so it is rare.
KINDS = {
    "quick": 4,
    "slow": 3,
    "long": 1,
    "failing": 1,
    "retried": 2,
    "cancelled": 2,
    "unique": 2,
    "serial": 2,
    "limited": 2,
    "timed": 0.3,
    "workflow": 1,
}
KEYS = ("k0", "k1", "k2")


@dataclass
class Enqueued:
    task_id: str
    kind: str
    at: float
    took: float  # seconds enqueue() took (its wake-up included)


@dataclass
class Flow:
    workflow_id: str
    shape: str
    at: float


@dataclass
class Cancel:
    task_id: str
    at: float
    status_after: str


@dataclass
class Call:
    token: str
    daemon: str
    outcome: str  # "ok", or the exception's class name
    answer: Any = None


@dataclass
class Record:
    """What the clients did."""

    enqueued: list[Enqueued] = field(default_factory=list)
    enqueue_failures: int = 0
    cancels: list[Cancel] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    workflows: list[Flow] = field(default_factory=list)


class Workload:
    """Producer, canceller and caller threads (see the module docstring)."""

    def __init__(self, seed: int, sockets: dict[str, str], producers: int = 3) -> None:
        self.seed = seed
        self.sockets = sockets
        self.record = Record()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._to_cancel: list[tuple[float, str]] = []
        self._threads = [
            *(threading.Thread(target=self._produce, args=(n,)) for n in range(producers)),
            threading.Thread(target=self._cancel),
            *(threading.Thread(target=self._call, args=(n,)) for n in range(2)),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    # -- producers --------------------------------------------------------------------

    def _produce(self, n: int) -> None:
        from django.db import connections

        from socketsvc.db.lifecycle import request_scope
        from tests.testapp import campaign

        rng = random.Random(self.seed * 100 + n)
        kinds, weights = zip(*KINDS.items(), strict=True)
        try:
            while not self._stop.wait(rng.uniform(0.05, 0.11)):
                kind = rng.choices(kinds, weights)[0]
                began = time.time()
                try:
                    # Each enqueue in Django's request cycle, as a web request's would be.
                    with request_scope():
                        if kind == "workflow":
                            self._enqueue_workflow(campaign, rng)
                            continue
                        result = self._enqueue(campaign, kind, rng)
                except Exception:
                    with self._lock:
                        self.record.enqueue_failures += 1
                    continue
                now = time.time()
                with self._lock:
                    self.record.enqueued.append(Enqueued(result.id, kind, now, now - began))
                    if kind == "cancelled":
                        # Cancelled before it starts, or while it runs, or after it ended.
                        self._to_cancel.append((now + rng.uniform(0.0, 1.5), result.id))
        finally:
            connections.close_all()

    def _enqueue_workflow(self, campaign: Any, rng: random.Random) -> None:
        """A chain, a chord or a chain of groups; one in four has a failing step and one in
        two an on_error step; one in eight is cancelled a little later."""
        from socketsvc.tasks import chain, chord, group, step

        def one(first: bool = False) -> Any:
            seconds = round(rng.uniform(0.0, 0.3), 2)
            return (
                step(campaign.flow_step, None, seconds)
                if first
                else step(campaign.flow_step, seconds)
            )

        shape = rng.choice(("chain", "chord", "groups"))
        if shape == "chain":
            parts = [one(True), *(one() for _ in range(rng.randint(1, 3)))]
        elif shape == "chord":
            members = [one(True) for _ in range(rng.randint(2, 12))]
            parts = [chord(group(*members), step(campaign.flow_join))]
        else:
            parts = [
                group(*(one(True) for _ in range(rng.randint(2, 4)))),
                step(campaign.flow_join),
                group(*(one() for _ in range(rng.randint(1, 3)))),
            ]
        if rng.random() < 0.25:
            parts.append(step(campaign.flow_failing, round(rng.uniform(0.0, 0.2), 2)))
            parts.append(one())
        handler = step(campaign.flow_on_error) if rng.random() < 0.5 else None
        flow = chain(*parts).enqueue(name=shape, on_error=handler)
        now = time.time()
        with self._lock:
            self.record.workflows.append(Flow(flow.id, shape, now))
            if rng.random() < 0.125:
                self._to_cancel.append((now + rng.uniform(0.0, 1.5), f"workflow:{flow.id}"))

    @staticmethod
    def _enqueue(campaign: Any, kind: str, rng: random.Random) -> Any:
        if kind == "quick":
            return campaign.quick.enqueue()
        if kind in ("slow", "cancelled"):
            return campaign.slow.enqueue(round(rng.uniform(0.1, 0.8), 2))
        if kind == "long":
            return campaign.slow.enqueue(round(rng.uniform(2.0, 5.0), 2))
        if kind == "failing":
            return campaign.failing.enqueue(round(rng.uniform(0.0, 0.3), 2))
        if kind == "unique":
            return campaign.unique.enqueue(rng.choice(KEYS), round(rng.uniform(0.1, 0.6), 2))
        if kind == "serial":
            return campaign.serial.enqueue(rng.choice(KEYS), round(rng.uniform(0.05, 0.3), 2))
        if kind == "limited":
            return campaign.limited.enqueue(round(rng.uniform(0.1, 0.4), 2))
        if kind == "timed":
            return campaign.timed.enqueue("sleep" if rng.random() < 0.2 else "busy")
        return campaign.retried.enqueue(rng.randint(0, 3))

    # -- the canceller ----------------------------------------------------------------

    def _cancel(self) -> None:
        from django.db import connections

        from socketsvc.db.lifecycle import request_scope
        from socketsvc.tasks import cancel, cancel_workflow

        try:
            while not self._stop.wait(0.02):
                now = time.time()
                with self._lock:
                    due = [item for item in self._to_cancel if item[0] <= now]
                    self._to_cancel = [item for item in self._to_cancel if item[0] > now]
                for _, task_id in due:
                    if task_id.startswith("workflow:"):
                        try:
                            with request_scope():
                                cancel_workflow(task_id.removeprefix("workflow:"))
                        except Exception:
                            pass  # the database is down: this cancel never happened
                        continue
                    try:
                        with request_scope():
                            result = cancel(task_id)
                    except Exception:
                        continue  # the database is down: this cancel never happened
                    with self._lock:
                        self.record.cancels.append(Cancel(task_id, now, str(result.status)))
        finally:
            connections.close_all()

    # -- callers ----------------------------------------------------------------------

    def _call(self, n: int) -> None:
        from socketsvc.client import call_with, close_connections

        rng = random.Random(self.seed * 1000 + n)
        names = sorted(self.sockets)
        try:
            while not self._stop.wait(rng.uniform(0.0, 0.01)):
                name = rng.choice(names)
                token = uuid.uuid4().hex
                try:
                    answer = call_with(
                        "testapp.campaign_call",
                        {"token": token},
                        socket=self.sockets[name],
                        timeout=15,
                    )
                    call = Call(token, name, "ok", answer)
                except Exception as exc:
                    call = Call(token, name, type(exc).__name__)
                with self._lock:
                    self.record.calls.append(call)
        finally:
            close_connections()
