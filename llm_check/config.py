"""Qwen3 model configuration: a frozen dataclass, read from and written to an HF ``config.json``.

Implements the architecture facts of docs/qwen3.md (the Qwen3-0.6B table). Simplifications, stated so
that nothing is silently ignored:

- Only dense Qwen3 (``model_type: qwen3``) with full causal attention everywhere: a config that
  enables sliding-window attention, rope scaling (any ``rope_type`` but ``default``), attention
  biases, dropout or an activation other than SiLU is rejected with ``InputError`` naming the field.
- Both RoPE spellings are read: the top-level ``rope_theta`` of real Qwen3 snapshots and the
  ``rope_parameters`` dict that transformers 5 writes. ``to_hf`` writes both.
- Unknown keys are rejected too (a typo must not silently become a default), except the
  bookkeeping keys transformers writes (``_IGNORED``).

Variants are made with ``dataclasses.replace(preset("qwen3-0.6b"), num_hidden_layers=2, ...)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from theory.errors import InputError


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 40_960
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim",
                     "max_position_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise InputError(f"config: {name} must be a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise InputError(f"config: num_attention_heads={self.num_attention_heads} is not a "
                             f"multiple of num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            raise InputError(f"config: head_dim={self.head_dim} must be even for RoPE")
        if not self.rope_theta > 0 or not self.rms_norm_eps > 0:
            raise InputError("config: rope_theta and rms_norm_eps must be positive")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < self.vocab_size:
                raise InputError(f"config: {name}={v} is outside the vocabulary [0, {self.vocab_size})")

    @property
    def num_groups(self) -> int:
        """Query heads per key/value head (the GQA ratio)."""
        return self.num_attention_heads // self.num_key_value_heads

    @classmethod
    def from_hf(cls, d: dict, *, source: str = "config.json") -> "Qwen3Config":
        """Read an HF Qwen3 ``config.json`` dict; reject what this implementation does not do."""
        if not isinstance(d, dict):
            raise InputError(f"{source}: expected a JSON object")
        d = dict(d)

        def bad(field, why):
            return InputError(f"{source}: field {field!r} {why}")

        model_type = d.pop("model_type", None)
        if model_type != "qwen3":
            raise bad("model_type", f"is {model_type!r}; only 'qwen3' is supported")
        for field, allowed in _MUST_EQUAL.items():
            if field in d and d.pop(field) not in allowed:
                raise bad(field, f"is set to a value this implementation does not support "
                                 f"(supported: {allowed})")
        window_fields = ("sliding_window", "max_window_layers")
        for f in window_fields:  # only meaningful when use_sliding_window is on, which is rejected
            d.pop(f, None)
        layer_types = d.pop("layer_types", None)
        if layer_types is not None and any(t != "full_attention" for t in layer_types):
            raise bad("layer_types", "contains a layer that is not 'full_attention'")
        rope_params = d.pop("rope_parameters", None)
        theta = d.pop("rope_theta", None)
        if rope_params is not None:
            if not isinstance(rope_params, dict):
                raise bad("rope_parameters", "must be an object")
            rp = dict(rope_params)
            if rp.pop("rope_type", "default") != "default":
                raise bad("rope_parameters.rope_type", "is not 'default' (rope scaling is not supported)")
            if rp.get("rope_theta") is not None:
                if theta is not None and float(theta) != float(rp["rope_theta"]):
                    raise bad("rope_theta", "disagrees with rope_parameters.rope_theta")
                theta = rp.pop("rope_theta")
            if rp:
                raise bad(f"rope_parameters.{sorted(rp)[0]}", "is not supported")
        for f in _IGNORED:
            d.pop(f, None)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name == "rope_theta":
                continue
            if f.name in d:
                kwargs[f.name] = d.pop(f.name)
        if "head_dim" not in kwargs and "hidden_size" in kwargs and "num_attention_heads" in kwargs:
            kwargs["head_dim"] = kwargs["hidden_size"] // kwargs["num_attention_heads"]
        if d:
            raise bad(sorted(d)[0], "is not a Qwen3 field this implementation knows")
        eos = kwargs.get("eos_token_id")
        if isinstance(eos, list):  # some snapshots list several stop ids; the first is the eos
            kwargs["eos_token_id"] = eos[0] if eos else None
        if theta is not None:
            kwargs["rope_theta"] = float(theta)
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in kwargs]
        if missing:
            raise bad(missing[0], "is missing")
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise InputError(f"{source}: {e}") from None

    def to_hf(self) -> dict:
        """The ``config.json`` dict transformers' ``Qwen3ForCausalLM`` loads (both RoPE spellings)."""
        d = dataclasses.asdict(self)
        d.update(
            model_type="qwen3",
            architectures=["Qwen3ForCausalLM"],
            hidden_act="silu",
            attention_bias=False,
            attention_dropout=0.0,
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            layer_types=["full_attention"] * self.num_hidden_layers,
            torch_dtype="float32",
        )
        return d


# Fields that must hold exactly one of these values (anything else is a feature we don't implement).
_MUST_EQUAL = {
    "hidden_act": ("silu",),
    "attention_bias": (False,),
    "attention_dropout": (0, 0.0),
    "use_sliding_window": (False,),
    "rope_scaling": (None,),
    "mlp_bias": (False,),
}
# Bookkeeping keys that do not change the function the model computes.
_IGNORED = (
    "architectures", "torch_dtype", "dtype", "transformers_version", "initializer_range",
    "use_cache", "output_hidden_states", "output_attentions", "return_dict",
    "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id", "problem_type",
    "_name_or_path", "tie_encoder_decoder", "pruned_heads", "torchscript", "use_bfloat16",
)


def preset(name: str) -> Qwen3Config:
    """``qwen3-0.6b`` (docs/qwen3.md) or ``tiny`` (2 layers, CPU-sized, the tiny tokenizer's vocab)."""
    if name == "qwen3-0.6b":
        return Qwen3Config(
            vocab_size=151_936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, rope_theta=1_000_000.0,
            rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=40_960,
            bos_token_id=151_643, eos_token_id=151_645, pad_token_id=151_643)
    if name == "tiny":
        from llm_check.tokenizer import TINY_SPECIAL_IDS, TINY_VOCAB_SIZE
        return Qwen3Config(
            vocab_size=TINY_VOCAB_SIZE, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, rope_theta=1_000_000.0,
            rms_norm_eps=1e-6, tie_word_embeddings=True, max_position_embeddings=2048,
            bos_token_id=TINY_SPECIAL_IDS["<|endoftext|>"],
            eos_token_id=TINY_SPECIAL_IDS["<|im_end|>"],
            pad_token_id=TINY_SPECIAL_IDS["<|endoftext|>"])
    raise InputError(f"unknown model preset {name!r}; choose 'qwen3-0.6b' or 'tiny'")
