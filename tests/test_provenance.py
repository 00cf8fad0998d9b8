"""Every result file says what produced it: the ``provenance`` block."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from blendflag._runtime import provenance as prov
from blendflag._runtime.provenance import provenance
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "blendflag_version",
    "commit",
    "git_describe",
    "dirty",
    "command",
    "utc_time",
    "python",
    "packages",
    "cpu",
    "cores",
}


def test_block_has_every_key_and_is_json():
    block = provenance(["blendflag-shear", "bench"])
    assert set(block) == KEYS
    assert json.loads(json.dumps(block, allow_nan=False)) == block
    assert isinstance(block["blendflag_version"], str) and block["blendflag_version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", block["python"])
    assert block["cpu"] is None or isinstance(block["cpu"], str)
    assert block["cores"] is None or block["cores"] >= 1


def test_utc_time_parses_and_is_now():
    text = provenance([])["utc_time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text)
    when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert abs(datetime.now(timezone.utc) - when) < timedelta(minutes=1)


def test_packages_are_the_requirements_with_their_versions():
    from importlib import metadata

    packages = provenance([])["packages"]
    assert {"numpy", "galsim", "astropy", "sep", "keras"} <= set(packages)
    assert packages["numpy"] == metadata.version("numpy")  # a dependency: always there
    assert all(v is None or (isinstance(v, str) and v) for v in packages.values())
    tensorflow = {"tensorflow", "tensorflow-cpu"} & set(packages)
    assert tensorflow and any(packages[n] for n in tensorflow)


def test_command_is_recorded_from_argv():
    argv = ["/some/venv/bin/blendflag-shear", "evaluate", "--json", "my results.json"]
    command = provenance(argv)["command"]
    assert command == "blendflag-shear evaluate --json 'my results.json'"
    assert shlex.split(command) == ["blendflag-shear", "evaluate", "--json", "my results.json"]


def test_command_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["scripts/label_boundary.py", "--n", "20"])
    assert provenance()["command"] == "label_boundary.py --n 20"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_commit_of_this_checkout():
    block = provenance([])
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{40}", block["commit"])
    assert block["commit"] == head
    assert isinstance(block["git_describe"], str) and block["git_describe"]
    assert block["dirty"] is block["git_describe"].endswith("-dirty")


def test_no_git_gives_none(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git executable at all
    prov._git_state.cache_clear()  # read once per process: read again without git
    assert prov._git(ROOT, "rev-parse", "HEAD") is None
    block = provenance([])
    prov._git_state.cache_clear()
    assert block["commit"] is None and block["git_describe"] is None and block["dirty"] is None


def test_the_commit_is_read_when_the_run_starts(monkeypatch):
    """A commit made during a long run does not become its provenance."""
    prov._git_state.cache_clear()
    prov.record_start()
    started = provenance([])["commit"]
    monkeypatch.setattr(prov, "_git", lambda *a, **k: "f" * 40)  # a later HEAD
    assert provenance([])["commit"] == started
    prov._git_state.cache_clear()


def test_provenance_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from blendflag._runtime.provenance import provenance\n"
        "provenance()\n"
        "heavy = {'tensorflow', 'keras', 'galsim', 'numpy', 'astropy', 'sep', 'ngmix'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def _check_cli_block(block, argv):
    assert set(block) == KEYS
    assert block["command"] == shlex.join(["blendflag-shear", *map(str, argv)])


def test_evaluate_json_has_provenance(tmp_path, capsys, monkeypatch):
    out = tmp_path / "e.json"
    argv = ["evaluate", "--dataset", "cfis", "--n", "1", "--methods", "sextractor"]
    argv += ["--json", str(out), "--quiet"]
    # called in-process: the command is main's argv, not the outer program's
    monkeypatch.setattr(sys, "argv", ["outer-program", "--other"])
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    _check_cli_block(json.loads(out.read_text())["provenance"], argv)


def test_bench_json_has_provenance(tmp_path, capsys, monkeypatch):
    out = tmp_path / "b.json"
    argv = ["bench", "--quick", "--only", "detection", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", ["outer-program", "--other"])
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    _check_cli_block(json.loads(out.read_text())["provenance"], argv)


def test_installed_command_records_itself(tmp_path):
    exe = Path(sys.executable).parent / "blendflag-shear"
    if not exe.is_file():
        pytest.skip("blendflag-shear is not installed next to this interpreter")
    out = tmp_path / "e.json"
    argv = ["evaluate", "--dataset", "cfis", "--n", "1", "--methods", "sextractor"]
    argv += ["--json", str(out), "--quiet"]
    run = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    _check_cli_block(json.loads(out.read_text())["provenance"], argv)
