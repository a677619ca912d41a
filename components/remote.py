"""Run the shell scripts in components/scripts/ on a node over SSH (pure helpers + one factory).

Each step is one CopyToRemote (the script file) and one remote.Command that runs it as
``VAR='value' ... bash /opt/gpu-k8s/<script>``. Inputs are quoted with shlex.quote
(sshd may not accept ``environment``); secrets go on stdin, never on the command line.
A step's triggers hold the hash of its script, its inputs and the ids of the steps it
follows, so a changed script re-runs only that step and the steps after it.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import pulumi
import pulumi_command as command

SCRIPTS_DIR = Path(__file__).parent / "scripts"
REMOTE_DIR = "/opt/gpu-k8s"
_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def script_path(script: str) -> Path:
    path = SCRIPTS_DIR / script
    if not path.is_file():
        raise FileNotFoundError(f"no script {script} in {SCRIPTS_DIR}")
    return path


@cache
def script_hash(script: str) -> str:
    return hashlib.sha256(script_path(script).read_bytes()).hexdigest()


def render_env(env: Mapping[str, str]) -> str:
    """VAR='value' pairs, sorted and shell-quoted."""
    parts = []
    for key in sorted(env):
        if not key or key[0].isdigit() or set(key) - _ENV_NAME_OK:
            raise ValueError(f"bad environment variable name {key!r}")
        parts.append(f"{key}={shlex.quote(str(env[key]))}")
    return " ".join(parts)


def render_command(script: str, env: Mapping[str, str]) -> str:
    """The exact command line run on the node (what the plan shows)."""
    prefix = render_env(env)
    run = f"bash {REMOTE_DIR}/{script}"
    return f"{prefix} {run}" if prefix else run


def connection(
    host: pulumi.Input[str], private_key: pulumi.Input[str], *, dial_error_limit: int = 60
) -> command.remote.ConnectionArgs:
    """Root over SSH with the stack's key; retries cover boot and reboots (15 s per dial)."""
    return command.remote.ConnectionArgs(
        host=host,
        user="root",
        private_key=private_key,
        dial_error_limit=dial_error_limit,
        per_dial_timeout=15,
    )


def run_script(
    name: str,
    *,
    script: str,
    conn: command.remote.ConnectionArgs,
    env: Mapping[str, pulumi.Input[str]] | None = None,
    stdin: pulumi.Input[str] | None = None,
    after: Sequence[pulumi.Resource] = (),
    order_after: Sequence[pulumi.Resource] = (),
    parent: pulumi.Resource,
    secret_stdout: bool = False,
    timeout: str = "20m",
) -> command.remote.Command:
    """Copy ``script`` to the node and run it after ``after``; returns the Command.

    A re-run (replacement) of a step in ``after`` re-runs this one too; steps in
    ``order_after`` only order it (e.g. a worker's join must not re-run because the
    cluster-wide join token was refreshed for another node).

    ``stdin`` is always stored as a secret. With ``secret_stdout`` the output is a
    secret and nothing the script prints is logged.
    """
    env = dict(env or {})
    copy = command.remote.CopyToRemote(
        f"{name}-copy",
        connection=conn,
        source=pulumi.FileAsset(str(script_path(script))),
        remote_path=f"{REMOTE_DIR}/{script}",
        triggers=[script_hash(script)],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(after)),
    )
    create = pulumi.Output.all(**env).apply(lambda values: render_command(script, values)) if env else render_command(script, {})
    triggers: list[pulumi.Input[str]] = [
        script_hash(script),
        *[step.id for step in after if isinstance(step, command.remote.Command | command.local.Command)],
    ]
    return command.remote.Command(
        name,
        connection=conn,
        create=create,
        stdin=pulumi.Output.secret(stdin) if stdin is not None else None,
        triggers=triggers,
        logging=command.remote.Logging.NONE if secret_stdout else command.remote.Logging.STDOUT_AND_STDERR,
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=[copy, *after, *order_after],
            additional_secret_outputs=["stdout", "stderr"] if secret_stdout else None,
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
        ),
    )
