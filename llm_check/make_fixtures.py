"""Regenerate the golden parity fixtures with transformers: ``python -m llm_check.make_fixtures``.

For each config in ``FIXTURE_CONFIGS`` it builds a ``transformers`` ``Qwen3ForCausalLM`` with random
weights (``random_reference``: std 0.5 on matrices and norm weights in [0.5, 1.5], so that the
logits are far from zero and a wrong layout cannot match by accident), saves it with transformers'
own ``save_pretrained`` (so our loader reads the reference writer's files), and records a batch of
token ids, its attention mask (row 0 left-padded), positions ``cumsum(mask) - 1``, and the
float32 logits transformers computes, in ``golden.safetensors``. The folders are
``tests/fixtures/qwen3_<name>/``, about 150 KB in total.

The configs cover tied and untied heads, head_dim != hidden/heads, GQA ratios 1, 2 and 4,
rope_theta 1e4 and 1e6, and both config.json spellings of RoPE (``rope_parameters`` as
transformers 5 writes it, top-level ``rope_theta`` as real Qwen3 snapshots have it).
Needs torch and transformers (the ``[ref]`` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

# name -> (HF config fields, seed). hidden 16 with 4 heads: hidden/heads = 4.
FIXTURE_CONFIGS = {
    "tied_mha_hd8_theta1e4": (dict(num_attention_heads=4, num_key_value_heads=4, head_dim=8,
                                   tie_word_embeddings=True, rope_theta=1e4), 0),
    "untied_gqa2_hd12_theta1e6": (dict(num_attention_heads=4, num_key_value_heads=2, head_dim=12,
                                       tie_word_embeddings=False, rope_theta=1e6), 1),
    "tied_gqa4_hd4_theta1e6": (dict(num_attention_heads=4, num_key_value_heads=1, head_dim=4,
                                    tie_word_embeddings=True, rope_theta=1e6,
                                    legacy_rope_theta=True), 2),
    "untied_gqa4_hd16_theta1e4": (dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                       tie_word_embeddings=False, rope_theta=1e4), 3),
}
BASE = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            rms_norm_eps=1e-6, max_position_embeddings=128)
FIXTURE_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def random_reference(fields: dict, seed: int):
    """A transformers ``Qwen3ForCausalLM`` (float32, eval mode) with large random weights."""
    import torch
    from transformers import Qwen3Config as HFConfig, Qwen3ForCausalLM

    fields = {k: v for k, v in {**BASE, **fields}.items() if k != "legacy_rope_theta"}
    theta = fields.pop("rope_theta")
    cfg = HFConfig(**fields, rope_parameters={"rope_type": "default", "rope_theta": theta},
                   attn_implementation="eager")
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg).to(torch.float32).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.5)
    return model


def reference_batch(vocab_size: int, seed: int, batch: int = 2, length: int = 12):
    """(ids, mask, positions) int arrays [B, T]; row 0 is left-padded by 3."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    mask[0, :3] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    return ids, mask, positions


def reference_logits(model, ids, mask, positions) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long),
                    position_ids=torch.tensor(positions, dtype=torch.long))
    return out.logits.float().numpy()


def write_fixture(name: str, fields: dict, seed: int, root: Path = FIXTURE_DIR) -> Path:
    from llm_check.weights import write_safetensors

    model = random_reference(fields, seed)
    ids, mask, positions = reference_batch(BASE["vocab_size"], seed)
    logits = reference_logits(model, ids, mask, positions)
    dest = root / f"qwen3_{name}"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".qwen3_{name}.", dir=root))
    try:
        model.save_pretrained(tmp)
        if fields.get("legacy_rope_theta"):  # the spelling of real Qwen3 snapshots
            cfg = json.loads((tmp / "config.json").read_text())
            cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        for extra in tmp.glob("generation_config.json"):
            extra.unlink()
        write_safetensors(tmp / "golden.safetensors",
                          {"input_ids": ids.astype(np.float32), "attention_mask":
                           mask.astype(np.float32), "position_ids": positions.astype(np.float32),
                           "logits": logits})
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest


def main(argv=None) -> None:
    import argparse

    argparse.ArgumentParser(prog="python -m llm_check.make_fixtures",
                            description=(__doc__ or "").strip().split("\n")[0]
                            + " Takes no arguments.").parse_args(argv)
    for name, (fields, seed) in FIXTURE_CONFIGS.items():
        dest = write_fixture(name, fields, seed)
        size = sum(f.stat().st_size for f in dest.iterdir())
        print(f"wrote {dest.name} ({size / 1024:.1f} KB)")


if __name__ == "__main__":
    main()
