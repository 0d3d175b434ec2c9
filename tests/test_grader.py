"""The grader agrees with a careful human on every hand-made output (tests/grader_cases.py), says when an output
contradicts itself, and reports math-verify timeouts instead of grading them wrong silently."""

from __future__ import annotations

from collections import Counter

import pytest
from grader_cases import CHOICE, MATH

from bench.llm import answers
from bench.llm.answers import grade_choice_output, grade_math_output


def test_the_set_is_large_and_covers_every_class():
    classes = Counter(c[0] for c in MATH) + Counter(f"choice: {c[0]}" for c in CHOICE)
    assert len(MATH) + len(CHOICE) >= 120
    assert min(classes.values()) >= 3, classes
    verdicts = Counter(c[-1] for c in MATH + CHOICE)
    assert verdicts[True] >= 40 and verdicts[False] >= 30  # right and wrong answers in every sense


@pytest.mark.parametrize("cls,output,gold,human", MATH, ids=[f"{c[0]}-{k}" for k, c in enumerate(MATH)])
def test_math_grader_agrees_with_the_human(cls, output, gold, human):
    graded = grade_math_output(output, gold)
    assert graded.correct == human, graded
    if cls == "contradictory" and not human:
        assert graded.status == "contradictory"


@pytest.mark.parametrize("cls,output,options,gold,human", CHOICE, ids=[f"{c[0]}-{k}" for k, c in enumerate(CHOICE)])
def test_choice_grader_agrees_with_the_human(cls, output, options, gold, human):
    graded = grade_choice_output(output, gold, options)
    assert graded.correct == human, graded
    if cls == "contradictory" and not human:
        assert graded.status == "contradictory"
    if cls == "unreadable":
        assert graded.answer is None and graded.status == "unreadable"  # never a default letter


def test_a_math_verify_timeout_is_retried_once_then_reported(monkeypatch):
    monkeypatch.setattr(answers, "MATH_TIMEOUTS", (1, 1))
    graded = grade_math_output("<|im_start|>answer\nAnswer: 9^{9^{9^{9}}}", "9^{9^{9^{8}}}+1")
    assert graded.status == "timeout" and not graded.correct and graded.answer == "9^{9^{9^{9}}}"
    assert grade_math_output("<|im_start|>answer\nAnswer: 12", "12").status == "graded"
