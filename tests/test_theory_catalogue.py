"""The catalogue: every docs/theory.md claim ID, in order, with docs/theory.md's label; failures are caught."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from theory import catalogue
from theory.catalogue import CheckResult, Claim

THEORY_IDS = (
    "softmax.fisher", "softmax.pg", "thm31.identity", "thm31.c1", "thm31.beta", "thm31.local", "thm31.robust",
    "threshold.kl", "thm41.gibbs", "thm41.local", "thm41.argmax", "thm41.pinsker", "thm41.paper", "thm41.repaired",
    "pl.rate", "pl.displacement", "pl.degradation", "pl.duration", "pl.threshold",
    "spectral.kantorovich", "spectral.topk", "grpo.baseline", "grpo.onpolicy", "kl.k3",
    "kl.grad", "kl.token", "grpo.fixedpoint", "thm31.path",
)
LABELS = {
    "thm31.identity": "paper", "thm31.c1": "paper", "thm31.beta": "corrected", "thm31.local": "corrected",
    "threshold.kl": "reconstructed", "thm41.gibbs": "corrected", "thm41.local": "corrected",
    "thm41.argmax": "corrected", "thm41.pinsker": "corrected", "thm41.paper": "refuted",
    **{i: "reconstructed" for i in THEORY_IDS if i.startswith(("pl.", "spectral."))},
    **{i: "standard" for i in ("softmax.fisher", "softmax.pg", "grpo.baseline", "grpo.onpolicy", "kl.k3",
                               "kl.grad", "kl.token")},
    "grpo.fixedpoint": "extension", "thm31.path": "extension",
    "thm31.robust": "extension", "thm41.repaired": "corrected",
}


def test_ids_labels_and_order():
    assert catalogue.IDS == THEORY_IDS
    assert {c.id: c.label for c in catalogue.CLAIMS} == LABELS
    assert all(c.label in catalogue.LABELS for c in catalogue.CLAIMS)


def test_a_raising_derivation_is_a_fail_not_a_crash():
    def broken():
        raise ZeroDivisionError("boom")
    result = catalogue.as_check(broken)
    assert result == CheckResult("fail", "ZeroDivisionError: boom")


def test_claims_are_frozen():
    with pytest.raises(Exception):
        catalogue.CLAIMS[0].id = "x"  # type: ignore[misc]
    assert isinstance(catalogue.claim("kl.k3"), Claim)
    with pytest.raises(KeyError):
        catalogue.claim("no.such")


def test_a_cheap_claim_runs_through_the_catalogue():
    result = catalogue.claim("pl.duration").symbolic()
    assert result.status == "pass", result.detail


def test_theory_imports_neither_toy_models_nor_llm_check():
    root = Path(catalogue.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not re.match(r"(toy_models|llm_check)\b", name), f"{path.name} imports {name}"


def test_every_claim_says_what_it_proves():
    assert set(catalogue.PROVED_FOR) == set(catalogue.IDS)
    assert all(c.proved_for == catalogue.PROVED_FOR[c.id] for c in catalogue.CLAIMS)
    any_size = [c.id for c in catalogue.CLAIMS if c.proved_for.startswith("any")]
    assert len(any_size) >= 12, any_size


def test_pl_threshold_is_sufficient_not_iff():
    assert " iff " not in catalogue.claim("pl.threshold").title
    readme = (Path(catalogue.__file__).parents[1] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `pl.threshold`"))
    assert " iff " not in row


def test_sampled_steps_are_reported_and_proved_inequalities_are_not_sampled():
    assert catalogue.claim("pl.displacement").symbolic().sampled          # still sampled, and says so
    # docs/theory.md §8: the inequalities with a short proof are proved, none of their steps sampled.
    for claim_id in ("thm31.c1", "thm31.beta", "thm31.local", "thm41.gibbs", "kl.k3", "threshold.kl",
                     "spectral.kantorovich", "spectral.topk", "thm41.pinsker", "thm41.argmax"):
        result = catalogue.claim(claim_id).symbolic()
        assert result.status == "pass" and result.sampled == (), (claim_id, result.sampled)


def test_docs_state_exactly_what_each_claim_proves():
    """docs/theory.md §9 repeats proved_for for every claim (so the docs say no more than the checks)."""
    text = (Path(catalogue.__file__).parents[1] / "docs" / "theory.md").read_text()
    section = text[text.index("## §9"):]
    for c in catalogue.CLAIMS:
        assert f"| {c.id} | {c.label} | {c.proved_for.replace('|', '∣')} |" in section, c.id
