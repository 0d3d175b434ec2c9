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


ADVERSARIAL = [r"\boxed{9^{9^{9}}}", r"\boxed{9^{9^{9^{9}}}}", r"\boxed{(10^{100})!}", r"\boxed{2^{2^{100}}}"]


@pytest.mark.parametrize("in_thread", [False, True])
def test_an_adversarial_answer_is_graded_within_ten_seconds_in_any_thread(in_thread):
    """A bignum holds the GIL, so only a worker process under a wall clock bounds it: each of these answers comes
    back as "timeout" in under 10 s (2 s, then 4 s, plus the worker's restart), from the main thread or another."""
    import threading
    import time

    def grade(answer, out):
        t0 = time.perf_counter()
        out.append((grade_math_output(f"<|im_start|>answer\n{answer}", "12"), time.perf_counter() - t0))

    grade("12", [])  # the worker started (an import of math-verify): not part of any answer's time
    for answer in ADVERSARIAL:
        out = []
        if in_thread:
            worker = threading.Thread(target=grade, args=(answer, out))
            worker.start()
            worker.join(30)
            assert not worker.is_alive()
        else:
            grade(answer, out)
        (graded, seconds), = out
        assert graded.status == "timeout" and not graded.correct and seconds < 10, (answer, graded, seconds)
    assert grade_math_output("<|im_start|>answer\nAnswer: 12", "12").correct  # and grading goes on


def test_a_python_power_is_a_power_and_bold_is_markdown():
    assert grade_math_output("<|im_start|>answer\nAnswer: 2**10", "1024").correct  # not 210
    assert grade_math_output("<|im_start|>answer\nAnswer: 2 ** 10", "1024").correct
    assert not grade_math_output("<|im_start|>answer\nAnswer: 2**10", "210").correct
    assert grade_math_output("<|im_start|>answer\n**Answer:** **42**", "42").correct
    assert grade_math_output("<|im_start|>answer\nThe answer is **7**.", "7").correct
