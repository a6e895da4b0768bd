"""Every markdown file named anywhere in the repository exists in it (docs/theory.md, docs/qwen3.md, ...).

report.md and sweep.md are outputs that `coupling llm run` / `coupling toy sweep` write; they are
the only names allowed without a file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = {"report.md", "sweep.md"}


def test_no_reference_to_a_missing_markdown_file():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    present = {Path(f).name for f in files if f.endswith(".md")} | {p.name for p in ROOT.rglob("*.md")}
    named = set()
    for f in files:
        path = ROOT / f
        if path.suffix in {".py", ".md", ".toml", ".txt", ".cfg", ".yaml", ".yml", ""} and path.is_file():
            try:
                named |= set(re.findall(r"\b[A-Za-z_][A-Za-z0-9_-]*\.md\b", path.read_text(errors="ignore")))
            except (OSError, UnicodeDecodeError):
                continue
    missing = sorted(named - present - GENERATED)
    assert not missing, missing
    assert {"theory.md", "qwen3.md"} <= present
