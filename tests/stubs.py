"""Stub commands on PATH for behavioural script tests.

Each stub appends its argv to a call log (NUL-separated arguments, one record per call,
written by bash itself so a stub costs no interpreter start-up), may print fixed stdout,
run a small bash body, and exits with a chosen code. ``STUB_STATE`` is a
scratch directory stubs can use to remember things between calls (e.g. "the driver is
installed now"), so a second run of a script can be checked for doing nothing twice.
Scripts under test see ``GPU_K8S_ROOT`` and must prefix every host path with it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

_END_OF_CALL = "\x1e"  # record separator: ends each call's NUL-separated argv in the log
SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "components" / "scripts"
# Real tools the scripts may use as-is; everything else must be stubbed.
PASSTHROUGH = (
    "bash",
    "sh",
    "cat",
    "grep",
    "sed",
    "awk",
    "tr",
    "cut",
    "head",
    "tail",
    "sort",
    "uniq",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "chmod",
    "touch",
    "dirname",
    "basename",
    "env",
    "printf",
    "echo",
    "tee",
    "wc",
    "date",
    "sleep",
    "mktemp",
    "readlink",
    "stat",
    "cmp",
    "diff",
    "sha256sum",
    "base64",
    "id",
    "true",
    "false",
    "test",
    "xargs",
    "seq",
    "paste",
    "comm",
    "timeout",
    "flock",  # lib/common.sh apt_get: one apt lock per node
    "find",
    "realpath",
    "od",
    "python3",
)


class StubBin:
    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "bin"
        self.state = tmp_path / "state"
        self.root = tmp_path / "root"
        self.log = tmp_path / "calls.log"
        for d in (self.dir, self.state, self.root):
            d.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        for tool in PASSTHROUGH:
            real = _which(tool)
            if real:
                (self.dir / tool).symlink_to(real)

    def add(self, name: str, *, stdout: str = "", exit_code: int = 0, body: str = "") -> StubBin:
        """Stub ``name``: log argv, run ``body`` (bash, may use "$@" and $STUB_STATE), print stdout, exit."""
        path = self.dir / name
        if path.is_symlink() or path.exists():
            path.unlink()
        path.write_text(
            "#!/bin/bash\n"
            f"printf '%s\\0' {shlex.quote(name)} \"$@\" $'\\x1e' >> {shlex.quote(str(self.log))}\n"
            f"{body}\n" + (f"printf '%s' {shlex.quote(stdout)}\n" if stdout else "") + f"exit {exit_code}\n"
        )
        path.chmod(0o755)
        return self

    def calls(self, name: str | None = None) -> list[list[str]]:
        rows: list[list[str]] = []
        row: list[str] = []
        for field in self.log.read_bytes().decode("utf-8", "replace").split("\0")[:-1]:
            if field == _END_OF_CALL:
                rows.append(row)
                row = []
            else:
                row.append(field)
        return [r for r in rows if name is None or r[0] == name]

    def called(self, name: str, *needles: str) -> bool:
        """Whether ``name`` was called with all of ``needles`` among its arguments."""
        return any(all(n in r[1:] for n in needles) for r in self.calls(name))

    def clear(self) -> None:
        self.log.write_text("")

    def run(
        self, script: str, env: dict[str, str] | None = None, stdin: str = "", timeout: int = 60
    ) -> subprocess.CompletedProcess:
        """Run components/scripts/<script> with only the stubs (and passthrough tools) on PATH."""
        full_env = {
            "PATH": str(self.dir),
            "HOME": str(self.state),
            "STUB_STATE": str(self.state),
            "GPU_K8S_ROOT": str(self.root),
            "LANG": "C.UTF-8",
            **(env or {}),
        }
        return subprocess.run(
            ["bash", str(SCRIPTS_DIR / script)],
            input=stdin,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _which(tool: str) -> str | None:
    if tool == "python3":
        return sys.executable
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        candidate = Path(d) / tool
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None
