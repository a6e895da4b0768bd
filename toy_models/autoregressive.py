"""Autoregressive tabular policy: the toy of an LLM's token factorization (docs/theory.md §1).

A response is a sequence y = (y_1, ..., y_H) over a vocabulary of V tokens, and

    p(y|x) = Π_t softmax(θ[x, prefix(y_<t)])_{y_t},

with one free logit vector per (prompt, prefix). There are P = Σ_{t<H} V^t prefixes and N = V^H
sequences, small enough to enumerate exactly. Parameters are ``logits[X, P, V]``.

The map token logits -> sequence distribution is onto the interior of the simplex over the N
sequences, so every sequence-level statement of docs/theory.md holds for this policy:
``token_logits_for`` inverts it (conditional probabilities of each prefix), and the tests check
that sequence-level closed forms computed from the token-level policy agree with the tabular ones.

Simplification: every response has exactly H tokens (no end-of-sequence token); a variable length
is the same construction with an absorbing end token.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class SequenceTable(NamedTuple):
    """Integer tables for exact enumeration: ``tokens[N, H]`` and ``prefix_index[N, H]`` (the row
    of the logit table used to emit token t of sequence n)."""

    tokens: np.ndarray
    prefix_index: np.ndarray
    vocab: int
    horizon: int

    @property
    def num_prefixes(self) -> int:
        return sum(self.vocab**t for t in range(self.horizon))

    @property
    def num_sequences(self) -> int:
        return self.vocab**self.horizon


def sequence_table(vocab: int, horizon: int) -> SequenceTable:
    """All V^H sequences in lexicographic order and the prefix row each of their tokens uses.

    Prefix rows: the empty prefix is row 0; a prefix (y_1..y_t) is row Σ_{s<t} V^s + index in base V.
    """
    tokens = np.array(list(itertools.product(range(vocab), repeat=horizon)), dtype=np.int32)
    prefix_index = np.zeros_like(tokens)
    for t in range(horizon):
        offset = sum(vocab**s for s in range(t))
        code = np.zeros(len(tokens), dtype=np.int64)
        for s in range(t):
            code = code * vocab + tokens[:, s]
        prefix_index[:, t] = offset + code
    return SequenceTable(tokens, prefix_index, vocab, horizon)


def sequence_log_probs(logits: jax.Array, table: SequenceTable) -> jax.Array:
    """log p(y|x) for every prompt and every sequence: ``logits[X, P, V]`` -> ``[X, N]``."""
    token_logp = jax.nn.log_softmax(logits, axis=-1)  # [X, P, V]
    per_token = token_logp[:, table.prefix_index, table.tokens]  # [X, N, H]
    return jnp.sum(per_token, axis=-1)


def token_logits_for(seq_probs: jax.Array, table: SequenceTable) -> jax.Array:
    """Token logits whose sequence distribution is ``seq_probs[X, N]`` (full support assumed).

    Row ``prefix`` holds log of the conditional p(y_t = v | prefix) = m(prefix + v) / m(prefix), with
    m the marginal probability of a prefix; log m(prefix + v) is enough since the softmax
    normalizes.
    """
    num_x = seq_probs.shape[0]
    logits = jnp.zeros((num_x, table.num_prefixes, table.vocab), seq_probs.dtype)
    for t in range(table.horizon):
        # marginal of the length-(t+1) prefixes: sum over the tail of each sequence.
        marg = seq_probs.reshape(num_x, table.vocab ** (t + 1), -1).sum(-1)  # [X, V^(t+1)]
        offset = sum(table.vocab**s for s in range(t))
        rows = marg.reshape(num_x, table.vocab**t, table.vocab)
        logits = logits.at[:, offset : offset + table.vocab**t, :].set(jnp.log(rows))
    return logits
