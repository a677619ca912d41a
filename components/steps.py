"""Run the shell scripts in components/scripts/ on a node over SSH (pure helpers + one factory).

Each step is one CopyToRemote (the rendered script) and one remote.Command that runs it as
``VAR='value' ... bash /opt/gpu-k8s/<script>``. Inputs are quoted with shlex.quote
(sshd may not accept ``environment``); secrets go on stdin, never on the command line.
Scripts source the shared helpers in scripts/lib/ when run in place (the tests); on the
node each step is one self-contained file, ``render_script(script)``, with the marked
``source ... # gpu-k8s:inline`` line replaced by the library's text.
A step's triggers hold the hash of its rendered script, the id of the instance it runs on,
and the ids of the steps it follows, so a changed script (or library) re-runs only the
steps that use it and the steps after them, and a replaced instance runs every step anew.
The copy's triggers hold the script hash and the instance id too: pulumi-command's
CopyToRemote copies again only when it is created or replaced, or when its asset or
remotePath changes (provider/pkg/provider/remote/copyController.go ``Update``: ``needCopy :=
news.hash() != olds.hash() || news.RemotePath != olds.RemotePath``). Without the instance id
a replaced instance would only change the copy's ``connection``, an update that copies
nothing, and the step would run ``bash /opt/gpu-k8s/<script>`` on a host that has no file.

The cluster checks (70, 80) can also run on the deployer (``run_local_script``): a local
Command ``VAR='value' ... bash components/scripts/local/with-kubeconfig.sh
components/scripts/<script>`` with the kubeconfig on stdin, for a managed control plane
(ACK) whose nodes are not reachable over SSH.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pulumi
import pulumi_command as command

SCRIPTS_DIR = Path(__file__).parent / "scripts"
REMOTE_DIR = "/opt/gpu-k8s"
INLINE_MARKER = "# gpu-k8s:inline"
# The line render_script replaces: source "$(dirname "${BASH_SOURCE[0]}")/lib/<name>.sh" # gpu-k8s:inline
# (and the "# shellcheck source=lib/<name>.sh" directive right above it, if present).
_INLINE_SOURCE = re.compile(
    r"^(?:# shellcheck source=(?P<directive>lib/[\w.-]+\.sh)\n)?"
    r'source "\$\(dirname "\$\{BASH_SOURCE\[0\]\}"\)/(?P<lib>lib/[\w.-]+\.sh)" ' + re.escape(INLINE_MARKER) + r"$",
    re.M,
)
_ENV_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def script_path(script: str) -> Path:
    path = SCRIPTS_DIR / script
    if not path.is_file():
        raise FileNotFoundError(f"no script {script} in {SCRIPTS_DIR}")
    return path


def _library_text(lib: str) -> str:
    """lib/<name>.sh without its shebang, wrapped in begin/end comments."""
    path = SCRIPTS_DIR / lib
    if not path.is_file():
        raise FileNotFoundError(f"no library {lib} in {SCRIPTS_DIR}")
    text = path.read_text()
    if text.startswith("#!"):
        text = text.partition("\n")[2]
    if not text.endswith("\n"):
        text += "\n"
    return f"# --- begin {lib} (inlined) ---\n{text}# --- end {lib} ---"


@cache
def render_script(script: str) -> str:
    """The script as it runs on the node: each marked ``source lib/...`` line inlined.

    Pure (reads only components/scripts/; cached like script_hash). A marked line that
    is not the expected ``source`` form, a ``# shellcheck source=`` directive naming
    another file, or a missing library raises instead of copying a script that would
    fail on the node.
    """

    def inline(match: re.Match[str]) -> str:
        lib = match["lib"]
        if match["directive"] not in (None, lib):
            raise ValueError(f"{script}: '# shellcheck source={match['directive']}' does not match the sourced {lib}")
        return _library_text(lib)

    raw = script_path(script).read_text()
    rendered, inlined = _INLINE_SOURCE.subn(inline, raw)
    if inlined != raw.count(INLINE_MARKER):
        raise ValueError(f"{script}: a line marked {INLINE_MARKER!r} is not the expected source line of a lib/*.sh")
    return rendered


@cache
def script_hash(script: str) -> str:
    """SHA-256 of the rendered script: a change to the script or a library it inlines."""
    return hashlib.sha256(render_script(script).encode()).hexdigest()


def render_env(env: Mapping[str, str]) -> str:
    """VAR='value' pairs, sorted and shell-quoted."""
    parts = []
    for key in sorted(env):
        if not key or key[0].isdigit() or set(key) - _ENV_NAME_OK:
            raise ValueError(f"bad environment variable name {key!r}")
        parts.append(f"{key}={shlex.quote(str(env[key]))}")
    return " ".join(parts)


def render_command(script: str, env: Mapping[str, str], remote_path: str | None = None) -> str:
    """The exact command line run on the node (what the plan shows)."""
    prefix = render_env(env)
    run = f"bash {remote_path or f'{REMOTE_DIR}/{script}'}"
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


@dataclass(frozen=True)
class Host:
    """Where a step runs: the SSH connection and the id of the instance behind it."""

    connection: command.remote.ConnectionArgs
    instance_id: pulumi.Input[str]


def host(
    public_ip: pulumi.Input[str], private_key: pulumi.Input[str], instance_id: pulumi.Input[str], *, dial_error_limit: int = 60
) -> Host:
    return Host(connection(public_ip, private_key, dial_error_limit=dial_error_limit), instance_id)


def copy_triggers(script: str, on: Host) -> list[pulumi.Input[str]]:
    """What replaces a step's copy, so that it copies again: a changed script, or a new instance."""
    return [script_hash(script), on.instance_id]


def run_script(
    name: str,
    *,
    script: str,
    on: Host,
    env: Mapping[str, pulumi.Input[str]] | None = None,
    stdin: pulumi.Input[str] | None = None,
    after: Sequence[pulumi.Resource] = (),
    order_after: Sequence[pulumi.Resource] = (),
    parent: pulumi.Resource,
    secret_stdout: bool = False,
    timeout: str = "20m",
    extra_triggers: Sequence[pulumi.Input[str]] = (),
    own_file: bool = False,
) -> command.remote.Command:
    """Copy ``script`` to the node and run it after ``after``; returns the Command.

    A re-run (replacement) of a step in ``after`` re-runs this one too; steps in
    ``order_after`` only order it (e.g. a worker's join must not re-run because the
    cluster-wide join token was refreshed for another node). ``extra_triggers`` re-run the
    step (a replacement) when they change, e.g. the list of images a pull step fetches.
    A new instance behind ``on`` replaces the copy and the step (module docstring).
    ``own_file``: the script is copied to ``<name>.sh``, not ``<script>``: for a script that
    several steps run on one host (a join token per worker, on the control plane), so that one
    step's copy never rewrites the file while another step's bash is reading it.

    ``stdin`` is always stored as a secret. With ``secret_stdout`` the output is a
    secret and nothing the script prints is logged.
    """
    env = dict(env or {})
    remote_path = f"{REMOTE_DIR}/{name}.sh" if own_file else f"{REMOTE_DIR}/{script}"
    copy = command.remote.CopyToRemote(
        f"{name}-copy",
        connection=on.connection,
        source=pulumi.StringAsset(render_script(script)),
        remote_path=remote_path,
        triggers=copy_triggers(script, on),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(after)),
    )
    create = (
        pulumi.Output.all(**env).apply(lambda values: render_command(script, values, remote_path))
        if env
        else render_command(script, {}, remote_path)
    )
    triggers: list[pulumi.Input[str]] = [
        *copy_triggers(script, on),
        *[step.id for step in after if isinstance(step, command.remote.Command | command.local.Command)],
        *extra_triggers,
    ]
    return command.remote.Command(
        name,
        connection=on.connection,
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


LOCAL_RUNNER = "local/with-kubeconfig.sh"
CHECK_INPUTS = "GPU_K8S_CHECK_INPUTS"
_SCRIPTS_REL = "components/scripts"  # relative to the project directory


def local_script_command(script: str, env: Mapping[str, str]) -> str:
    """``VAR='value' ... bash components/scripts/<script>``: a deployer-side script run in place.

    Paths are relative: Pulumi runs a local command in the project directory, and an absolute
    path would differ per machine (a changed ``create`` re-runs the step).
    """
    script_path(script)  # the script exists
    prefix = render_env(env)
    run = f"bash {_SCRIPTS_REL}/{script}"
    return f"{prefix} {run}" if prefix else run


def render_local_command(script: str, env: Mapping[str, str]) -> str:
    """The command line run on the deployer: ``VAR='value' ... bash components/scripts/local/
    with-kubeconfig.sh components/scripts/<script>``."""
    script_path(script)  # the script exists
    return f"{local_script_command(LOCAL_RUNNER, env)} {_SCRIPTS_REL}/{script}"


def _check_inputs_digest(script: str, env: Mapping[str, str]) -> str:
    """12 hex of what a deployer-side check verifies: its script (and runner) and its inputs."""
    text = json.dumps([script_hash(script), script_hash(LOCAL_RUNNER), sorted(env.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def run_local_script(
    name: str,
    *,
    script: str,
    kubeconfig: pulumi.Input[str],
    env: Mapping[str, pulumi.Input[str]] | None = None,
    after: Sequence[pulumi.Resource] = (),
    parent: pulumi.Resource,
    timeout: str = "20m",
    extra_triggers: Sequence[pulumi.Input[str]] = (),
) -> command.local.Command:
    """Run a cluster check (70/80) on the deployer against the cluster of ``kubeconfig``.

    For a managed control plane (ACK): no SSH to any node; the check reads the cluster
    through the Kubernetes API with the deployer's ``kubectl``. ``local/with-kubeconfig.sh``
    writes the kubeconfig (stdin, a secret) to a 0600 temp file, exports KUBECONFIG, runs
    the script and removes the file. The scripts run in place in the checkout, so their
    ``source .../lib/common.sh # gpu-k8s:inline`` line works unrendered (nothing is copied).

    Triggers like run_script: the hash of the script (the lib included) and of
    with-kubeconfig.sh, the ids of the ``after`` commands (a re-run of one re-runs this),
    and ``extra_triggers``. The check's exit status fails the command (70: 1, 80: 2/3).
    """
    env = dict(env or {})
    # What the check verifies, as a digest beside its inputs (local/with-kubeconfig.sh): an update
    # that changes only the kubeconfig reuses the last result instead of asking the cluster again.
    create = pulumi.Output.all(**env).apply(
        lambda values: render_local_command(script, {**values, CHECK_INPUTS: _check_inputs_digest(script, values)})
    )
    triggers: list[pulumi.Input[str]] = [
        script_hash(script),
        script_hash(LOCAL_RUNNER),
        *[step.id for step in after if isinstance(step, command.remote.Command | command.local.Command)],
        *extra_triggers,
    ]
    return command.local.Command(
        name,
        create=create,
        stdin=pulumi.Output.secret(kubeconfig),
        triggers=triggers,
        logging=command.local.Logging.STDOUT_AND_STDERR,
        add_previous_output_in_env=True,  # the last result, for an update that changes only the kubeconfig
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(after),
            custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout),
            # No ignore_changes on stdin: the engine would then keep the old kubeconfig even for a
            # replacement (the ignored old value is the input whenever there is a previous state,
            # pulumi step_generator.go processIgnoreChanges; reference §5), so after ACK replaced
            # the cluster the check would read a deleted cluster. A new credential (another
            # engineer's, ACK issues one per RAM user) re-runs the check, which takes seconds on
            # a cluster whose GPUs are already allocatable and whose test pods have finished.
        ),
    )
