"""LaTeX helpers shared by the report's tables."""

from __future__ import annotations

import re

# LaTeX's specials, and what the default OT1 font would print as something else: < and > (as ¡ and ¿), -- (an en
# dash, in "--mix-configs"), and the few symbols the report's text uses.
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "#": r"\#", "_": r"\_", "$": r"\$", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "--": "-{}-", "±": r"$\pm$", "×": r"$\times$", "†": r"$^\dagger$",
            "‡": r"$^\ddagger$", "–": "--"}
_PATTERN = re.compile("|".join(re.escape(c) for c in _SPECIAL))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, in one pass (so an escape is never escaped again)."""
    return _PATTERN.sub(lambda m: _SPECIAL[m.group()], text)
