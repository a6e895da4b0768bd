"""Exact measurement on the built-in task, where every answer the theory needs can be listed.

The built-in task's expert (``data.builtin_task``) writes, for the prompt ``a+b=``, the right
answer ``str(a+b)`` with probability 1 - eps and ``str(a+b+1)`` otherwise; the strict reward is 1 for
the right answer (the canonical completion: the digits, then ``<|im_end|>``). So one teacher-forced
forward pass over every prompt and its two expert answers gives, with no sampling:

- ``log_right[x]``, ``log_wrong[x]``: log p_theta(answer + <|im_end|> | x) for the two answers;
- the SFT loss of docs/theory.md §1 with the TRUE expert law and uniform prompt weights,
      L(theta) = mean_x [ (1 - eps) (-log_right[x]) + eps (-log_wrong[x]) ]   (``ce``);
- s[x] = p_theta(right answer | x), the probability of the rewarded answer, and its mean, the
  expected strict reward J(theta) (``reward``).

Simplification, stated: the strict reward also accepts the right digits with surrounding white
space; such completions are not listed here, so ``s`` is the mass of the canonical rewarded string.
The sampled evaluation measures that gap (``rl/reward`` against ``exact/reward``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm_check import data as data_mod
from llm_check.logprobs import completion_nll
from llm_check.sharding import to_host


@dataclass(frozen=True)
class ExactSet:
    """Every prompt of the built-in task with its two expert answers, tokenized once."""

    prompts: tuple[str, ...]
    eps: float
    right: tuple  # data.SplitBatch arrays of prompt + right answer: [X, Tp] and [X, M]
    wrong: tuple  # the same for the off-by-one answer


def exact_set(tok, *, max_operand: int, eps: float) -> ExactSet:
    """The X = (max_operand + 1)^2 prompts, in (a, b) order, with both answers encoded."""
    rows_r, rows_w, prompts = [], [], []
    for a in range(max_operand + 1):
        for b in range(max_operand + 1):
            p = f"{a}+{b}="
            prompts.append(p)
            rows_r.append(data_mod.Example(prompt=p, completion=str(a + b), answer=str(a + b)))
            rows_w.append(data_mod.Example(prompt=p, completion=str(a + b + 1), answer=str(a + b)))
    enc = [data_mod.encode_split(tok, rows) for rows in (rows_r, rows_w)]
    arrays = [tuple(jnp.asarray(x) for x in e.arrays()) for e in enc]
    return ExactSet(prompts=tuple(prompts), eps=eps, right=arrays[0], wrong=arrays[1])


def make_answer_logprobs(graphdef, rest):
    """Jitted (params, prompt, pmask, completion, cmask, rows=R) -> [X] log p(completion |
    prompt) per row (``logprobs.completion_nll``, R rows at a time)."""

    @partial(jax.jit, static_argnames="rows")
    def fn(params, prompt, pmask, completion, cmask, *, rows):
        model = nnx.merge(graphdef, params, rest)
        return -completion_nll(model, prompt, pmask, completion, cmask, rows=rows)

    return fn


def measure(answer_logprobs, params, es: ExactSet, rows: int) -> dict:
    """Per-prompt log p of both answers (``rows`` rows at a time), the exact CE (true expert law)
    and the exact reward."""
    lr = to_host(answer_logprobs(params, *es.right, rows=rows)).astype(np.float64)
    lw = to_host(answer_logprobs(params, *es.wrong, rows=rows)).astype(np.float64)
    return summarize(lr, lw, es.eps)


def summarize(log_right: np.ndarray, log_wrong: np.ndarray, eps: float) -> dict:
    """The exact quantities of the module docstring from per-prompt log-probabilities."""
    ce = np.mean((1 - eps) * -log_right + eps * -log_wrong)
    s = np.exp(log_right)
    return {"log_right": log_right, "log_wrong": log_wrong, "s": s,
            "ce": float(ce), "reward": float(np.mean(s))}
