"""The ``coupling`` console script: a thin dispatcher to the subcommands each package owns.

    coupling verify ...      -> toy_models.verify.main    (theory's sympy checks + the toy numeric ones)
    coupling toy ...         -> toy_models.toy_cli.main
    coupling llm ...         -> llm_check.cli.main

Each target is imported only when its subcommand runs, so ``coupling verify`` never imports Flax.
Bad input (``theory.errors.InputError``) prints one line and exits 2; argparse errors also exit 2.
"""

from __future__ import annotations

import importlib.util
import sys

from theory.errors import InputError

# The modules of the [llm] extra; checked before `coupling llm` imports anything of llm_check.
LLM_EXTRA = ("flax", "safetensors", "tokenizers", "tqdm")

USAGE = """usage: coupling {verify,toy,llm} ...

  verify   check every claim of docs/theory.md, symbolically (sympy) and numerically (JAX)
  toy      analyze / explore / sweep tabular softmax instances
  llm      run / eval / sweep / sweep-lr: the Qwen3 confirmation runs (needs the [llm] extra)

Run `coupling SUBCOMMAND --help` for the options of each."""


def _target(name: str):
    if name == "verify":
        from toy_models.verify import main
    elif name == "toy":
        from toy_models.toy_cli import main
    elif name == "llm":
        missing = [m for m in LLM_EXTRA if importlib.util.find_spec(m) is None]
        if missing:
            raise InputError(f"`coupling llm` needs the llm extra ({', '.join(missing)} not "
                             "installed): pip install 'sft-rl-coupling[llm]'")
        from llm_check.cli import main
    else:
        return None
    return main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    try:
        target = _target(argv[0])
        if target is None:
            print(f"coupling: unknown subcommand {argv[0]!r}; choose from verify, toy, llm",
                  file=sys.stderr)
            return 2
        return int(target(argv[1:]) or 0)
    except InputError as e:
        print(f"coupling {argv[0]}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
