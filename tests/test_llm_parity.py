"""Parity with transformers' Qwen3ForCausalLM: logits max abs error <= 1e-4 in float32.

Golden fixtures (tests/fixtures/qwen3_*, from ``python -m llm_check.make_fixtures``) always run;
the live comparison against torch runs when torch and transformers import. The configs cover
tied/untied heads, head_dim != hidden/heads, GQA ratios 1, 2 and 4, rope_theta 1e4 and 1e6 and
both RoPE spellings of config.json; weights have std 0.5 and random norm weights, so the mean
|logit| is 1.4-1.7 (measured errors: 3-5e-6), far from the near-zero logits that match anything.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from llm_check.make_fixtures import FIXTURE_CONFIGS
from llm_check.weights import load_pretrained, read_safetensors_header, read_tensor

pytestmark = pytest.mark.usefixtures("f32")

FIXTURES = Path(__file__).parent / "fixtures"
TOL = 1e-4  # max abs error on float32 logits
HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
# The live test runs one config by default (untied, GQA 2, head_dim 12); all four with -m slow.
LIVE_DEFAULT = ("untied_gqa2_hd12_theta1e6",)


@nnx.jit
def _forward(model, ids, positions, mask):
    return model(ids, positions=positions, attention_mask=mask)


def _golden(folder: Path) -> dict[str, np.ndarray]:
    path = folder / "golden.safetensors"
    header, start = read_safetensors_header(path)
    return {k: read_tensor(path, header, start, k) for k in header}


@pytest.mark.parametrize("name", sorted(FIXTURE_CONFIGS))
def test_golden_fixture_logits_match_transformers(name):
    folder = FIXTURES / f"qwen3_{name}"
    model, config = load_pretrained(folder)
    g = _golden(folder)
    ids, mask = g["input_ids"].astype(np.int32), g["attention_mask"].astype(np.int32)
    logits = np.asarray(_forward(model, ids, None, mask))  # default positions = cumsum(mask) - 1
    real = mask.astype(bool)
    assert np.abs(g["logits"][real]).mean() > 1.0  # non-trivial logits
    np.testing.assert_allclose(logits[real], g["logits"][real], rtol=0, atol=TOL)
    fields, _ = FIXTURE_CONFIGS[name]
    assert config.tie_word_embeddings == fields["tie_word_embeddings"]
    assert config.head_dim == fields["head_dim"] and config.rope_theta == fields["rope_theta"]


def test_fixtures_cover_the_required_variants():
    cfgs = [f for f, _ in FIXTURE_CONFIGS.values()]
    assert {c["tie_word_embeddings"] for c in cfgs} == {True, False}
    assert {c["num_attention_heads"] // c["num_key_value_heads"] for c in cfgs} >= {1, 2, 4}
    assert {c["rope_theta"] for c in cfgs} == {1e4, 1e6}
    assert any(c["head_dim"] * c["num_attention_heads"] != 16 for c in cfgs)
    assert any(c.get("legacy_rope_theta") for c in cfgs)


@pytest.mark.skipif(not HAS_TORCH, reason="torch and transformers are not installed")
@pytest.mark.parametrize("name", [n if n in LIVE_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(FIXTURE_CONFIGS)])
def test_live_parity_with_transformers(name, tmp_path):
    from llm_check.make_fixtures import (random_reference, reference_batch, reference_logits,
                                         write_fixture)

    fields, seed = FIXTURE_CONFIGS[name]
    folder = write_fixture(name, fields, seed + 100, root=tmp_path)  # fresh weights and batch
    model, _ = load_pretrained(folder)
    ref = random_reference(fields, seed + 100)
    ids, mask, pos = reference_batch(64, seed + 7, batch=3, length=20)
    want = reference_logits(ref, ids, mask, pos)
    got = np.asarray(_forward(model, ids, pos, mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], rtol=0, atol=TOL)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_TORCH, reason="torch and transformers are not installed")
def test_make_fixtures_regenerates_the_checked_in_files(tmp_path):
    """Same weights bit for bit, same config, same logits (to 1e-5: torch kernels may change)."""
    import json

    from llm_check.make_fixtures import write_fixture

    def tensors(path):
        header, start = read_safetensors_header(path)
        return {k: read_tensor(path, header, start, k) for k in header}

    for name, (fields, seed) in FIXTURE_CONFIGS.items():
        fresh, old = write_fixture(name, fields, seed, root=tmp_path), FIXTURES / f"qwen3_{name}"
        a, b = (json.loads((d / "config.json").read_text()) for d in (fresh, old))
        a.pop("transformers_version"), b.pop("transformers_version")
        assert a == b, name
        wa, wb = tensors(fresh / "model.safetensors"), tensors(old / "model.safetensors")
        assert wa.keys() == wb.keys()
        for k in wa:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=f"{name}: {k}")
        ga, gb = tensors(fresh / "golden.safetensors"), tensors(old / "golden.safetensors")
        for k in ga:
            np.testing.assert_allclose(ga[k], gb[k], rtol=0, atol=1e-5, err_msg=f"{name}: {k}")


def test_make_fixtures_refuses_arguments_before_writing(monkeypatch, capsys):
    """``python -m llm_check.make_fixtures --help`` prints its usage; an unknown argument exits 2.
    Neither rewrites the fixtures (it once ignored its arguments and regenerated them)."""
    from llm_check import make_fixtures

    monkeypatch.setattr(make_fixtures, "write_fixture", lambda *a: pytest.fail("fixtures rewritten"))
    for argv, code in ((["--help"], 0), (["--bogus"], 2)):
        with pytest.raises(SystemExit) as e:
            make_fixtures.main(argv)
        assert e.value.code == code
    assert "usage: python -m llm_check.make_fixtures" in capsys.readouterr().out
