"""What a process pays before its first participant: the modules each entry point imports.

Every run, every `--workers` child and every Ray actor starts a Python process; its imports are CPU a
generator spends on nothing else (about a tenth of a one-minute video run's, before #24's work on them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Prints, at exit, the top-level packages among those below that the process imported.
_WATCH = "('pydantic', 'typer', 'rich')"
_REPORT = (
    "import atexit, sys; atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules "
    f"if m.split('.')[0] in {_WATCH}}})))"
)


def _imported(code: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-c", f"{_REPORT}\n{code}"], capture_output=True, text=True)
    return done.returncode, done.stdout.strip().splitlines()[-1], done.stderr


def test_the_run_path_does_not_import_pydantic() -> None:
    """Our configuration's rules are declared dataclasses (`lkswarm.fields`), and typer stays below 0.29,
    which coerces every option through a pydantic TypeAdapter: pydantic, its import and the models and
    adapters built on it, cost about 110 ms of CPU at every start of a run."""
    code, imported, _ = _imported("import lkswarm.cli.commands, lkswarm.app.runner, lkswarm.app.ray_actor")
    assert code == 0 and "pydantic" not in imported and "rich" not in imported  # rich: a quiet run prints nothing
    # The command line parses every option of `run` (the bad value is refused after parsing, before any I/O).
    code, imported, stderr = _imported(
        "import runpy, sys; sys.argv = ['lkswarm', 'run', '--participants', '0', '--duration', '5s', '--quiet']\n"
        "runpy.run_module('lkswarm', run_name='__main__', alter_sys=True)"
    )
    assert code == 2 and "participants: must be at least 1" in stderr
    assert "pydantic" not in imported


def test_a_worker_process_skips_the_command_line(tmp_path: Path) -> None:
    """`python -m lkswarm worker JOB` (how `--workers` starts each child) runs the job without typer or rich,
    about 40 ms of CPU less per worker; a bad job is still one line and exit 2."""
    job = tmp_path / "job.json"
    job.write_text("{}")
    code, imported, stderr = _imported(
        f"import runpy, sys; sys.argv = ['lkswarm', 'worker', {str(job)!r}]\n"
        "runpy.run_module('lkswarm', run_name='__main__', alter_sys=True)"
    )
    assert code == 2 and imported == "[]"
    assert stderr.strip().splitlines() == [
        f"lkswarm worker: {job} is not a job written by `lkswarm run --workers`: 'worker'"
    ]
