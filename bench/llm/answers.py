"""Answer extraction and grading (pure functions; math-verify does the equivalence, no paid judge).

Where the answer is: the text after the last "<|im_start|>answer" (the paper's protocol); the whole text when the
model never wrote one. What counts as the model's final answer there, in the order a careful reader looks:

- math: the last ``\\boxed{...}`` (also ``\\fbox{}``, ``\\boxed 5`` without braces, boxed number words) and the last
  answer statement — "Answer:" in any case or markdown ("**Final Answer:**"), "the (final) answer is ...", with the
  answer on the same line or, when that line holds none, on a following line; a statement that is a sentence
  ("The area is $12$ square units.") gives its last formula or number. A bare one-line answer section ("42") is
  the answer.
- choice (GPQA): the letter a final statement names ("Answer: C", "ANSWER: C", "Final answer: (C)", "the correct
  answer is **C**", "\\boxed{C}", "Option C"), a bare letter as the whole answer ("C", "(C)", "**C**", "C) 12 m"),
  or — no letter anywhere — the text of exactly one option. A negated letter ("not A", "A is incorrect") is never an
  answer, and nothing is ever defaulted to a letter.

Self-contradiction: when the last boxed answer and the last answer statement disagree (math: not equivalent by
math-verify; choice: different letters), the output is counted WRONG with status "contradictory" — a reader cannot
tell which one the model means; so is a hedge between different answers ("42 or 43", "\\boxed{B} or \\boxed{C}",
"C (or possibly B)"). A write-up that ends in a box ("Answer: There are 3 cases. ... \\boxed{12}") is the box's
answer: a sentence before the last box is a step, not a statement. A negated value ("9, not 8") is not the answer;
boxes joined by "and"/"or" are one answer of several values, matched against a gold of several values ("2, 3");
a union of one-variable inequalities is compared as intervals.

math-verify runs in a worker process of its own under a wall-time limit, whatever thread grades (a bignum such as
9^{9^{9}} holds the GIL, so no in-process limit can stop it): a comparison that runs out of time is retried once
with a longer limit and, if it runs out again, the worker is killed (and restarted for the next item) and the
output is reported with status "timeout" (counted apart, never silently graded wrong without saying so).
"""

from __future__ import annotations

import multiprocessing
import re
import threading
from dataclasses import dataclass

ANSWER_MARK = "<|im_start|>answer"
LETTERS = "ABCD"
MATH_TIMEOUTS = (2, 4)  # wall seconds for math-verify's parse and compare: first try, then the retry


@dataclass(frozen=True)
class Graded:
    answer: str | None  # what was read as the final answer (a letter for choice tasks)
    correct: bool
    status: str  # "graded", "unreadable" (no answer found), "contradictory" or "timeout"


def answer_section(text: str) -> str:
    i = text.rfind(ANSWER_MARK)
    return text if i < 0 else text[i + len(ANSWER_MARK):]


def has_answer_section(text: str) -> bool:
    return ANSWER_MARK in text


# -- reading answers out of text --------------------------------------------------------------------------------------
_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*")
_STATEMENT = re.compile(
    r"(?im)(?:\b(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|option|choice)\s+(?:is|would\s+be|must\s+be)\b\s*:?"
    r"|\b(?:final\s+)?answer\s*(?:\*\*|__)?\s*[:：]"
    r"|^[ \t#*_]*final\s+answer[ \t*_]*$)")  # a "Final Answer" heading: the answer is on a following line
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?")
_INLINE_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
          "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}


def boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every ``\\boxed{...}`` / ``\\fbox{...}`` in order (braces balanced; an unclosed one
    is skipped), and of ``\\boxed 5`` written without braces (the token after it)."""
    found = []
    for m in _BOX_START.finditer(text):
        start = m.end()
        if start < len(text) and text[start] == "{":
            depth = 0
            for i in range(start, len(text)):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    found.append((m.start(), i + 1, text[start + 1:i].strip()))
                    break
        elif bare := re.match(r"[^\s$\\{}]+", text[start:]):
            found.append((m.start(), start + bare.end(), bare.group(0).rstrip(".,")))
    return found


def boxed_contents(text: str) -> list[str]:
    """Every box's content in order (:func:`boxes`)."""
    return [content for _, _, content in boxes(text)]


# the text between two boxes that makes them one answer of several values ("\boxed{2} and \boxed{3}",
# "$x = \boxed{-1}$ or $x = \boxed{4}$"): a list or alternatives, nothing else
_JOINED = re.compile(r"(?i)\s*\$?\s*(?:,|;|and|or|,\s*and|,\s*or|\\quad|\\text\{\s*(?:and|or)\s*\})\s*\$?\s*"
                     r"(?:[a-z]\s*=\s*)?")


def final_box_group(section: str) -> list[str]:
    """The contents of the last box and of the boxes just before it that the text joins to it as a list or
    alternatives ("\\boxed{4} or \\boxed{6}"): one element for a single final box, none without a box."""
    found = boxes(section)
    group = found[-1:]
    for earlier in reversed(found[:-1]):
        if not _JOINED.fullmatch(section[earlier[1]:group[0][0]]):
            break
        group.insert(0, earlier)
    return [content for _, _, content in group]


def number_from_words(text: str) -> str | None:
    """'five' -> '5', 'Twenty-one.' -> '21'; None when the text is not a number written in words (0-99)."""
    words = re.sub(r"[\s\-]+", " ", text.strip().strip(".").lower()).split()
    if len(words) == 1 and words[0] in _WORDS:
        return str(_WORDS[words[0]])
    if 1 <= len(words) <= 2 and words[0] in _TENS and (len(words) == 1 or words[1] in _WORDS and
                                                        0 < _WORDS[words[1]] < 10):
        return str(_TENS[words[0]] + (_WORDS[words[1]] if len(words) == 2 else 0))
    return None


def _prose_words(text: str) -> list[str]:
    """Words (two letters or more) outside formulas and LaTeX commands: the prose around an answer."""
    prose = _INLINE_MATH.sub(" ", text)
    prose = re.sub(r"\\[A-Za-z]+(\{[^}]*\})?", " ", prose)
    return re.findall(r"[A-Za-z]{2,}", prose)


def clean_math(text: str | None) -> str | None:
    """The answer an answer statement or box holds: markdown, math delimiters and trailing punctuation removed; a
    boxed answer inside unwrapped; a sentence reduced to its last formula or number; number words to digits."""
    if text is None:
        return None
    s = text.strip()
    if boxes := boxed_contents(s):
        s = boxes[-1]
    s = re.sub(r"(?<=[\w)\]}])\s*\*\*\s*(?=[\w(\[{-])", "^", s)  # 2**10: a power (Python's), not bold
    s = s.replace("**", "").replace("__", "").strip()  # what is left of ** / __ is markdown
    s = _NEGATED_VALUE.sub(" ", s).strip()  # "9, not 8", "15 rather than 16": the negated value is no answer
    formulas = [next(g for g in m.groups() if g is not None) for m in _INLINE_MATH.finditer(s)]
    numbers = _NUMBER.findall(_INLINE_MATH.sub(" ", s))
    if is_sentence(s):  # a sentence: its last formula or number
        if formulas:
            s = formulas[-1]
        elif numbers:
            s = numbers[-1]
        elif (word := _last_number_word(s)) is not None:
            s = word
        else:
            return None
    s = re.sub(r"^\\\[|\\\]$|^\\\(|\\\)$", "", s.strip()).strip().strip("$").strip()
    s = re.sub(r"[.,;]+$", "", s).strip()
    text_only = re.fullmatch(r"\\text(?:bf)?\{([^{}]*)\}", s)
    if (word := number_from_words(text_only.group(1) if text_only else s)) is not None:
        return word
    s = re.sub(r"^[A-Za-z]\s*=\s*(?=[^=]+$)", "", s)  # "x = 5": the value, whatever math-verify makes of "x ="
    return inequalities_as_intervals(s) or None


_BOUND = r"(-?[\w.\\{}]+)"
_ONE_SIDE = {r"<": "(-\\infty, {b})", r"\\le|\\leq|<=": "(-\\infty, {b}]", r">": "({b}, \\infty)",
             r"\\ge|\\geq|>=": "[{b}, \\infty)"}


def inequalities_as_intervals(text: str) -> str:
    """A union of one-variable inequalities ("x<-1 \\text{ or } x>3") as intervals joined by \\cup, which
    math-verify compares with a gold in interval notation (it does not read "or"); other text unchanged."""
    parts = re.split(r"\s*(?:\\text\{\s*or\s*\}|\\lor|\\vee|\bor\b)\s*", text)
    if len(parts) < 2:
        return text
    intervals, variables = [], set()
    for part in parts:
        for op, shape in _ONE_SIDE.items():
            if m := re.fullmatch(rf"\s*([A-Za-z])\s*(?:{op})\s*{_BOUND}\s*", part):
                variables.add(m.group(1))
                intervals.append(shape.format(b=m.group(2)))
                break
        else:
            return text
    return "\\cup ".join(intervals) if len(variables) == 1 else text


_NEGATED_VALUE = re.compile(r"(?i)[,;]?\s*\(?\b(?:not|rather\s+than|instead\s+of)\s+"
                            r"(?:\$[^$]*\$|-?\d[\d,./]*)\)?")


def is_sentence(text: str) -> bool:
    """Whether ``text`` is prose around a value ("There are 3 cases.") rather than the value itself ("3", "$x+1$")."""
    words = _prose_words(text)
    return len(words) >= 2 or bool(words and (_INLINE_MATH.search(text) or _NUMBER.search(_INLINE_MATH.sub(" ",
                                                                                                      text))))


def _last_number_word(sentence: str) -> str | None:
    tokens = re.findall(r"[A-Za-z]+(?:-[A-Za-z]+)?", sentence)
    for token in reversed(tokens):
        if (n := number_from_words(token)) is not None:
            return n
    return None


@dataclass(frozen=True)
class Statement:
    at: int  # where its marker ends in the answer section
    text: str  # the text the answer was read from: the rest of the marker's line, or a following line
    answer: str  # that answer, cleaned (clean_math)


def statements_of(section: str) -> list[Statement]:
    """Every answer statement of ``section`` with the answer it gives: from the rest of its line, or — when that
    holds none — from the first following non-empty line that does (up to five on)."""
    found = []
    for m in _STATEMENT.finditer(section):
        rest_of_line, _, after = section[m.end():].partition("\n")
        for k, line in enumerate([rest_of_line] + [ln for ln in after.split("\n") if ln.strip()][:5]):
            if k and _STATEMENT.search(line):
                break  # the next statement speaks for itself
            if (answer := clean_math(line)) is not None:
                found.append(Statement(m.end(), line, answer))
                break
    return found


def answer_statements(section: str) -> list[str]:
    """The answer each answer statement of ``section`` gives, cleaned, in order (:func:`statements_of`)."""
    return [st.answer for st in statements_of(section)]


def _final_statement(text: str) -> Statement | None:
    """The answer statement a reader takes as final: the last one, except that a write-up ending in a box ("Answer:
    There are 3 cases. ... so \\boxed{12}") is not a statement of 3 — a sentence before the last box is a step."""
    section = answer_section(text)
    found = boxes(section)
    statements = [st for st in statements_of(section)
                  if not found or st.at > found[-1][0] or not is_sentence(st.text)]
    return statements[-1] if statements else None


def read_math(text: str) -> tuple[str | None, str | None]:
    """(last boxed answer, last answer statement) of the answer section, cleaned; either may be None."""
    section = answer_section(text)
    box_values = [b for b in map(clean_math, boxed_contents(section)) if b is not None]
    final = _final_statement(text)
    statement = final.answer if final else None
    if final is None and has_answer_section(text):
        lines = [ln for ln in section.split("\n") if ln.strip()]
        if len(lines) == 1:  # a bare answer after the answer mark: "42", "$\frac{1}{2}$"
            statement = clean_math(lines[0])
    box = box_values[-1] if box_values else None
    return (box or statement), (statement if box else None)


_VALUE = r"(\$[^$]+\$|-?\d[\d,./]*)"
_ALTERNATIVES = re.compile(rf"(?i)^[\s*_]*(?:either\s+)?{_VALUE}\s*,?\s*(?:or|and)\s+{_VALUE}")


def math_values(text: str, answer: str) -> list[str]:
    """The values the final answer (``answer``, as :func:`read_math` reads it) gives: several when its boxes are one
    list ("\\boxed{2} and \\boxed{3}") or its statement lists or offers several ("4 or 6", "either 4 or 6");
    ``answer`` alone otherwise."""
    section = answer_section(text)
    if boxes(section):
        return [v for v in map(clean_math, final_box_group(section)) if v is not None]
    final = _final_statement(text)
    if final is not None and (m := _ALTERNATIVES.match(final.text.replace("**", ""))):
        return [v for v in map(clean_math, m.groups()) if v is not None]
    return [answer]


# -- grading math ----------------------------------------------------------------------------------------------------
class GradingTimeout(Exception):
    """math-verify ran out of time twice (MATH_TIMEOUTS)."""


def _equivalent(gold: str, predicted: str) -> bool:
    """math-verify equivalence, in the grading worker (no time limit of its own: the caller's wall clock is it)."""
    from math_verify import parse, verify

    try:
        return bool(verify(parse(f"${gold}$", parsing_timeout=None), parse(f"${predicted}$", parsing_timeout=None),
                           timeout_seconds=None))
    except Exception:  # noqa: BLE001 - an answer math-verify cannot read is not equivalent
        return False


def _serve(conn) -> None:
    """The grading worker: answers (gold, predicted) pairs until its pipe closes."""
    import logging

    import math_verify  # noqa: F401 - imported before the first pair, so no pair pays for it

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled": the caller's clock is the limit

    conn.send("ready")
    while True:
        try:
            gold, predicted = conn.recv()
        except EOFError:
            return
        conn.send(_equivalent(gold, predicted))


class _Worker:
    """One spawned process that runs math-verify; a comparison over its wall-time limit kills it (a new one starts
    for the next comparison). Shared by every thread of the process, one comparison at a time."""

    def __init__(self) -> None:
        self.lock, self.proc, self.conn = threading.Lock(), None, None

    def compare(self, gold: str, predicted: str, limit: float) -> bool | None:
        """Equivalence, or None when ``limit`` seconds were not enough."""
        with self.lock:
            if self.proc is None or not self.proc.is_alive():
                self._start()
            self.conn.send((gold, predicted))
            if self.conn.poll(limit):
                return self.conn.recv()
            self.proc.kill()
            self.proc.join()
            self.proc = None
            return None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA or threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), name="bench-grader", daemon=True)
        self.proc.start()
        child.close()
        try:
            ready = self.conn.poll(120) and self.conn.recv() == "ready"
        except EOFError:
            ready = False
        if not ready:
            raise RuntimeError(f"the math grading worker did not start (exit code {self.proc.exitcode}); run the "
                               "grading from a script file or module (spawn re-imports the main module)")


_WORKER = _Worker()


def _verify(gold: str, predicted: str) -> bool:
    """math-verify equivalence under the wall-time limits MATH_TIMEOUTS; raises GradingTimeout when both run out."""
    for limit in MATH_TIMEOUTS:
        if (same := _WORKER.compare(gold, predicted, limit)) is not None:
            return same
    raise GradingTimeout(f"math-verify timed out comparing {predicted!r} with {gold!r} ({MATH_TIMEOUTS} s)")


def _same(a: str, b: str) -> bool:
    return re.sub(r"\s+", "", a) == re.sub(r"\s+", "", b) or _verify(a, b)


def grade_math(predicted: str | None, gold: str) -> bool:
    """math-verify equivalence of two answers given as LaTeX or plain expressions (42, \\frac{1}{2}, 0.5, x+1);
    a timeout raises GradingTimeout."""
    if predicted is None:
        return False
    return _same(predicted, gold)


def gold_values(gold: str) -> list[str]:
    """A gold answer of several values ("2, 3": roots, solutions) as its values; one value otherwise (a tuple
    "(1, 2)" or an interval stays one; "1,000" has no space after its comma)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(gold):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0 and gold[i + 1:i + 2].isspace():
            parts.append(gold[start:i].strip())
            start = i + 1
    return parts + [gold[start:].strip()]


def _values_match(values: list[str], golds: list[str]) -> bool:
    """Each gold value given by exactly one of the values (in any order)."""
    left = list(values)
    for g in golds:
        hit = next((v for v in left if _same(v, g)), None)
        if hit is None:
            return False
        left.remove(hit)
    return not left


def grade_math_output(text: str, gold: str) -> Graded:
    """Grade a whole math output: unreadable, contradictory (boxed vs stated, or a hedge between different values:
    "4 or 6"), timeout or graded. A gold of several values is matched by an answer that gives exactly those."""
    answer, other = read_math(text)
    if answer is None:
        return Graded(None, False, "unreadable")
    try:
        if other is not None and not _same(answer, other):
            return Graded(f"{answer} | {other}", False, "contradictory")
        values, golds = math_values(text, answer), gold_values(gold)
        if len(golds) > 1 and len(values) > 1:
            return Graded(", ".join(values), _values_match(values, golds), "graded")
        if len(values) > 1 and not all(_same(values[0], v) for v in values[1:]):
            return Graded(" | ".join(values), False, "contradictory")  # a hedge: no answer to credit
        return Graded(answer, grade_math(answer, gold), "graded")
    except GradingTimeout:
        return Graded(answer, False, "timeout")


# -- choices (GPQA) --------------------------------------------------------------------------------------------------
_LETTER_AFTER_MARK = re.compile(r"^[\s:*_(\[{$]*(?:\\text(?:bf)?\{\s*)?(?:option|choice)?\s*[(\[]?\s*"
                                r"(?:\\text(?:bf)?\{\s*)?([A-D])(?![A-Za-z0-9])", re.I)
_NEGATED = re.compile(r"(?i)\b(?:not|isn't|is\s+not|cannot\s+be|can't\s+be|rule\s+out|excluding|except)\s*"
                      r"(?:option\s*)?\(?([A-D])\b|\b\(?([A-D])\)?\s+(?:is|would\s+be)\s+(?:wrong|incorrect|false)")


def letter_of(text: str | None, letters: str = LETTERS) -> str | None:
    """The option letter a short answer names on its own ("B", "(B)", "**B**", "B) 12 m", "\\text{B}", "option b",
    "\\boxed{C}"); None if it names no letter or several."""
    if text is None:
        return None
    s = text.strip()
    if boxes := boxed_contents(s):
        s = boxes[-1]
    s = re.sub(r"\\text(?:bf)?\{([^}]*)\}", r"\1", s).replace("**", "").replace("__", "").strip().strip("$").strip()
    m = re.fullmatch(rf"(?:(?:option|choice)\s*)?\(?([{letters}])\)?(?:\s*[.):\-]\s*.*)?", s, flags=re.S | re.I)
    if m and (m.group(1).isupper() or len(s) <= 10):  # "b" alone is a letter; "a lot of ..." is not
        return m.group(1).upper()
    return None


def _statement_letter(rest: str) -> str | None:
    """The letter right after an answer statement's marker ("... answer is (C)"), unless it is negated."""
    if re.match(r"(?i)\s*(?:not|n't)\b", rest):
        return None
    m = _LETTER_AFTER_MARK.match(rest)
    if m is None:
        return None
    letter, tail = m.group(1), rest[m.end():]
    if letter.islower() and not re.match(r"\s*(?:[.)\]]|$)", tail):  # "the answer is a bit ..." is no letter
        return None
    return letter.upper()


def _plain(text: str) -> str:
    """LaTeX's spacing and text macros as plain text: ``12\\,\\mathrm{m/s}`` -> ``12 m/s``."""
    text = re.sub(r"\\(?:mathrm|text|textbf|mathbf|operatorname)\{([^{}]*)\}", r"\1", text)
    return re.sub(r"\\[,;:! ]|~", " ", text)


def _option_of_text(text: str, options: tuple[str, ...]) -> str | None:
    """The letter of the one option whose text the answer gives (exactly, else as a whole phrase); None otherwise."""
    def norm(s: str) -> str:
        return re.sub(r"\s+", " ", _plain(s).replace("$", "").replace("**", "")).strip().strip(".").strip().lower()

    said = norm(text)
    if not said or not options:
        return None
    exact = [k for k, o in enumerate(options) if norm(o) == said]
    if len(exact) == 1:
        return LETTERS[exact[0]]
    within = [k for k, o in enumerate(options)
              if norm(o) and re.search(rf"(?<![\w.]){re.escape(norm(o))}(?![\w.])", said)]
    return LETTERS[within[0]] if len(within) == 1 else None


_LETTER_HEDGE = re.compile(r"(?i)(?<![A-Za-z])\(?([A-D])\)?\s*\(?\s*(?:or|and/or)\s+(?:possibly\s+|maybe\s+|"
                           r"perhaps\s+)?\(?([A-D])(?![A-Za-z])")


def _statement_rest(section: str, end: int) -> str:
    """What an answer statement says: the rest of its line, or — when that is empty or only markdown ("Answer:\\nC",
    "**Answer:**\\n**C**") — the next non-empty line."""
    rest, _, after = section[end:].partition("\n")
    if re.sub(r"[\s*_:#]", "", rest):
        return rest
    return next((ln for ln in after.split("\n") if ln.strip()), "")


def read_choice(text: str, options: tuple[str, ...] = ()) -> tuple[str | None, str | None]:
    """(letter of the last box, letter of the last answer statement) of a multiple-choice output; when neither
    names a letter, the first is what a bare answer or an option's text (also boxed) names. A hedge between two
    letters ("B or C", "\\boxed{B} or \\boxed{C}", "C (or possibly B)") gives both, so it is never credited."""
    section = answer_section(text)
    negated = {a or b for a, b in _NEGATED.findall(section)}
    group = [x for x in map(letter_of, final_box_group(section)) if x is not None and x not in negated]
    if len(set(group)) > 1:
        return group[-1], group[0]
    box_letters = [x for x in map(letter_of, boxed_contents(section)) if x is not None and x not in negated]
    statements = [_statement_rest(section, m.end()) for m in _STATEMENT.finditer(section)]
    stated = [x for x in map(_statement_letter, statements) if x is not None]
    box, statement = (box_letters[-1] if box_letters else None), (stated[-1] if stated else None)
    if statement and (hedge := _LETTER_HEDGE.search(statements[-1])) and hedge.group(1).upper() != \
            hedge.group(2).upper():
        return hedge.group(1).upper(), hedge.group(2).upper()
    if box or statement:
        return (box or statement), (statement if box else None)
    lines = [ln for ln in section.split("\n") if ln.strip()]
    if has_answer_section(text) and len(lines) <= 2 and (bare := letter_of(lines[0] if lines else None)):
        return bare, None
    said_last = [s for s in statements if s.strip()] or (lines[-1:] if has_answer_section(text) else [])
    for said in reversed(boxed_contents(section)[-1:] + said_last):
        if (letter := _option_of_text(said, options)) is not None:
            return letter, None
    return None, None


def grade_choice_output(text: str, gold: str, options: tuple[str, ...] = ()) -> Graded:
    letter, other = read_choice(text, options)
    if letter is None:
        return Graded(None, False, "unreadable")
    if other is not None and other != letter:
        return Graded(f"{letter} | {other}", False, "contradictory")
    return Graded(letter, letter == gold, "graded")
