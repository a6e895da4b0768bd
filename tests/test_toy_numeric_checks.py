"""The numeric column of ``coupling verify``: every claim ID, real passes, and real failures when
the code a check guards is broken."""

from __future__ import annotations

import pytest

from theory.catalogue import CLAIMS, CheckResult
from toy_models import coupling_sft_rl, margins, numeric_checks
from toy_models.numeric_checks import NUMERIC_CHECKS


def test_keys_are_exactly_the_claim_ids_in_order():
    assert list(NUMERIC_CHECKS) == [c.id for c in CLAIMS]


@pytest.mark.parametrize("claim", ["softmax.pg", "kl.k3"])
def test_cheap_checks_pass(claim):
    res = NUMERIC_CHECKS[claim]()
    assert isinstance(res, CheckResult) and res.status == "pass", res.detail


def test_refuted_claim_passes_by_reproducing_and_finding_counterexamples():
    res = NUMERIC_CHECKS["thm41.paper"]()
    assert res.status == "pass", res.detail
    assert "0.7376/0.7630/0.7921" in res.detail and "explore found a counterexample" in res.detail


def test_a_broken_closed_form_fails_its_check(monkeypatch):
    # C1 off by a factor: the margins and the trainer comparison must both catch it
    real = coupling_sft_rl.c1_closed_form
    monkeypatch.setattr(coupling_sft_rl, "c1_closed_form", lambda inst: 1.01 * real(inst))
    res = NUMERIC_CHECKS["thm31.c1"]()
    assert res.status == "fail" and "FAIL" in res.detail


@pytest.mark.slow
def test_a_broken_series_fails_thm31_beta(monkeypatch):
    def wrong(inst):  # κ₃/3 instead of κ₃/6
        _, var, k3 = coupling_sft_rl.cumulants(inst.expert, inst.reward)
        return (inst.q * (var / (2 * inst.beta**2) + k3 / (3 * inst.beta**3))).sum()
    monkeypatch.setattr(coupling_sft_rl, "c1_large_beta_series", wrong)
    assert NUMERIC_CHECKS["thm31.beta"]().status == "fail"


@pytest.mark.slow
def test_every_check_passes():
    failed = {k: r.detail for k, r in ((k, f()) for k, f in NUMERIC_CHECKS.items()) if r.status != "pass"}
    assert not failed


def test_margin_table_covers_the_same_ids():
    assert set(margins.MARGINS) == set(NUMERIC_CHECKS)
    assert numeric_checks.N_RANDOM >= 32
