"""Sphinx configuration of the socketsvc documentation: MyST Markdown sources in docs/.

Build it with ``make docs`` (into ``docs/_build/html``; warnings are errors).
"""

import re
from pathlib import Path

_INIT = Path(__file__).resolve().parent.parent / "socketsvc" / "__init__.py"
_VERSION = re.search(r'^__version__ = "([^"]+)"', _INIT.read_text(), re.MULTILINE)

project = "socketsvc"
release = _VERSION.group(1) if _VERSION else ""
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Links like [Worker processes](deploy.md#worker-processes): anchors for
# headings down to ###, spelled as GitHub spells them.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"socketsvc {release}"
html_show_copyright = False
