"""LaTeX helpers shared by the report's tables."""

from __future__ import annotations

import re

_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "$": r"\$", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_PATTERN = re.compile("|".join(re.escape(c) for c in _SPECIAL))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, in one pass (so an escape is never escaped again)."""
    return _PATTERN.sub(lambda m: _SPECIAL[m.group()], text)
