"""Test helpers: run the real program under the mocks, and read what it registered."""

from __future__ import annotations

import functools
from pathlib import Path

from tools.engine import SAME
from tools.harness import ProgramRun, Resource, reveal, run_program
from tools.mocks import PlaceholderMocks, command_env


@functools.cache
def shipped(stack: str) -> ProgramRun:
    """A shipped stack with its own config in the default mock world: one run per test process,
    shared. Read-only, and never for a test that patches the program's modules (it would see
    a run made before its patch): those call run_stack."""
    return run_stack(stack)


def run_stack(stack: str = "dev", mocks: PlaceholderMocks | None = None, **overrides: object) -> ProgramRun:
    """The whole program for a stack's real config; bare keys mean gpu-k8s:<key>."""
    return run_program(stack, {(k if ":" in k else f"gpu-k8s:{k}"): v for k, v in overrides.items()}, mocks=mocks)


TESTS_DIR = Path(__file__).resolve().parent
FIXTURES = TESTS_DIR / "fixtures"  # recorded answers (nvidia-smi, DCGM, Aliyun) and URN records

# Every resource depends on the lifecycle guard (components/lifecycle.py): the tests of who waits
# for whom look at the other dependencies.
GUARD = "gpu-k8s-lifecycle-guard"


def dependency_names(run: ProgramRun, name: str, *, types: str = "") -> set[str]:
    """The names of what ``name`` depends on (of types starting with ``types``), the guard left out."""
    by_urn = run.by_urn()
    return {
        by_urn[d].name
        for d in run.named(name).dependencies
        if d in by_urn and by_urn[d].type.startswith(types) and by_urn[d].name != GUARD
    }


def env_of(command: Resource) -> dict[str, str]:
    """The VAR=value environment of a remote command's rendered command line."""
    return command_env(reveal(command.inputs["create"]))


def kinds(run: ProgramRun, kind: str) -> list[Resource]:
    return [r for r in run.resources if r.type.startswith("kubernetes:") and r.inputs.get("kind") == kind]


# --- day-2 scenarios: the program run twice, the second against the first's state ----------
T0 = 1_800_000_000  # 2027-01-15T08:00:00Z, the first `pulumi up`
HOUR = 3600
IMAGE = "m-bp1ubuntu2204a"  # the newest Ubuntu image the mock cloud answers


def world(at: float = T0, **facts: object) -> PlaceholderMocks:
    """The mock cloud at a fixed clock, one zone and IMAGE as the newest image, unless ``facts`` say else."""
    return PlaceholderMocks(clock=lambda: at, **{"zones": ["cn-hangzhou-h"], "image": IMAGE, **facts})


def changes(run: ProgramRun) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (op, keys) of everything a second run changes (what is `same` left out)."""
    return {c.name: (c.op, c.keys) for c in run.changes if c.op != SAME}
