"""make gpu-top: Prometheus / exporter answers -> one table row per GPU per node."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import FIXTURES as TESTS_FIXTURES

from tools import gpu_top
from tools.gpu_top import GpuTopError

FIXTURES = TESTS_FIXTURES / "dcgm"
# README.md "GPU metrics" shows this table: keep them in step.
EXPECTED_TABLE = """\
NODE     GPU  MODEL     UTIL  MEMORY USED / TOTAL  TEMP   POWER
train-0  0    Tesla T4  97 %    12869 / 15360 MiB  61 C  68.6 W
train-1  0    Tesla T4   0 %        1 / 15360 MiB  34 C       -
infer-0: vGPU guest, no exporter (DCGM does not support vGPU guests); use nvidia-smi on the node
"""


def _prometheus_answer() -> dict:
    return json.loads((FIXTURES / "prometheus-query.json").read_text())


def test_prometheus_answer_becomes_the_table():
    rows = gpu_top.gpu_rows(gpu_top.parse_prometheus(_prometheus_answer()))
    assert gpu_top.format_table(rows, ["infer-0"]) == EXPECTED_TABLE


def test_readme_documents_the_tested_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert EXPECTED_TABLE in readme


def test_memory_total_is_used_free_and_reserved():
    (row, _) = gpu_top.gpu_rows(gpu_top.parse_prometheus(_prometheus_answer()))
    assert row.values[gpu_top.FB_USED] == 12869 and row.memory_total == 12869 + 2131 + 360


def test_exporter_page_gives_the_same_row_as_prometheus():
    direct = gpu_top.gpu_rows(gpu_top.parse_exposition((FIXTURES / "exporter-t4.txt").read_text()))
    via_prometheus = gpu_top.gpu_rows(gpu_top.parse_prometheus(_prometheus_answer()))
    assert direct == via_prometheus[:1]


def test_nvidia_readme_lines_parse_with_the_blank_sentinel():
    samples = gpu_top.parse_exposition((FIXTURES / "readme-excerpt.txt").read_text())
    assert [s.name for s in samples] == ["DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_MEMORY_TEMP"]
    assert samples[0].labels == {
        "gpu": "0",
        "UUID": "GPU-604ac76c-d9cf-fef3-62e9-d92044ab6e52",
        "container": "",
        "namespace": "",
        "pod": "",
    }
    assert [s.value for s in samples] == [139, 405, None]  # 9223372036854775794: not supported


@pytest.mark.parametrize(
    ("labels", "node"),
    [
        ({"kubernetes_node": "a", "Hostname": "b", "instance": "c"}, "a"),
        ({"Hostname": "b", "instance": "c"}, "b"),  # the exporter's label up to 4.8.2
        ({"hostname": "b2", "instance": "c"}, "b2"),  # renamed after 4.8.2
        ({"instance": "10.0.0.1:9400"}, "10.0.0.1:9400"),
    ],
)
def test_node_name_precedence(labels, node):
    assert gpu_top.node_of(labels) == node


def test_rows_sort_by_node_then_gpu_index_and_skip_other_metrics():
    text = "\n".join(
        f'{name}{{gpu="{gpu}",Hostname="{node}"}} {value}'
        for name, gpu, node, value in [
            ("DCGM_FI_DEV_GPU_UTIL", "10", "n1", 1),
            ("DCGM_FI_DEV_GPU_UTIL", "2", "n1", 2),
            ("DCGM_FI_DEV_GPU_UTIL", "0", "n0", 3),
            ("DCGM_FI_DEV_SM_CLOCK", "0", "n9", 4),
        ]
    )
    rows = gpu_top.gpu_rows(gpu_top.parse_exposition(text))
    assert [(r.node, r.gpu) for r in rows] == [("n0", "0"), ("n1", "2"), ("n1", "10")]
    assert "-" in gpu_top.format_table(rows).splitlines()[1]  # no memory/temp/power: dashes


def test_empty_answer_says_why():
    text = gpu_top.format_table([])
    assert "no GPU samples" in text


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "bad_data: parse error"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "expected a vector"),
    ],
)
def test_prometheus_errors_are_one_line(payload, message):
    with pytest.raises(GpuTopError, match=message):
        gpu_top.parse_prometheus(payload)


def test_query_path_goes_through_the_service_proxy():
    path = gpu_top.prometheus_path(gpu_top.PROMETHEUS, gpu_top.query())
    assert path.startswith("/api/v1/namespaces/gpu-metrics/services/prometheus:web/proxy/api/v1/query?query=")
    assert " " not in path and '"' not in path and "|" not in path
    with pytest.raises(GpuTopError, match="NAMESPACE/SERVICE:PORT"):
        gpu_top.prometheus_path("prometheus", "up")


# --- the command, with a stub kubectl ---------------------------------------------------------


def _stub_kubectl(tmp_path: Path, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "kubectl"
    stub.write_text(f'#!/bin/bash\necho "$*" >> "{tmp_path}/calls"\n{body}\n')
    stub.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}


def _run(monkeypatch, capsys, env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    for key in ("PATH", "KUBECONFIG", "HOME"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code = gpu_top.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


EXPECTED_ALERTS = """\
GPU alerts firing: 1 (1 pending: GpuExporterDown)
ALERT        NODE     GPU  ACTIVE SINCE             SUMMARY
GpuXidError  train-0  0    2026-12-04 20:12:25 UTC  GPU 0 on train-0 reported XID 79
"""


def test_reads_prometheus_and_lists_vgpu_nodes_and_alerts(tmp_path, monkeypatch, capsys):
    nodes = json.dumps({"items": [{"metadata": {"name": "infer-0"}}]})
    answer, alerts = FIXTURES / "prometheus-query.json", FIXTURES / "prometheus-alerts.json"
    body = f"case \"$3\" in /api/v1/nodes*) echo '{nodes}' ;; */api/v1/alerts) cat '{alerts}' ;; *) cat '{answer}' ;; esac"
    code, out, err = _run(monkeypatch, capsys, _stub_kubectl(tmp_path, body))
    assert (code, err) == (0, "")
    assert out == EXPECTED_TABLE + EXPECTED_ALERTS
    calls = (tmp_path / "calls").read_text()
    assert "get --raw /api/v1/namespaces/gpu-metrics/services/prometheus:web/proxy/api/v1/query?query=" in calls
    assert "get --raw /api/v1/namespaces/gpu-metrics/services/prometheus:web/proxy/api/v1/alerts " in calls
    assert "labelSelector=gpu-k8s%2Fgpu-kind%3Dvgpu" in calls


def test_alerts_of_other_rules_and_pending_ones_are_not_listed_as_firing():
    payload = json.loads((FIXTURES / "prometheus-alerts.json").read_text())
    alerts = gpu_top.parse_alerts(payload)
    assert [(a.name, a.state) for a in alerts] == [("GpuXidError", "firing"), ("GpuExporterDown", "pending")]
    other = {"labels": {"alertname": "KubePodCrashLooping", "severity": "warning"}, "state": "firing", "activeAt": ""}
    payload["data"]["alerts"].append(other)  # an operator Prometheus' own rules: not ours
    assert len(gpu_top.parse_alerts(payload)) == 2
    assert gpu_top.format_alerts(alerts[1:]) == "no GPU alerts firing (1 pending: GpuExporterDown)\n"
    assert gpu_top.format_alerts([]) == "no GPU alerts firing\n"


def test_an_unreadable_alerts_api_keeps_the_table(tmp_path, monkeypatch, capsys):
    answer = FIXTURES / "prometheus-query.json"
    body = (
        f'case "$3" in /api/v1/nodes*) echo \'{{"items": []}}\' ;; '
        f"*/api/v1/alerts) echo 'Error from server (Forbidden): no' >&2; exit 1 ;; *) cat '{answer}' ;; esac"
    )
    code, out, err = _run(monkeypatch, capsys, _stub_kubectl(tmp_path, body))
    assert (code, err) == (0, "")
    assert out.startswith(EXPECTED_TABLE.splitlines()[0]) and "GPU alerts: not read (the API server refused" in out


def test_exporter_4_9_names_and_units_give_the_same_row_without_memory():
    """4.9+: utilisation as a 0-1 ratio (shown x100), Celsius and watts under new names; the
    byte-valued memory fields' names are unconfirmed, so memory is not shown and the table says so."""
    old = gpu_top.gpu_rows(gpu_top.parse_exposition((FIXTURES / "exporter-t4.txt").read_text()))
    (new,) = gpu_top.gpu_rows(gpu_top.parse_exposition((FIXTURES / "exporter-4.9-t4.txt").read_text()))
    assert (new.node, new.gpu, new.model, new.util, new.temp, new.power) == (
        old[0].node,
        old[0].gpu,
        old[0].model,
        old[0].util,
        old[0].temp,
        old[0].power,
    )
    assert new.util == 97 and new.memory_used is None and old[0].memory_used == 12869
    table = gpu_top.format_table([new])
    assert table.splitlines()[1].split() == ["train-0", "0", "Tesla", "T4", "97", "%", "-", "61", "C", "68.6", "W"]
    assert "train-0: dcgm-exporter 4.9+ field names (DCGM_FI_DEV_GPU_UTIL_RATIO ...): memory not shown" in table


def test_a_page_with_neither_field_set_names_what_it_found(tmp_path, monkeypatch, capsys):
    samples = gpu_top.parse_exposition((FIXTURES / "readme-excerpt.txt").read_text())
    text = gpu_top.format_table(gpu_top.gpu_rows(samples), found=sorted({s.name for s in samples}))
    assert "the exporter sends DCGM_FI_DEV_MEMORY_TEMP, DCGM_FI_DEV_MEM_CLOCK, DCGM_FI_DEV_SM_CLOCK, none of" in text
    assert "DCGM_FI_DEV_GPU_UTIL_RATIO" in text and "may still be starting" not in text
    # Through Prometheus: a second query lists the DCGM names it has.
    names = json.dumps(
        {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"__name__": "DCGM_FI_DEV_SM_CLOCK_HERTZ"}, "value": [1, "1"]}],
            },
        }
    )
    empty = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
    body = (
        f'case "$3" in /api/v1/nodes*) echo \'{{"items": []}}\' ;; */api/v1/alerts) echo \'{{"status": "success"}}\' ;; '
        f"*group*) echo '{names}' ;; *) echo '{empty}' ;; esac"
    )
    code, out, err = _run(monkeypatch, capsys, _stub_kubectl(tmp_path, body))
    assert (code, err) == (0, "")
    assert "(no GPU samples: the exporter sends DCGM_FI_DEV_SM_CLOCK_HERTZ, none of which gpu-top reads" in out
    assert out.endswith("no GPU alerts firing\n")


def test_vgpu_nodes_with_an_exporter_are_rows_not_skipped():
    rows = gpu_top.gpu_rows(gpu_top.parse_exposition((FIXTURES / "exporter-t4.txt").read_text()))
    text = gpu_top.format_table(rows, ["train-0", "infer-0"])  # train-0 has samples (gpu-k8s:vgpuMetrics)
    assert "infer-0: vGPU guest, no exporter" in text and "train-0: vGPU guest" not in text


def test_exporter_source_reads_each_running_pod(tmp_path, monkeypatch, capsys):
    pods = json.dumps(
        {
            "items": [
                {"metadata": {"name": "dcgm-exporter-abcde"}, "spec": {"nodeName": "train-0"}, "status": {"phase": "Running"}},
                {"metadata": {"name": "dcgm-exporter-fghij"}, "spec": {"nodeName": "train-1"}, "status": {"phase": "Pending"}},
            ]
        }
    )
    page = FIXTURES / "exporter-t4.txt"
    body = (
        f"case \"$3\" in /api/v1/nodes*) echo '{{\"items\": []}}' ;; */pods\\?*) echo '{pods}' ;; "
        f"*/pods/dcgm-exporter-abcde:9400/proxy/metrics) cat '{page}' ;; *) exit 9 ;; esac"
    )
    code, out, err = _run(monkeypatch, capsys, _stub_kubectl(tmp_path, body), "--source", "exporter")
    assert (code, err) == (0, "")
    assert out.endswith("GPU alerts: read from Prometheus, not with --source exporter\n")
    assert out.splitlines()[1].split() == [
        "train-0",
        "0",
        "Tesla",
        "T4",
        "97",
        "%",
        "12869",
        "/",
        "15360",
        "MiB",
        "61",
        "C",
        "68.6",
        "W",
    ]


@pytest.mark.parametrize(
    ("stderr", "message"),
    [
        ('Error from server (NotFound): services "prometheus" not found', "no Prometheus at /api/v1/namespaces/gpu-metrics"),
        ("Error from server (ServiceUnavailable): no endpoints available for service", "not ready yet"),
        ("Unable to connect to the server: dial tcp 203.0.113.9:6443: i/o timeout", "cannot reach the Kubernetes API server"),
    ],
)
def test_kubectl_failures_are_one_clear_line(tmp_path, monkeypatch, capsys, stderr, message):
    env = _stub_kubectl(tmp_path, f"echo '{stderr}' >&2; exit 1")
    code, out, err = _run(monkeypatch, capsys, env)
    assert code == 2 and out == ""
    assert err.startswith("gpu-top: ") and message in err and err.count("\n") == 1


def test_missing_kubectl(tmp_path, monkeypatch, capsys):
    env = _stub_kubectl(tmp_path, "exit 0")
    env["PATH"] = str(tmp_path / "empty")
    code, _, err = _run(monkeypatch, capsys, env)
    assert code == 2 and "kubectl not found on PATH" in err


def test_missing_kubeconfig(tmp_path, monkeypatch, capsys):
    env = _stub_kubectl(tmp_path, "exit 0")
    del env["KUBECONFIG"]
    monkeypatch.chdir(tmp_path / "bin")  # no ./kubeconfig here, and HOME has no .kube/config
    code, _, err = _run(monkeypatch, capsys, env)
    assert code == 2 and "make kubeconfig" in err


def test_an_empty_local_kubeconfig_is_refused(tmp_path):
    """What a failed `make kubeconfig` of an older version left: not kubectl's default instead."""
    (tmp_path / "kubeconfig").write_text("")
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("apiVersion: v1\n")
    with pytest.raises(gpu_top.GpuTopError, match=r"^\./kubeconfig is empty: run `make kubeconfig` again"):
        gpu_top.kubectl_env({"HOME": str(tmp_path)}, cwd=tmp_path)


def test_local_kubeconfig_is_used(tmp_path):
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\n")
    env = gpu_top.kubectl_env({"HOME": str(tmp_path / "nowhere")}, cwd=tmp_path)
    assert env["KUBECONFIG"] == str(tmp_path / "kubeconfig")
    given = tmp_path / "other"
    given.write_text("apiVersion: v1\n")
    assert gpu_top.kubectl_env({"KUBECONFIG": str(given)}, cwd=tmp_path)["KUBECONFIG"] == str(given)


def test_a_kubeconfig_path_that_does_not_exist_is_said(tmp_path):
    """Not kubectl's fallback to localhost:8080 ("connection ... was refused")."""
    with pytest.raises(gpu_top.GpuTopError, match=r"^KUBECONFIG=/no/such/file: no such file"):
        gpu_top.kubectl_env({"KUBECONFIG": "/no/such/file"}, cwd=tmp_path)


def test_a_bad_prometheus_target_is_said_before_the_kubeconfig(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no kubeconfig anywhere
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert gpu_top.main(["--prometheus", "bad"]) == 2
    assert capsys.readouterr().err.startswith("gpu-top: --prometheus 'bad': expected NAMESPACE/SERVICE:PORT")


def test_watch_refreshes_until_interrupted(tmp_path, monkeypatch, capsys):
    answer = FIXTURES / "prometheus-query.json"
    env = _stub_kubectl(tmp_path, f"case \"$3\" in /api/v1/nodes*) echo '{{\"items\": []}}' ;; *) cat '{answer}' ;; esac")
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(gpu_top, "_sleep", fake_sleep)
    code, out, _ = _run(monkeypatch, capsys, env, "--watch", "2")
    assert code == 0 and sleeps == [2, 2]
    assert out.count("\033[H\033[2J") == 2 and out.count("train-1") == 2


def test_exporter_template_line_from_nvidia_tests():
    """internal/pkg/server/server_test.go line 48 (NVIDIA/dcgm-exporter tag 4.5.3-4.8.2): the
    renderer's expected output, verbatim; with our field's name it becomes a table row."""
    line = (
        'TEST_METRIC{gpu="0",UUID="GPU-00000000-0000-0000-0000-000000000000",pci_bus_id="",'
        'device="nvidia0",modelName="NVIDIA T400 4GB",Hostname="testhost"} 42'
    )
    (sample,) = gpu_top.parse_exposition(line)
    assert sample.labels["modelName"] == "NVIDIA T400 4GB" and sample.labels["pci_bus_id"] == ""
    (row,) = gpu_top.gpu_rows(gpu_top.parse_exposition(line.replace("TEST_METRIC", gpu_top.UTIL)))
    assert (row.node, row.gpu, row.model, row.values) == ("testhost", "0", "NVIDIA T400 4GB", {gpu_top.UTIL: 42})


@pytest.mark.parametrize("watch", ["0", "-1", "nan", "inf"])
def test_watch_needs_a_finite_positive_interval(capsys, watch):
    with pytest.raises(SystemExit) as exit_:
        gpu_top.main([f"--watch={watch}"])
    assert exit_.value.code == 2 and "--watch N" in capsys.readouterr().err


def test_json_that_is_not_an_object_is_one_clear_error():
    with pytest.raises(GpuTopError, match="not an object"):
        gpu_top._json("[1, 2]", "Prometheus")
