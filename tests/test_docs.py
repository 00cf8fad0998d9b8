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
