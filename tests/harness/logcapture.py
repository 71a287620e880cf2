"""A project's own logging handler, as a test sees it: every record it gets, as a JSON line."""

from __future__ import annotations

import json
import logging


class JsonLinesHandler(logging.Handler):
    """Append one JSON object per record to *path* (a stand-in for mail_admins or Sentry)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        entry = {
            "logger": record.name,
            "level": record.levelname,
            "message": record.getMessage(),
            "exc_type": record.exc_info[0].__name__
            if record.exc_info and record.exc_info[0]
            else None,
            "request_id": getattr(record, "request_id", None),
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(entry) + "\n")
