"""Answer extraction and grading (pure functions; math-verify does the equivalence, no paid judge).

Extraction follows the paper's protocol: take the text after the last "<|im_start|>answer" (the whole text if the
model never wrote one), then the content of its last \\boxed{...}, else what follows its last "Answer:".
"""

from __future__ import annotations

import re
import threading

ANSWER_MARK = "<|im_start|>answer"
LETTERS = "ABCD"


def answer_section(text: str) -> str:
    i = text.rfind(ANSWER_MARK)
    return text if i < 0 else text[i + len(ANSWER_MARK):]


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none or it is unclosed."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def extract_answer(text: str) -> str | None:
    section = answer_section(text)
    boxed = last_boxed(section)
    if boxed is not None:
        return boxed
    hits = list(re.finditer(r"Answer\s*:", section))
    if not hits:
        return None
    rest = section[hits[-1].end():].strip().split("\n")[0].strip()
    rest = rest.strip("$ ").rstrip(".").strip()
    return rest or None


def grade_math(predicted: str | None, gold: str) -> bool:
    """math-verify equivalence of two answers given as LaTeX or plain expressions (42, \\frac{1}{2}, 0.5, x+1)."""
    if predicted is None:
        return False
    from math_verify import parse, verify

    # math-verify's timeouts use signal.alarm, which only the main thread may set.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        gold_expr = parse(f"${gold}$", parsing_timeout=timeout)
        return bool(verify(gold_expr, parse(f"${predicted}$", parsing_timeout=timeout), timeout_seconds=timeout))
    except Exception:  # an unparsable answer is a wrong answer
        return False


def extract_choice(predicted: str | None, letters: str = LETTERS) -> str | None:
    """The option letter of an extracted answer ("B", "(B)", "B) text", "\\text{B}", "option B"); None if it names
    no letter or several: an unreadable answer is graded wrong, never defaulted to A."""
    if predicted is None:
        return None
    s = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", predicted).strip().strip("$*").strip()
    m = re.fullmatch(rf"\(?([{letters}])\)?(?:[.):]\s*.*)?", s, flags=re.S)
    if m or (len(s) <= 3 and (m := re.fullmatch(rf"\(?([{letters.lower()}])\)?\.?", s))):
        return m.group(1).upper()
    if m := re.fullmatch(rf"(?:option|choice)\s*\(?([{letters}])\)?\.?", s, flags=re.I):
        return m.group(1).upper()
    found = set(re.findall(rf"\b([{letters}])\b", s))
    return found.pop() if len(found) == 1 else None
