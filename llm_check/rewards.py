"""Rewards: plain callables ``(prompts, completions, **columns) -> list[float]`` (TRL's signature).

Per task, two rewards and one diagnostic (docs/theory.md §7: "report both the strict and the robust
reward"; docs/qwen3.md: "report correctness and format compliance separately"):

- ``strict_reward`` (the training reward): 1 iff the whole completion, stripped of surrounding
  whitespace, is exactly the gold answer. Anything else (extra words, a second answer) earns 0.
- ``robust_reward`` (for evaluation): 1 iff the LAST answer-looking span in the output (the task's
  ``answer_pattern``) equals the gold answer, whatever surrounds it.
- ``format_reward``: 1 iff the completion is exactly one answer-looking span, right or wrong.

So strict = format AND correct. Completions are the decoded text before the end-of-turn token.
The task's answer pattern is bound with ``functools.partial`` (``task_rewards``).
"""

from __future__ import annotations

import re
from functools import partial


def _check(prompts, completions, answer):
    if len(completions) != len(answer) or (prompts is not None and len(prompts) != len(completions)):
        raise ValueError(f"reward columns disagree in length: {len(prompts or [])} prompts, "
                         f"{len(completions)} completions, {len(answer)} answers")


def strict_reward(prompts, completions, *, answer, answer_pattern, **_) -> list[float]:
    """1.0 iff the completion is exactly the answer (surrounding whitespace aside)."""
    _check(prompts, completions, answer)
    return [float(re.fullmatch(answer_pattern, c.strip()) is not None and c.strip() == a.strip())
            for c, a in zip(completions, answer)]


def robust_reward(prompts, completions, *, answer, answer_pattern, **_) -> list[float]:
    """1.0 iff the last match of the answer pattern in the output is the answer."""
    _check(prompts, completions, answer)
    out = []
    for c, a in zip(completions, answer):
        found = re.findall(answer_pattern, c)
        out.append(float(bool(found) and found[-1].strip() == a.strip()))
    return out


def format_reward(prompts, completions, *, answer_pattern, **_) -> list[float]:
    """1.0 iff the completion is one answer-looking span and nothing else (right or wrong)."""
    return [float(re.fullmatch(answer_pattern, c.strip()) is not None) for c in completions]


def task_rewards(answer_pattern: str):
    """The three callables with the task's answer pattern bound: (strict, robust, format)."""
    re.compile(answer_pattern)
    return (partial(strict_reward, answer_pattern=answer_pattern),
            partial(robust_reward, answer_pattern=answer_pattern),
            partial(format_reward, answer_pattern=answer_pattern))
