"""The entries of a task's ``errors``: what each attempt (or a cancel, an expiry) ended with."""

from __future__ import annotations

_MAX_TRACEBACK = 64 * 1024


def error_entry(exception_class_path: str, traceback: str) -> dict[str, str]:
    """Return one entry of a task's ``errors`` (the framework's TaskError fields).

    A NUL becomes ``\\x00`` (PostgreSQL's jsonb refuses it) and a traceback
    longer than ``_MAX_TRACEBACK`` characters keeps its start and its end.
    """
    text = traceback.replace("\x00", "\\x00")
    if len(text) > _MAX_TRACEBACK:
        half = _MAX_TRACEBACK // 2
        text = f"{text[:half]}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:]}"
    return {"exception_class_path": exception_class_path, "traceback": text}


def cancelled_entry(when: str) -> dict[str, str]:
    """Return the error entry of a cancel that took effect *when* (e.g. "before it started")."""
    return error_entry(
        "socketsvc.tasks.Cancelled", f"socketsvc.tasks.Cancelled: cancelled {when}\n"
    )
