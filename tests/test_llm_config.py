"""Qwen3Config: presets, parameter count (no allocation), both RoPE spellings, rejected fields."""

from __future__ import annotations

import dataclasses

import jax
import pytest
from flax import nnx

from llm_check.config import Qwen3Config, preset
from llm_check.model import Qwen3, count_params
from llm_check.tokenizer import load_tokenizer
from theory.errors import InputError

pytestmark = pytest.mark.usefixtures("f32")

# The config.json of the Qwen/Qwen3-0.6B snapshot (top-level rope_theta, transformers 4.x era).
QWEN3_06B_JSON = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
    "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
    "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
    "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
    "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
    "use_cache": True, "use_sliding_window": False, "vocab_size": 151936,
}


def test_qwen3_06b_preset_has_exactly_596_049_920_parameters():
    cfg = preset("qwen3-0.6b")
    assert count_params(cfg) == 596_049_920
    per_layer = (count_params(dataclasses.replace(cfg, num_hidden_layers=2))
                 - count_params(dataclasses.replace(cfg, num_hidden_layers=1)))
    assert per_layer == 15_730_944
    assert cfg.vocab_size * cfg.hidden_size == 155_582_464


def test_q_proj_maps_to_heads_times_head_dim_not_hidden():
    cfg = preset("qwen3-0.6b")
    abstract = nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0)))
    assert abstract.layers[0].self_attn.q_proj.kernel.shape == (1024, 2048)
    assert abstract.layers[0].self_attn.k_proj.kernel.shape == (1024, 1024)
    assert abstract.layers[0].self_attn.o_proj.kernel.shape == (2048, 1024)


def test_real_snapshot_config_reads_as_the_preset():
    # the snapshot's config.json names no pad token (its tokenizer_config.json does)
    want = dataclasses.replace(preset("qwen3-0.6b"), pad_token_id=None)
    assert Qwen3Config.from_hf(QWEN3_06B_JSON) == want


def test_rope_parameters_spelling_and_round_trip():
    d = dict(QWEN3_06B_JSON)
    del d["rope_theta"]
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0}
    cfg = Qwen3Config.from_hf(d)
    assert cfg.rope_theta == 10000.0
    assert Qwen3Config.from_hf(cfg.to_hf()) == cfg


def test_transformers_config_dict_is_accepted():
    transformers = pytest.importorskip("transformers")
    hf = transformers.Qwen3Config(vocab_size=64, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                  intermediate_size=32, tie_word_embeddings=False)
    cfg = Qwen3Config.from_hf(hf.to_dict())
    assert (cfg.head_dim, cfg.num_key_value_heads, cfg.tie_word_embeddings) == (8, 2, False)


def test_head_dim_defaults_to_hidden_over_heads_and_eos_list_takes_first():
    d = dict(QWEN3_06B_JSON, eos_token_id=[151645, 151643])
    del d["head_dim"]
    cfg = Qwen3Config.from_hf(d)
    assert cfg.head_dim == 64 and cfg.eos_token_id == 151645


@pytest.mark.parametrize("field,value", [
    ("model_type", "llama"),
    ("use_sliding_window", True),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
    ("attention_bias", True),
    ("hidden_act", "gelu"),
    ("layer_types", ["full_attention"] * 27 + ["sliding_attention"]),
    ("rope_parameters", {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}),
    ("some_new_feature", 1),
])
def test_unsupported_fields_are_rejected_by_name(field, value):
    with pytest.raises(InputError, match=field.split(".")[0] if field != "rope_parameters"
                       else "rope_parameters.rope_type"):
        Qwen3Config.from_hf(dict(QWEN3_06B_JSON, **{field: value}))


@pytest.mark.parametrize("change,match", [
    (dict(num_key_value_heads=3), "multiple"),
    (dict(head_dim=7), "head_dim"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(eos_token_id=10**7), "eos_token_id"),
])
def test_inconsistent_values_are_rejected(change, match):
    with pytest.raises(InputError, match=match):
        Qwen3Config.from_hf(dict(QWEN3_06B_JSON, **change))


def test_missing_field_and_unknown_preset():
    d = dict(QWEN3_06B_JSON)
    del d["hidden_size"]
    with pytest.raises(InputError, match="hidden_size"):
        Qwen3Config.from_hf(d)
    with pytest.raises(InputError, match="preset"):
        preset("qwen3-7b")


def test_tiny_preset_matches_the_tiny_tokenizer():
    cfg, tok = preset("tiny"), load_tokenizer("tiny")
    assert tok.vocab_size <= cfg.vocab_size
    assert (cfg.eos_token_id, cfg.pad_token_id) == (tok.eos_id, tok.pad_id)
    assert cfg.num_hidden_layers == 2
    assert count_params(cfg) < 1_000_000
    assert jax.tree.leaves(nnx.state(nnx.eval_shape(lambda: Qwen3(cfg, rngs=nnx.Rngs(0)))))
