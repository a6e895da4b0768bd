"""llm_check.rewards: strict (training) vs robust (evaluation) rewards, format compliance."""

from __future__ import annotations

import pytest

from llm_check.data import COLA_LABELS, Example, answers_pattern, builtin_task
from llm_check.rewards import task_rewards

COLA = r"\b(?:unacceptable|acceptable)\b"


def _pattern(answers) -> str:
    """``answers_pattern`` of a task whose rows have these answers."""
    return answers_pattern([Example(prompt="", completion=a, answer=a) for a in answers])


def test_builtin_strict_robust_and_format():
    strict, robust, fmt = task_rewards(r"\d+")
    comps = ["7", " 7\n", "The answer is 7", "7 or 8", "8", "17", "", "seven"]
    ans = ["7"] * len(comps)
    assert strict(None, comps, answer=ans) == [1, 1, 0, 0, 0, 0, 0, 0]
    assert robust(None, comps, answer=ans) == [1, 1, 1, 0, 0, 0, 0, 0]
    assert fmt(None, comps, answer=ans) == [1, 1, 0, 0, 1, 1, 0, 0]


def test_strict_is_format_and_correct():
    strict, robust, fmt = task_rewards(r"\d+")
    task = builtin_task(seed=0, eps=0.3, n_train=200)
    comps = [ex.completion for ex in task.train] + ["x " + ex.answer for ex in task.train]
    ans = [ex.answer for ex in task.train] * 2
    s, r, f = (fn(None, comps, answer=ans) for fn in (strict, robust, fmt))
    assert s == [float(a and b) for a, b in zip(f, r)]


def test_cola_robust_takes_the_last_label():
    strict, robust, fmt = task_rewards(COLA)
    comps = ["acceptable", "unacceptable", "Label: acceptable",
             "acceptable... no, unacceptable", "Acceptable"]
    ans = ["acceptable", "acceptable", "acceptable", "unacceptable", "acceptable"]
    assert strict(None, comps, answer=ans) == [1, 0, 0, 0, 0]
    assert robust(None, comps, answer=ans) == [1, 0, 1, 1, 0]
    assert fmt(None, comps, answer=ans) == [1, 1, 0, 0, 0]


def test_answers_pattern_prefers_the_longest_label():
    pat = _pattern(COLA_LABELS)
    _, robust, _ = task_rewards(pat)
    assert robust(None, ["it is unacceptable"], answer=["unacceptable"]) == [1.0]
    assert robust(None, ["it is unacceptable"], answer=["acceptable"]) == [0.0]


def test_answers_pattern_never_matches_inside_a_longer_number_or_word():
    strict, robust, fmt = task_rewards(_pattern(("2", "3", "7", "yes")))
    comps = ["I count 32", "it is 2", "2.", "7 or 23", "yesterday", "yes, 3", " 3 ",
             "2.5", "-2", "2,000", "1/2", "(2)"]
    ans = ["2", "2", "2", "7", "yes", "3", "3", "2", "2", "2", "2", "2"]
    assert robust(None, comps, answer=ans) == [0, 1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 1]
    assert strict(None, comps, answer=ans) == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert fmt(None, comps, answer=ans) == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]


def test_with_many_answers_the_last_line_stands_in():
    """Over 64 distinct answers: an answer of several words still earns both rewards."""
    strict, robust, fmt = task_rewards(_pattern(f"New York {i}" for i in range(65)))
    comps = ["New York 5", " New York 5\n", "I think\nNew York 5\n", "New York 5\nor 6", "New York 6"]
    ans = ["New York 5"] * len(comps)
    assert strict(None, comps, answer=ans) == [1, 1, 0, 0, 0]
    assert robust(None, comps, answer=ans) == [1, 1, 1, 0, 0]
    assert fmt(None, comps, answer=ans) == [1, 1, 0, 0, 1]


def test_with_many_one_word_answers_the_last_token_stands_in():
    """Over 64 distinct one-word answers (numbers): the robust reward reads the last token."""
    strict, robust, fmt = task_rewards(_pattern(str(i) for i in range(100)))
    comps = ["42", "The answer is 42", "42 or 43", "The answer is\n42"]
    ans = ["42"] * len(comps)
    assert strict(None, comps, answer=ans) == [1, 0, 0, 0]
    assert robust(None, comps, answer=ans) == [1, 1, 0, 1]
    assert fmt(None, comps, answer=ans) == [1, 0, 0, 0]


def test_length_mismatch_is_an_error():
    strict, _, _ = task_rewards(r"\d+")
    with pytest.raises(ValueError, match="disagree"):
        strict(["p"], ["1", "2"], answer=["1", "2"])
