"""Start-up stays light: importing blendflag, building the plugin manager and
``blendflag-shear --help`` import neither TensorFlow nor GalSim.

Each case runs in a fresh interpreter (``python -c``), since this test process
has long imported both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("tensorflow", "keras", "galsim")

REPORT = (
    "import json, sys; "
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
)

CASES = {
    "import blendflag": "import blendflag",
    "plugin manager": "from blendflag.plugins import get_plugin_manager; get_plugin_manager()",
    "blendflag-shear --help": (
        "from blendflag.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_no_heavy_imports(case):
    code = CASES[case] + "\n" + REPORT.format(heavy=set(HEAVY))
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert not loaded, (
        f"{case} imports {', '.join(loaded)}; find the culprit with "
        f"python -X importtime -c {CASES[case]!r}"
    )
