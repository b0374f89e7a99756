"""The `longmix` command line from tests: in-process through typer's CliRunner (`cli`), the way almost every
test runs it, and one helper to assert a mistake's one-line error (`one_line_error`).

`cli` returns what a real process would give (exit code, stdout, stderr) plus the exception the command
raised, so a test reads the same either way. Only tests that need a real process (kill -9 and resume,
signals, torchrun ranks, a Ray cluster, the exit path itself) start one, with ``LONGMIX`` from conftest.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from longmix.cli.app import app, storage_fault
from longmix.core.errors import UserError

WIDE = {"COLUMNS": "200"}  # rich wraps at 80 columns when it cannot ask a terminal; no test line is that long


@dataclass
class CliRun:
    """One `longmix ...` run: what `main()` would have printed and returned, and the exception (if any)."""

    returncode: int
    stdout: str
    stderr: str
    exception: BaseException | None


class _StderrNow(logging.StreamHandler):
    """Log records to whatever sys.stderr is at the time (CliRunner's capture while a command runs), formatted
    as `main()`'s `logging.basicConfig` does, so logged warnings land in the run's stderr as in a process."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def cli(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None,
        cwd: Path | None = None) -> CliRun:
    """Run `longmix *args` in this process. A UserError (or a write fault) becomes what `main()` makes of it:
    `error: <message>` on stderr and the error's exit code; any other exception is a crash, exit 1 with its
    traceback on stderr, as the real process would show."""
    root = logging.getLogger()
    handler = _StderrNow()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if "-v" in args or "--verbose" in args else logging.INFO)
    try:
        with contextlib.chdir(cwd) if cwd else contextlib.nullcontext():
            res = CliRunner().invoke(app, [str(a) for a in args], env={**WIDE, **(env or {})}, input=input)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    exc, code, stderr = res.exception, res.exit_code, res.stderr
    if isinstance(exc, SystemExit):
        exc = None
    elif isinstance(exc, UserError):
        code, stderr = exc.exit_code, stderr + f"error: {exc}\n"
    elif isinstance(exc, OSError) and storage_fault(exc) is not None:
        code, stderr = 2, stderr + f"error: {storage_fault(exc)}\n"
    elif exc is not None:
        stderr += "".join(traceback.format_exception(exc))
    return CliRun(code, res.stdout, stderr, exc)


def one_line_error(run: CliRun, *says: str, alone: bool = True) -> str:
    """Assert a run failed on a UserError the user can fix: exit 2, one line on stderr that starts with
    `error: ` and contains each of ``says``; with ``alone``, nothing else on stderr (not even progress lines).
    A crash (any other exception, exit 1) does not pass. Returns the message."""
    assert isinstance(run.exception, UserError), f"not a UserError: {run.exception!r}\n{run.stderr[-3000:]}"
    message = str(run.exception)
    assert run.returncode == 2, (run.returncode, message)
    assert "\n" not in message.strip(), message
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert lines[-1:] == [f"error: {message}"] and (len(lines) == 1 or not alone), run.stderr[-3000:]
    for s in says:
        assert s in message, message
    return message

