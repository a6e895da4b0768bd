"""Data for the LLM confirmation runs: the built-in noisy-expert task, CoLA and generic JSONL.

The built-in task (docs/theory.md §7, "a controlled experiment uses a stochastic expert"):

- a prompt is ``"a+b="`` with digits ``a, b`` in ``0..max_operand`` (25 prompts by default);
- the correct answer is ``str(a + b)``; the expert (the SFT data) writes it with probability
  ``1 - eps`` and otherwise writes the off-by-one ``str(a + b + 1)``: one plausible wrong answer per
  prompt, so the expert's distribution is the two-point law of ``theory.closed_forms.c1_noisy_expert``
  with ``n_wrong=1``;
- the reward is 1 for the correct answer and 0 otherwise, so it is non-constant on the expert's
  support and the predicted SFT-loss increase C1(beta) is strictly positive for every eps in (0, 1).

Simplifications: the "base" of a randomly initialized model is a short SFT on the train prompts
(``format_examples``), each paired with its gold answer with probability ``p_correct`` and with the
completion of a random other row otherwise: it teaches the answer format and a weak version of the
mapping (a stand-in for what a pretrained model already knows), so RL from the base has a clearly
non-zero reward.

Every array here is NumPy; the training code turns them into jax arrays. All randomness comes from
an explicit ``numpy.random.Generator`` seeded by the caller, or from ``jax.random`` keys.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import os
import re
from dataclasses import dataclass

import numpy as np

from theory.errors import InputError

COLA_PROMPT = ("Is the following sentence grammatically acceptable? "
               "Answer with one word, acceptable or unacceptable.\nSentence: {sentence}")
COLA_LABELS = ("unacceptable", "acceptable")  # label 0, label 1


@dataclass(frozen=True)
class Example:
    """One row: the prompt, the expert completion (the SFT target) and the gold answer (the reward's)."""

    prompt: str
    completion: str
    answer: str


@dataclass(frozen=True)
class TaskData:
    """A task: train and held-out rows, and the regex that finds an answer in a model's output.

    ``eps`` is the expert's error rate when it is known (the built-in task), else None.
    """

    name: str
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    answer_pattern: str
    eps: float | None = None


# --------------------------------------------------------------------------- built-in task

def builtin_task(*, seed: int, eps: float, n_train: int = 512, n_heldout: int = 128,
                 max_operand: int = 4) -> TaskData:
    """The noisy-expert addition task (module docstring); train and held-out rows drawn independently."""
    if not 0.0 <= eps < 1.0:
        raise InputError(f"setting eps={eps}: the expert's error rate must lie in [0, 1)")
    if not 1 <= max_operand <= 9:
        raise InputError(f"setting max_operand={max_operand}: must be a digit in 1..9")
    if n_train < 1 or n_heldout < 1:
        raise InputError(f"settings n_train={n_train}, n_heldout={n_heldout}: must be >= 1")
    rng = np.random.default_rng(seed)

    def draw(n: int) -> tuple[Example, ...]:
        a = rng.integers(0, max_operand + 1, size=n)
        b = rng.integers(0, max_operand + 1, size=n)
        wrong = rng.random(n) < eps
        rows = []
        for ai, bi, wi in zip(a, b, wrong):
            answer = str(ai + bi)
            completion = str(ai + bi + 1) if wi else answer
            rows.append(Example(prompt=f"{ai}+{bi}=", completion=completion, answer=answer))
        return tuple(rows)

    train = draw(n_train)
    heldout = draw(n_heldout)
    return TaskData(name="builtin", train=train, heldout=heldout, answer_pattern=r"\d+", eps=eps)


def format_examples(examples: tuple[Example, ...], *, seed: int,
                    p_correct: float = 0.0) -> tuple[Example, ...]:
    """Base pre-training rows: each prompt keeps its gold answer with probability ``p_correct``,
    otherwise it gets the completion of a random other row (the answer format, not the map)."""
    if not 0.0 <= p_correct <= 1.0:
        raise InputError(f"setting base_p_correct={p_correct}: must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(examples))
    keep = rng.random(len(examples)) < p_correct
    return tuple(dataclasses.replace(ex, completion=ex.answer if k else examples[j].completion)
                 for ex, j, k in zip(examples, perm, keep))


# --------------------------------------------------------------------------- CoLA

def _cola_example(sentence: str, label: int) -> Example:
    word = COLA_LABELS[label]
    return Example(prompt=COLA_PROMPT.format(sentence=sentence), completion=word, answer=word)


def _parse_label(value, where: str) -> int:
    text = str(value).strip()
    if text not in ("0", "1"):
        raise InputError(f"{where}: label {text!r} is not 0 or 1")
    return int(text)


def _read_text(path: str) -> str:
    """A file's text as UTF-8 (a leading byte-order mark dropped); bytes that are not UTF-8 and an
    unreadable file are ``InputError``s naming the file and the line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not UTF-8 text (byte {e.start}: "
                         f"{data[e.start:e.start + 1]!r})") from None


def _lines(text: str) -> list[str]:
    """Lines split at \\n, \\r\\n or \\r only (``str.splitlines`` also splits at U+2028 and
    other characters a sentence may contain)."""
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline=None)]


def load_glue_cola_tsv(path: str) -> list[tuple[str, int | None]]:
    """GLUE CoLA: ``train.tsv``/``dev.tsv`` (no header; source, label, author mark, sentence) or
    ``test.tsv`` (header ``index<TAB>sentence``; no labels, so the label is None)."""
    rows: list[tuple[str, int | None]] = []
    lines = _lines(_read_text(path))
    if lines and lines[0].split("\t") == ["index", "sentence"]:
        for i, line in enumerate(lines[1:], start=2):
            parts = line.split("\t")
            if len(parts) != 2:
                raise InputError(f"{path}:{i}: expected 2 tab-separated columns (index, sentence), "
                                 f"got {len(parts)}")
            rows.append((parts[1], None))
        return rows
    for i, line in enumerate(lines, start=1):
        parts = line.split("\t")
        if len(parts) != 4:
            raise InputError(f"{path}:{i}: expected 4 tab-separated columns (source, label, "
                             f"author mark, sentence), got {len(parts)}")
        rows.append((parts[3], _parse_label(parts[1], f"{path}:{i}")))
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def _hf_row(row: dict, where: str) -> tuple[str, int]:
    for col in ("sentence", "label"):
        if col not in row or row[col] is None:
            raise InputError(f"{where}: missing column {col!r}")
    if not isinstance(row["sentence"], str):
        raise InputError(f"{where}: column 'sentence' must be a string, got "
                         f"{type(row['sentence']).__name__}")
    return row["sentence"], _parse_label(row["label"], where)


def load_hf_cola(path: str) -> list[tuple[str, int]]:
    """HF-exported CoLA (columns ``sentence``, ``label``, ``idx``) as JSONL, CSV or parquet."""
    rows: list[tuple[str, int]] = []
    if path.endswith(".jsonl"):
        for i, obj in _jsonl_objects(path):
            rows.append(_hf_row(obj, f"{path}:{i}"))
    elif path.endswith(".csv"):
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        done = 0  # the last line of the last complete record: a csv.Error is in the next one
        try:
            reader.fieldnames  # noqa: B018 (reads the header)
            done = reader.line_num
            for row in reader:
                rows.append(_hf_row(row, f"{path}:{reader.line_num}"))
                done = reader.line_num
        except csv.Error as e:
            raise InputError(f"{path}:{done + 1}: bad CSV ({e})") from None
    elif path.endswith(".parquet"):
        if importlib.util.find_spec("pyarrow") is None:
            raise InputError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), "
                             "or export the split as JSONL or CSV")
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path).to_pylist()
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(f"{path}: not a readable parquet file "
                             f"({(str(e).splitlines() or [type(e).__name__])[0]})") from None
        for i, row in enumerate(table):
            rows.append(_hf_row(row, f"{path}: row {i}"))
    else:
        raise InputError(f"{path}: unknown CoLA file type (expected .tsv, .jsonl, .csv or .parquet)")
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def _cola_split(directory: str, names: tuple[str, ...]) -> str:
    for name in names:
        for ext in (".tsv", ".jsonl", ".csv", ".parquet"):
            p = os.path.join(directory, name + ext)
            if os.path.isfile(p):
                return p
    raise InputError(f"{directory}: no CoLA split named {' or '.join(names)} "
                     "(.tsv, .jsonl, .csv or .parquet)")


def load_cola(directory: str) -> TaskData:
    """CoLA from a folder: train from ``train.*``, held-out from ``dev.*``/``validation.*``."""
    if not os.path.isdir(directory):
        raise InputError(f"--task cola:{directory}: not a directory")
    splits = []
    for names in (("train",), ("dev", "validation")):
        path = _cola_split(directory, names)
        rows = load_glue_cola_tsv(path) if path.endswith(".tsv") else load_hf_cola(path)
        if any(label is None for _, label in rows):
            raise InputError(f"{path}: has no labels (the GLUE test split); use train and dev")
        splits.append(tuple(_cola_example(s, label) for s, label in rows))
    return TaskData(name="cola", train=splits[0], heldout=splits[1],
                    answer_pattern=r"\b(?:unacceptable|acceptable)\b")


# --------------------------------------------------------------------------- generic JSONL

def _json_line(line: str, where: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{where}: bad JSON ({e.msg}, column {e.colno})") from None
    except ValueError as e:  # an integer of more than 4300 digits
        raise InputError(f"{where}: bad JSON ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise InputError(f"{where}: bad JSON (nested too deeply)") from None


def _jsonl_objects(path: str):
    for i, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        obj = _json_line(line, f"{path}:{i}")
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{i}: expected a JSON object")
        yield i, obj


def load_jsonl(path: str) -> list[Example]:
    """Generic JSONL: ``prompt`` plus ``completion`` (the SFT target) and/or ``answer`` (the reward's).

    With only one of the two, it serves as both.
    """
    if not os.path.isfile(path):
        raise InputError(f"--task jsonl:{path}: no such file")
    rows = []
    for i, obj in _jsonl_objects(path):
        where = f"{path}:{i}"
        if not isinstance(obj.get("prompt"), str):
            raise InputError(f"{where}: missing column 'prompt' (a string)")
        completion, answer = obj.get("completion"), obj.get("answer")
        if completion is None and answer is None:
            raise InputError(f"{where}: needs a 'completion' or an 'answer' column")
        for col, v in (("completion", completion), ("answer", answer)):
            if v is not None and not isinstance(v, str):
                raise InputError(f"{where}: column {col!r} must be a string")
        completion = completion if completion is not None else answer
        answer = answer if answer is not None else completion
        rows.append(Example(prompt=obj["prompt"], completion=completion, answer=answer))
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def answers_pattern(examples) -> str:
    """A regex matching any of the task's answers as a whole span, longest first (so
    'unacceptable' beats 'acceptable'), never inside a longer word or number: with answers
    {2, 3}, "32", "2.5", "-2", "2,000" and "1/2" hold no answer, while "2." and "(2)" hold one.

    With more than 64 distinct answers (or an empty one) any whitespace-free token stands in, so
    the robust reward reads the output's last token; if some answer has several words, any
    non-empty line stands in instead, and the robust reward reads the output's last non-empty line.
    """
    answers = sorted({ex.answer.strip() for ex in examples}, key=lambda a: (-len(a), a))
    if len(answers) > 64 or not all(answers):
        return r"[^\n]*\S[^\n]*" if any(any(c.isspace() for c in a) for a in answers) else r"\S+"
    return (r"(?<![\w.,/-])(?:" + "|".join(re.escape(a) for a in answers)
            + r")(?!\w|[.,/]\d)")


def split_heldout(rows: list[Example], *, heldout_fraction: float, seed: int):
    """A seeded train / held-out split of one list of rows."""
    if not 0.0 < heldout_fraction < 1.0:
        raise InputError(f"setting heldout_fraction={heldout_fraction}: must lie in (0, 1)")
    perm = np.random.default_rng(seed).permutation(len(rows))
    n_held = max(1, int(round(heldout_fraction * len(rows))))
    if n_held >= len(rows):
        raise InputError(f"a dataset of {len(rows)} rows is too small to split off a held-out set")
    held = tuple(rows[i] for i in perm[:n_held])
    train = tuple(rows[i] for i in perm[n_held:])
    return train, held


def load_task(spec: str, *, seed: int, eps: float, n_train: int = 512, n_heldout: int = 128,
              max_operand: int = 4, heldout_fraction: float = 0.1) -> TaskData:
    """``builtin`` | ``cola:DIR`` | ``jsonl:FILE`` (a JSONL file is split into train and held-out)."""
    if spec == "builtin":
        return builtin_task(seed=seed, eps=eps, n_train=n_train, n_heldout=n_heldout,
                            max_operand=max_operand)
    kind, _, arg = spec.partition(":")
    if kind == "cola" and arg:
        return load_cola(arg)
    if kind == "jsonl" and arg:
        rows = load_jsonl(arg)
        try:
            train, held = split_heldout(rows, heldout_fraction=heldout_fraction, seed=seed)
        except InputError as e:
            raise InputError(f"{arg}: {e}") from None
        return TaskData(name="jsonl", train=train, heldout=held, answer_pattern=answers_pattern(rows))
    raise InputError(f"setting --task {spec!r}: unknown task (use builtin, cola:DIR or jsonl:FILE)")


# --------------------------------------------------------------------------- tokens and batches

@dataclass(frozen=True)
class TokenBatch:
    """Right-padded examples: tokens, attention mask and completion mask, all int32 [N, T].

    ``completion_mask`` is 1 on the completion tokens and the closing <|im_end|> (the tokenizer's
    ``example_ids``); the loss on position t uses ``completion_mask[:, 1:]`` against the log-prob
    of token t+1.
    """

    tokens: np.ndarray
    attention_mask: np.ndarray
    completion_mask: np.ndarray

    def take(self, idx) -> "TokenBatch":
        return TokenBatch(self.tokens[idx], self.attention_mask[idx], self.completion_mask[idx])

    def __len__(self) -> int:
        return self.tokens.shape[0]


def completion_window(completion_mask: np.ndarray) -> int:
    """The fewest transitions that cover every row's completion targets when counted from the row's
    first one (``logprobs.window_logprobs``): max over rows of last - first + 1 of
    ``completion_mask[:, 1:]``; at least 1."""
    m = np.asarray(completion_mask)[:, 1:] > 0
    rows = m.any(axis=1)
    if not rows.any():
        return 1
    t = m.shape[1]
    first = m.argmax(axis=1)
    last = t - 1 - m[:, ::-1].argmax(axis=1)
    return int(max(1, (last - first + 1)[rows].max()))


def encode_examples(tok, examples, *, max_len: int | None = None) -> TokenBatch:
    """Tokenize (prompt, completion) rows with the chat format and right-pad them to one length."""
    encoded = [tok.example_ids(ex.prompt, ex.completion) for ex in examples]
    longest = max(len(ids) for ids, _ in encoded)
    length = longest if max_len is None else max_len
    if longest > length:
        i = max(range(len(encoded)), key=lambda k: len(encoded[k][0]))
        raise InputError(f"example {i} has {longest} tokens, more than max_len={length}")
    n = len(encoded)
    tokens = np.full((n, length), tok.pad_id, dtype=np.int32)
    attn = np.zeros((n, length), dtype=np.int32)
    cmask = np.zeros((n, length), dtype=np.int32)
    for i, (ids, mask) in enumerate(encoded):
        tokens[i, : len(ids)] = ids
        attn[i, : len(ids)] = 1
        cmask[i, : len(ids)] = mask
    return TokenBatch(tokens, attn, cmask)


@dataclass(frozen=True)
class SplitBatch:
    """Examples split at the prompt/completion boundary: LEFT-padded prompts [N, Tp] with their
    mask, and RIGHT-padded completions [N, M] (the completion tokens and the closing <|im_end|>)
    with theirs, all int32. The layout of sampled completions, so that the log-probs of the
    completion take logits at its M positions only (``logprobs.completion_nll``), not at the
    prompt's."""

    prompt: np.ndarray
    prompt_mask: np.ndarray
    completion: np.ndarray
    completion_mask: np.ndarray

    def arrays(self) -> tuple:
        return self.prompt, self.prompt_mask, self.completion, self.completion_mask


def encode_split(tok, examples, *, prompt_len: int | None = None) -> SplitBatch:
    """Tokenize (prompt, completion) rows as ``SplitBatch``: the same ids as ``encode_examples``
    (``tok.example_ids``), cut where the completion mask starts."""
    prompts, completions = [], []
    for ex in examples:
        ids, mask = tok.example_ids(ex.prompt, ex.completion)
        k = mask.index(1)
        prompts.append(ids[:k])
        completions.append(ids[k:])
    longest = max(len(x) for x in prompts)
    length = longest if prompt_len is None else prompt_len
    if longest > length:
        raise InputError(f"a prompt has {longest} tokens, more than the prompt length {length}")
    m = max(len(c) for c in completions)
    n = len(prompts)
    p = np.full((n, length), tok.pad_id, dtype=np.int32)
    pm = np.zeros((n, length), dtype=np.int32)
    c = np.full((n, m), tok.pad_id, dtype=np.int32)
    cm = np.zeros((n, m), dtype=np.int32)
    for i, (x, y) in enumerate(zip(prompts, completions)):
        p[i, length - len(x):] = x
        pm[i, length - len(x):] = 1
        c[i, : len(y)] = y
        cm[i, : len(y)] = 1
    return SplitBatch(p, pm, c, cm)


def encode_prompts(tok, prompts, *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Chat-formatted prompts, LEFT-padded to one length (what sampling expects): tokens, mask."""
    ids = [tok.prompt_ids(p) for p in prompts]
    longest = max(len(x) for x in ids)
    length = longest if length is None else length
    if longest > length:
        raise InputError(f"a prompt has {longest} tokens, more than the prompt length {length}")
    tokens = np.full((len(ids), length), tok.pad_id, dtype=np.int32)
    mask = np.zeros((len(ids), length), dtype=np.int32)
    for i, x in enumerate(ids):
        tokens[i, length - len(x):] = x
        mask[i, length - len(x):] = 1
    return tokens, mask


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Row indices of step ``step``: epoch-wise permutations, a pure function of (seed, step).

    Each epoch is a fresh permutation drawn from (seed, epoch); the remainder of an epoch that does
    not fill a batch is dropped. Being a function of the step, it makes resumed runs exact.
    """
    if batch_size > n:
        raise InputError(f"setting batch_size={batch_size}: larger than the dataset ({n} rows)")
    per_epoch = n // batch_size
    epoch, k = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]
