"""The theory layer: sympy derivations of every claim in docs/theory.md, and their NumPy closed forms.

- ``theory.derivation``: the step-checking engine;
- ``theory.softmax``, ``sft_then_rl``, ``rl_then_sft``, ``counterexamples``, ``landscape``,
  ``estimators``: one derivation per claim ID;
- ``theory.catalogue``: ``CLAIMS`` in docs/theory.md order, with labels and ``CheckResult``;
- ``theory.closed_forms``: float64 functions other layers call (no sympy needed);
- ``theory.errors``: ``InputError``.

This package imports neither ``toy_models`` nor ``llm_check``.
"""
