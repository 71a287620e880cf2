"""A generated section of a documentation page, between its markers, replaced in place."""

from __future__ import annotations

from pathlib import Path


def put_section(page: Path, text: str, begin: str, end: str, title: str) -> None:
    """Put *text* (which starts with *begin* and ends with *end*) into *page*, replacing the
    section between those markers, or at the end; a new page starts with *title*."""
    old = page.read_text() if page.exists() else f"# {title}\n"
    if begin in old and end in old:
        head, _, rest = old.partition(begin)
        page.write_text(head + text + rest.partition(end)[2])
    else:
        page.write_text(f"{old.rstrip()}\n\n{text}\n")
