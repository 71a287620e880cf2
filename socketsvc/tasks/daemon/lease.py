"""A daemon's lease on the runs it claimed, and the kernel timer that keeps it honest.

Each task-running process holds a lease: its row in ``socketsvc_worker``,
renewed every ``TASK_HEARTBEAT``, expires ``TASK_LEASE`` after the renewal by
the database's clock. Once it has expired, any other daemon may declare the
process lost and run its tasks again. A process cannot know it was paused
(a GC stall, SIGSTOP, a suspended VM, a long outage), so it keeps its
promise by its own clock, measured from when it *sent* the renewal (the
database's expiry is later still):

* it claims only during the first half of the lease (:meth:`Lease.may_claim`);
* while it has runs in flight, a kernel timer (:class:`KillSwitch`, a POSIX
  timer on ``CLOCK_BOOTTIME`` delivering SIGKILL) is set for three quarters of
  the lease and pushed back at every renewal. A process that could not renew
  in time is killed by the kernel, stopped or not, before anyone may run its
  tasks again; a run never overlaps the run that replaces it. With worker
  processes the master starts a fresh one; alone, the service manager does.

A process whose row was marked stopped meanwhile learns it at its next
renewal: with nothing in flight it registers again under a new id, else it
stops at once. Every write about a run is conditional on the claim it holds
(:mod:`socketsvc.tasks.store`), so nothing it writes late is ever recorded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import threading
import time

import structlog

log = structlog.get_logger(__name__)

# Fractions of the lease, from the renewal's sending: claim before, be killed at.
CLAIM_WITHIN = 0.5
KILLED_AT = 0.75

_CLOCK_BOOTTIME = 7  # counts time suspended, like the wall clock others judge by
_CLOCK_MONOTONIC = 1
_SIGEV_SIGNAL = 0


class _Sigevent(ctypes.Structure):
    _fields_ = [
        ("sigev_value", ctypes.c_void_p),
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("_rest", ctypes.c_int * 12),  # the union padding struct sigevent to 64 bytes
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class KillSwitch:
    """A kernel timer that SIGKILLs this process at a deadline unless moved or disarmed.

    Delivered by the kernel, it works on a process that is stopped or wedged
    (a SIGKILL needs no handler and ends a stopped process too).
    """

    def __init__(self) -> None:
        self._timer = ctypes.c_void_p()
        self._libc: ctypes.CDLL | None = None
        self.available = self._create()

    def _create(self) -> bool:
        for name in (None, ctypes.util.find_library("rt")):
            try:
                libc = ctypes.CDLL(name, use_errno=True)
                create = libc.timer_create
            except (OSError, AttributeError):
                continue
            event = _Sigevent()
            event.sigev_notify = _SIGEV_SIGNAL
            event.sigev_signo = int(signal.SIGKILL)
            for clock in (_CLOCK_BOOTTIME, _CLOCK_MONOTONIC):
                if create(clock, ctypes.byref(event), ctypes.byref(self._timer)) == 0:
                    self._libc = libc
                    return True
        log.warning(
            "task_kill_switch_unavailable",
            hint="a process frozen past TASK_LEASE may finish a run that another daemon "
            "already started again (timer_create is missing)",
        )
        return False

    def arm(self, seconds: float) -> None:
        """Kill this process *seconds* from now (replacing any earlier deadline)."""
        self._set(max(seconds, 0.001))

    def disarm(self) -> None:
        """Cancel the deadline."""
        self._set(0.0)

    def close(self) -> None:
        """Delete the timer (disarmed)."""
        if self._libc is not None:
            self._libc.timer_delete(self._timer)
            self._libc = None

    def _set(self, seconds: float) -> None:
        if self._libc is None:
            return
        value = _Itimerspec()
        value.it_value.tv_sec = int(seconds)
        value.it_value.tv_nsec = int((seconds - int(seconds)) * 1e9)
        self._libc.timer_settime(self._timer, 0, ctypes.byref(value), None)


class Lease:
    """This process's lease, by its monotonic clock (see the module docstring)."""

    def __init__(self, seconds: float, switch: KillSwitch | None = None) -> None:
        self.seconds = seconds
        self.switch = switch if switch is not None else KillSwitch()
        self._lock = threading.Lock()
        self._sent = float("-inf")  # when the last successful renewal was sent
        self._holders = 0  # claims and runs in flight
        self._warned = False

    def renewed(self, sent: float) -> None:
        """A renewal sent at *sent* (time.monotonic()) was recorded."""
        with self._lock:
            self._sent = max(self._sent, sent)
            self._warned = False
            self._arm()

    def revoke(self) -> int:
        """The lease is gone (this daemon was declared lost): no claim may start from now on.

        Returns how many claims and runs held it at that moment.
        """
        with self._lock:
            self._sent = float("-inf")
            return self._holders

    def may_claim(self) -> bool:
        """Return True while a claim made now is safely inside the lease."""
        left = self._sent + self.seconds * CLAIM_WITHIN - time.monotonic()
        if left > 0:
            return True
        if not self._warned and self._sent > float("-inf"):
            self._warned = True
            log.warning(
                "task_lease_not_renewed",
                seconds_since_renewal=round(time.monotonic() - self._sent, 3),
                hint="no task is claimed until the lease is renewed; a process with runs in "
                f"flight is killed {self.seconds * KILLED_AT:g} s after its last renewal",
            )
        return False

    def hold(self) -> bool:
        """Take part of the lease for a claim or a run; False if it cannot be had now."""
        with self._lock:
            if not self.may_claim():
                return False
            self._holders += 1
            if self._holders == 1:
                self._arm()
            return True

    def release(self) -> None:
        """A claim or run is over."""
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                self.switch.disarm()

    @property
    def in_flight(self) -> int:
        """Return how many claims and runs hold the lease."""
        return self._holders

    def _arm(self) -> None:
        if self._holders:
            deadline = self._sent + self.seconds * KILLED_AT
            self.switch.arm(deadline - time.monotonic())
