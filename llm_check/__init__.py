"""Qwen3 in JAX/Flax NNX and the SFT/RL confirmation runs (README.md, ``llm_check/``).

Modules: ``config`` (Qwen3Config, presets), ``model`` (Qwen3 in NNX), ``logprobs`` (chunked token
log-probs), ``tokenizer`` (chat format), ``sampling`` (KV-cache generation), ``weights`` (HF
safetensors in and out), ``sharding`` (data/fsdp mesh). ``load_pretrained`` and ``save_pretrained``
are re-exported here, imported lazily so that ``import llm_check.config`` stays light.
"""

__all__ = ["load_pretrained", "save_pretrained"]


def __getattr__(name):
    if name in __all__:
        from llm_check import weights
        return getattr(weights, name)
    raise AttributeError(f"module 'llm_check' has no attribute {name!r}")
