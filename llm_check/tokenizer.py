"""Tokenizer and the Qwen3 chat format with thinking off (docs/qwen3.md, "Chat format").

- ``load_tokenizer(path)`` reads ``tokenizer.json`` (+ ``tokenizer_config.json`` for the eos/pad
  names) with the ``tokenizers`` library. ``load_tokenizer("tiny")`` returns a small byte-level BPE
  shipped in ``llm_check/assets/tiny_tokenizer.json``: no download, the same special tokens as Qwen3
  (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, ``<think>``, ``</think>``) at ids 0..4.
  ``python -m llm_check.tokenizer`` regenerates that asset from the corpus below.
- A prompt is laid out as
  ``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n``,
  which is what Qwen3's chat template renders with ``add_generation_prompt=True,
  enable_thinking=False``. A training example appends the completion's ids and ``<|im_end|>``.
- The completion mask is built from the prompt/completion boundary (the length of the prompt ids),
  never by searching for template tags: 1 on the completion tokens and the closing ``<|im_end|>``.

Simplification: the prompt and the completion are tokenized separately and concatenated, so the
mask boundary is exact; a completion is therefore never merged with the template's trailing
``\\n\\n`` (Qwen3's pre-tokenizer splits there anyway). Special-token strings inside user text are
matched as special tokens, as transformers does by default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers import Tokenizer

from theory.errors import InputError

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
TINY_SPECIAL_IDS = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
TINY_VOCAB_SIZE = 512
TINY_ASSET = Path(__file__).parent / "assets" / "tiny_tokenizer.json"

PROMPT_TEMPLATE = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


class ChatTokenizer:
    """A ``tokenizers.Tokenizer`` plus Qwen3's chat layout. ``eos_id`` is ``<|im_end|>``."""

    def __init__(self, tokenizer: Tokenizer, *, eos_token: str = "<|im_end|>",
                 pad_token: str = "<|endoftext|>", source: str = "tokenizer"):
        self.tokenizer = tokenizer
        ids = {}
        for tok in (eos_token, pad_token) + SPECIAL_TOKENS:
            i = tokenizer.token_to_id(tok)
            if i is None:
                raise InputError(f"{source}: the special token {tok!r} is not in the vocabulary")
            ids[tok] = i
        self.special_ids = {t: ids[t] for t in SPECIAL_TOKENS}
        self.eos_id = ids[eos_token]
        self.pad_id = ids[pad_token]
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def prompt_ids(self, prompt: str) -> list[int]:
        """Ids of the user turn and the assistant header with an empty think block."""
        return self.encode(PROMPT_TEMPLATE.format(prompt=prompt))

    def example_ids(self, prompt: str, completion: str) -> tuple[list[int], list[int]]:
        """``(prompt_ids + ids(completion) + [eos], mask)``, mask = 1 from the boundary onwards."""
        p = self.prompt_ids(prompt)
        c = self.encode(completion) + [self.eos_id]
        return p + c, [0] * len(p) + [1] * len(c)


def load_tokenizer(name_or_path: str) -> ChatTokenizer:
    """``"tiny"`` (built in) or a folder holding ``tokenizer.json`` (+ ``tokenizer_config.json``)."""
    if name_or_path == "tiny":
        return ChatTokenizer(Tokenizer.from_file(str(TINY_ASSET)), source="tiny tokenizer")
    folder = Path(name_or_path)
    path = folder / "tokenizer.json" if folder.is_dir() else folder
    if not path.is_file():
        raise InputError(f"{name_or_path}: no tokenizer.json found (expected a folder holding one, "
                         "or 'tiny')")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizers library raises a bare Exception on malformed JSON
        raise InputError(f"{path}: not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
    eos, pad = "<|im_end|>", "<|endoftext|>"
    cfg_path = path.parent / "tokenizer_config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{cfg_path}: invalid JSON ({e})") from None
        eos = _token_name(cfg.get("eos_token")) or eos
        pad = _token_name(cfg.get("pad_token")) or pad
    return ChatTokenizer(tok, eos_token=eos, pad_token=pad, source=str(path))


def _token_name(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


# A small English corpus for the tiny BPE: the chat template, task words, common English.
_TINY_CORPUS = """\
user assistant system The answer is acceptable. The answer is unacceptable.
Is the following sentence grammatically acceptable? Answer with acceptable or unacceptable.
Label: acceptable Label: unacceptable grammatical ungrammatical sentence sentences word words
The cat sat on the mat. The dog chased the ball. She gave him the book yesterday.
John thinks that Mary left early. Who did you see at the party? What did they want to eat?
The students were reading books in the library while the teacher was writing on the board.
He is taller than his brother, and she is the tallest of all the children in the class.
They have been working here for three years. We will visit our friends next week.
I wonder whether he will come. It seems that nobody knows the answer to this question.
The more you read, the more you learn. Bill ate the apple and Sue ate the pear.
A man who was walking in the park found a small bird that could not fly.
There are many people who believe that the world is getting better every day.
This is the house that Jack built. Which book did you say that she bought?
Please think step by step, then give your final answer on the last line.
the of and to in is was that for it with as on be at by this had not are but from or have an
they which one you were her all she there would their we him been has when who will more no
if out so said what up its about into than them can only other new some could time these two
may then do first any my now such like our over man me even most made after also did many
before must through back years where much your way well down should because each just those
people how too little state good very make world still own see men work long get here between
both life being under never day same another know while last might us great old year off come
since against go came right used take three himself few house use during without again place
0 1 2 3 4 5 6 7 8 9 10 100 yes no true false correct incorrect
"""


def build_tiny_tokenizer() -> Tokenizer:
    """Train the tiny byte-level BPE on ``_TINY_CORPUS`` (deterministic; writes nothing)."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_TINY_CORPUS.splitlines(), trainer=trainer)
    return tok


def main() -> None:
    """Regenerate ``assets/tiny_tokenizer.json`` atomically."""
    TINY_ASSET.parent.mkdir(parents=True, exist_ok=True)
    tmp = TINY_ASSET.with_suffix(".json.tmp")
    build_tiny_tokenizer().save(str(tmp), pretty=False)
    os.replace(tmp, TINY_ASSET)
    print(f"wrote {TINY_ASSET.name}")


if __name__ == "__main__":
    main()
