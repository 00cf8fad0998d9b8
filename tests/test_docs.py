"""The README's two set-up commands are what CI runs, verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_has_the_two_setup_commands():
    install, tests = readme_commands()
    assert install.startswith("python3 -m venv .venv") and "blendflag-shear compare" in install
    assert tests.endswith("pytest") and '".[test]"' in tests


def test_ci_runs_them_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_commands():
        assert command in ci


def test_readme_is_at_most_300_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"


def test_every_results_file_is_in_the_index():
    results = ROOT / "docs" / "results"
    index = (results / "INDEX.md").read_text()
    files = [p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()]
    missing = [f for f in files if f != "INDEX.md" and f"`{f}`" not in index]
    assert files and not missing, f"docs/results/INDEX.md does not list {missing}"
