"""kl.grad and kl.token (theory.kl_gradients): pass as stated, fail when the statement is broken."""

from __future__ import annotations

import pytest

from theory import kl_gradients as klg


def test_kl_grad_passes():
    r = klg.check_grad()
    assert r.ok, r.summary()
    assert any("symbolic n" in s.name and "normalizes to 0" in s.reason for s in r.steps)


@pytest.mark.parametrize("wrong", [{"k3": "forward"}, {"k1": "forward"}, {"k2": "reverse"}, {"k1_reward": "zero"}])
def test_kl_grad_fails_when_broken(wrong):
    r = klg.check_grad(wrong)
    assert not r.ok
    assert any(not s.ok and "symbolic n" in s.name for s in r.steps)


def test_kl_token_passes_and_pins_the_instance():
    r = klg.check_token()
    assert r.ok, r.summary()
    rtg, tok = klg.token_instance_errors()
    assert rtg == 0 and abs(float(tok) - 0.0360) < 5e-5


def test_kl_token_fails_for_the_per_token_loss():
    assert not klg.check_token("per_token").ok
