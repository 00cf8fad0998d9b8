"""Running an external program (SExtractor, PSFEx): one runner, one kind of error.

Every binary blendflag calls runs through :func:`run_tool`: its output is
captured, a time limit applies, and a failure becomes one
:class:`~blendflag.errors.BlendflagError` line with the program's last message.
"""

from __future__ import annotations

import subprocess

from blendflag.errors import BlendflagError


def run_tool(cmd: list, cwd, what: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; return the finished process.

    Parameters
    ----------
    cmd : list of str
        The program and its arguments.
    cwd : path-like
        Working directory.
    what : str
        The program's name in messages (``SExtractor``, ``PSFEx``).
    timeout : float
        Seconds allowed.

    Raises
    ------
    BlendflagError
        The program did not finish within ``timeout`` seconds, or exited
        with a non-zero code (its last line of standard error is quoted).
    """
    try:
        proc = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise BlendflagError(f"{what} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BlendflagError(f"{what} failed (exit {proc.returncode}): {last}")
    return proc
