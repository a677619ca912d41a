"""The Makefile: `make help` names every target; `make kubeconfig` / `make ssh-key` leave no
empty or partial secret file; `make gpu-top` needs a kubeconfig. Each make runs in a copy of
the Makefile with a stub `pulumi` on PATH, and `-o install` (no virtualenv is built)."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tools.harness import ROOT

MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="no make on PATH")


def phony() -> set[str]:
    lines = re.findall(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M)
    return {target for line in lines for target in line.split()}


def test_make_help_names_every_phony_target():
    shown = subprocess.run([MAKE, "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True).stdout
    assert set(re.findall(r"\bmake ([a-z][a-z-]*)", shown)) == phony()


@pytest.fixture
def project(tmp_path):
    """A copy of the Makefile beside the real tools/, and a bin/ holding only a stub pulumi."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "tools").symlink_to(ROOT / "tools")
    (tmp_path / "bin").mkdir()
    return tmp_path


def stub_pulumi(project: Path, script: str) -> None:
    path = project / "bin" / "pulumi"
    path.write_text(f"#!/bin/bash\n{script}\n")
    path.chmod(0o755)


def make(project: Path, *targets: str, **env: str) -> subprocess.CompletedProcess:
    environ = {"PATH": str(project / "bin"), "HOME": str(project), **env}
    argv = [MAKE, "-s", "-C", str(project), "-o", "install", *targets, "STACK=dev", f"PY={sys.executable}"]
    return subprocess.run(argv, capture_output=True, text=True, env=environ, check=False)


def leftovers(project: Path) -> set[str]:
    return {p.name for p in project.iterdir()} - {"Makefile", "tools", "bin"}


@pytest.mark.parametrize(
    "script,reason",
    [
        (None, "the pulumi CLI is not on PATH"),
        ("echo \"error: no stack named 'dev' found\" >&2; exit 255", "pulumi stack export: error: no stack named 'dev' found"),
        ("exit 0", "pulumi stack export printed no state"),  # no output, nothing exported
    ],
    ids=["no-pulumi", "no-stack", "no-output"],
)
@pytest.mark.parametrize("target,file", [("kubeconfig", "kubeconfig"), ("ssh-key", "gpu-k8s.pem")])
def test_no_value_leaves_no_file_and_one_line(project, script, reason, target, file):
    if script is not None:
        stub_pulumi(project, script)
    proc = make(project, target)
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith(f"make {target}: no ") and reason in proc.stderr, proc.stderr
    assert "make up STACK=dev" in proc.stderr and proc.stderr.count("\n") == 2  # ours, then make's "Error 2"
    assert leftovers(project) == set()


def test_kubeconfig_is_written_whole_and_kept_when_a_later_read_fails(project):
    stub_pulumi(project, '[ "$2" = output ] && printf "apiVersion: v1\\nkind: Config\\n"')
    proc = make(project, "kubeconfig")
    assert proc.returncode == 0 and proc.stdout == f"export KUBECONFIG={project}/kubeconfig\n", proc.stderr
    written = project / "kubeconfig"
    assert written.read_text() == "apiVersion: v1\nkind: Config\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    stub_pulumi(project, "exit 1")
    assert make(project, "kubeconfig").returncode != 0
    assert written.read_text() == "apiVersion: v1\nkind: Config\n" and leftovers(project) == {"kubeconfig"}


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_gpu_top_without_a_kubeconfig_is_one_line(project, content):
    if content is not None:
        (project / "kubeconfig").write_text(content)
    proc = make(project, "gpu-top")  # with no KUBECONFIG in its environment
    assert proc.returncode != 0 and proc.stdout == ""
    assert proc.stderr.startswith("make gpu-top: no kubeconfig: run make kubeconfig STACK=dev first"), proc.stderr


EXPORT_WITH_BUILDER = (
    '{"deployment": {"resources": ['
    '{"urn": "urn:pulumi:dev::gpu-k8s::alicloud:ecs/instance:Instance::gpu-0-instance",'
    ' "type": "alicloud:ecs/instance:Instance"},'
    '{"urn": "urn:pulumi:dev::gpu-k8s::gpu-k8s:bake:NodeImageBake$gpu-k8s:node:Node$alicloud:ecs/instance:Instance::'
    'bake-tesla-32ca19e3-instance", "type": "alicloud:ecs/instance:Instance"}]}}'
)
NO_RESOURCES = '{"deployment": {"resources": []}}'


def stub_stack(project: Path, after_first_up: str, first_up_rc: int = 0) -> None:
    """A stub pulumi whose first `up` leaves ``after_first_up`` as the state, a later one none."""
    (project / "components").symlink_to(ROOT / "components")  # tools.baked_images imports the product's
    (project / "after-first-up.json").write_text(after_first_up)
    (project / "after-next-up.json").write_text(NO_RESOURCES)
    stub_pulumi(
        project,
        # bash built-ins only: the stub's PATH holds nothing else
        f'cd {project}; echo "$*" >> calls\n'
        'if [ "$1" = up ]; then if [ -e state.json ]; then echo "$(<after-next-up.json)" > state.json; '
        f'else echo "$(<after-first-up.json)" > state.json; exit {first_up_rc}; fi; fi\n'
        'if [ "$1 $2" = "stack export" ]; then echo "$(<state.json)"; fi',
    )


def ups(project: Path) -> list[str]:
    return [line for line in (project / "calls").read_text().splitlines() if line.startswith("up ")]


@pytest.mark.parametrize("builder", [True, False], ids=["baked", "stock"])
def test_make_up_runs_the_up_that_deletes_a_bake_builder(project, builder):
    """The `up` that bakes cannot delete its builder (it finds the image only on the next run): make up runs it."""
    stub_stack(project, EXPORT_WITH_BUILDER if builder else NO_RESOURCES)
    proc = make(project, "-o", "stack", "up")
    assert proc.returncode == 0, proc.stderr
    if builder:
        assert ups(project) == ["up -s dev", "up -s dev"]
        assert "its builder(s) bake-tesla-32ca19e3-instance bill as GPU nodes" in proc.stdout
    else:
        assert ups(project) == ["up -s dev"] and proc.stdout == ""


def test_a_failed_up_names_the_builders_it_left_and_keeps_its_exit_status(project):
    stub_stack(project, EXPORT_WITH_BUILDER, first_up_rc=255)
    proc = make(project, "-o", "stack", "up")
    assert proc.returncode != 0 and ups(project) == ["up -s dev"]
    assert "bake builder(s) bake-tesla-32ca19e3-instance still bill as GPU nodes" in proc.stderr


def test_an_unreadable_state_is_said_not_skipped(project):
    stub_stack(project, NO_RESOURCES)
    stub_pulumi(project, '[ "$1" = up ] && exit 0; echo "error: no stack named dev" >&2; exit 255')
    proc = make(project, "-o", "stack", "up")
    assert proc.returncode == 0
    assert "could not read stack dev's state to look for a bake builder (error: no stack named dev)" in proc.stderr
