"""kl.grad and kl.token (theory.kl_gradients): pass as stated, fail when the statement is broken."""

from __future__ import annotations

import pytest
import sympy as sp

from theory import derivation as d
from theory import kl_gradients as klg


def test_kl_grad_passes():
    r = klg.check_grad()
    assert r.ok, r.summary()
    assert any("symbolic n" in s.name and "reduces to 0 for every size" in s.reason for s in r.steps)


@pytest.mark.parametrize("wrong", [{"k3": "forward"}, {"k1": "forward"}, {"k2": "reverse"}, {"k1_reward": "zero"}])
def test_kl_grad_fails_when_broken(wrong):
    r = klg.check_grad(wrong)
    assert not r.ok
    assert any(not s.ok and "symbolic n" in s.name for s in r.steps)


def test_any_n_proves_the_score_mean_and_rejects_a_false_identity():
    i, j, p, total, delta = klg.i, klg.j, klg.p, klg.total, sp.KroneckerDelta
    r = sp.IndexedBase("r", real=True)
    good = d.verify("t", [klg.any_n("score mean", total(p[i] * (delta(i, j) - p[j])), 0, "")])
    assert good.ok and "reduces to 0 for every size" in good.steps[0].reason
    bad = d.verify("t", [klg.any_n("false", total(p[i] * r[i] * delta(i, j)), r[j], "")])
    assert not bad.ok


def test_kl_token_passes_and_pins_the_instance():
    r = klg.check_token()
    assert r.ok, r.summary()
    rtg, tok = klg.token_instance_errors()
    assert rtg == 0 and abs(float(tok) - 0.0360) < 5e-5


def test_kl_token_fails_for_the_per_token_loss():
    assert not klg.check_token("per_token").ok
