"""GPU metrics: dcgm-exporter field by field as NVIDIA's chart, per GPU family, Prometheus,
the GPU alert rules and NVIDIA's Grafana dashboard."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest
import yaml
from helpers import kinds, run_stack, shipped

from components.config import ConfigError
from components.config.gpu import parse_monitoring
from components.facts import catalog, dcgm
from components.gpu import monitoring
from components.gpu.monitoring import GpuMonitoringArgs
from tools import plan
from tools.manifests import render_manifests, validate_manifests

# NVIDIA/dcgm-exporter deployment/ (Helm chart) at tag 4.5.3-4.8.2, values.yaml defaults.
UPSTREAM_POD_SPEC = {"priorityClassName": "system-node-critical", "hostPID": False, "automountServiceAccountToken": False}
UPSTREAM_CONTAINER = {
    "name": "exporter",
    "imagePullPolicy": "IfNotPresent",
    "args": ["-f", "/etc/dcgm-exporter/default-counters.csv"],
    "env": [
        {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
        {"name": "DCGM_EXPORTER_LISTEN", "value": ":9400"},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ],
    "ports": [{"name": "metrics", "containerPort": 9400}],
    "resources": {"limits": {"cpu": "200m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
    "livenessProbe": {
        "httpGet": {"path": "/health", "port": 9400, "scheme": "HTTP"},
        "initialDelaySeconds": 45,
        "periodSeconds": 5,
    },
    "readinessProbe": {"httpGet": {"path": "/health", "port": 9400, "scheme": "HTTP"}, "initialDelaySeconds": 45},
}
UPSTREAM_SECURITY = {
    "runAsNonRoot": False,
    "runAsUser": 0,
    "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
    "allowPrivilegeEscalation": False,
}
UPSTREAM_MOUNTS = [
    {"name": "pod-gpu-resources", "readOnly": True, "mountPath": "/var/lib/kubelet/pod-resources"},
    {
        "name": "exporter-metrics-volume",
        "mountPath": "/etc/dcgm-exporter/default-counters.csv",
        "subPath": "default-counters.csv",
    },
]


# With gpu-k8s:gpuIsolation the toolkit ignores the image's NVIDIA_VISIBLE_DEVICES=all in a
# container without CAP_SYS_ADMIN; /dev/null at this path is its volume-mount device list "all".
ALL_GPUS_MOUNT = {"name": "all-gpus", "mountPath": "/var/run/nvidia-container-devices/all", "readOnly": True}


@pytest.fixture(scope="module")
def mixed():
    return shipped("mixed")


def _named(run, kind: str, name: str):
    (found,) = [r for r in kinds(run, kind) if r.inputs["metadata"]["name"] == name]
    return found


def _pod(daemonset) -> dict:
    return daemonset.inputs["spec"]["template"]["spec"]


def test_exporter_mirrors_nvidia_chart(mixed):
    ds = _named(mixed, "DaemonSet", "dcgm-exporter").inputs
    assert ds["metadata"]["namespace"] == "gpu-metrics"
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    pod = _pod(_named(mixed, "DaemonSet", "dcgm-exporter"))
    for key, value in UPSTREAM_POD_SPEC.items():
        assert pod[key] == value
    assert {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    (container,) = pod["containers"]
    for key, value in UPSTREAM_CONTAINER.items():
        assert container[key] == value, key
    assert container["securityContext"] == UPSTREAM_SECURITY
    assert container["volumeMounts"] == [*UPSTREAM_MOUNTS, ALL_GPUS_MOUNT]  # kubeadm's gpuIsolation (default on)
    assert container["image"] == "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pod-gpu-resources"]["hostPath"] == {"path": "/var/lib/kubelet/pod-resources"}
    assert volumes["exporter-metrics-volume"]["configMap"] == {
        "name": "dcgm-exporter-counters",
        "items": [{"key": "metrics", "path": "default-counters.csv"}],
    }
    counters = _named(mixed, "ConfigMap", "dcgm-exporter-counters").inputs["data"]["metrics"]
    assert counters == dcgm.PROGRAM_COUNTERS and "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE" in counters


def test_written_counters_are_nvidias_with_only_the_ecc_row_turned_on():
    nvidia, written = dcgm.DEFAULT_COUNTERS.splitlines(), dcgm.PROGRAM_COUNTERS.splitlines()
    changed = [(a, b) for a, b in zip(nvidia, written, strict=True) if a != b]
    assert changed == [
        (
            "# DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter, Total number of double-bit volatile ECC errors.",
            "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter, Total number of double-bit volatile ECC errors.",
        )
    ]
    assert "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" not in dcgm.counter_fields(dcgm.DEFAULT_COUNTERS)


def test_with_gpu_isolation_every_exporter_asks_for_all_gpus_by_volume_mount():
    for variant in ("full", "no-profiling", "vgpu"):
        isolated = monitoring.exporter_daemonset_spec("img:1", variant, ["p"], "cm", "h", isolation=True)["template"]["spec"]
        assert {"name": "all-gpus", "hostPath": {"path": "/dev/null"}} in isolated["volumes"]
        assert isolated["containers"][0]["volumeMounts"][-1] == ALL_GPUS_MOUNT
        assert "privileged" not in isolated["containers"][0]["securityContext"]
        plain = monitoring.exporter_daemonset_spec("img:1", variant, ["p"], "cm", "h")["template"]["spec"]
        assert plain["containers"][0]["volumeMounts"] == UPSTREAM_MOUNTS  # NVIDIA's chart, as before
    ack = shipped("ack")  # ACK's nodes keep NVIDIA's toolkit defaults: no mount
    (ds,) = [d for d in kinds(ack, "DaemonSet") if d.inputs["metadata"]["name"] == "dcgm-exporter"]
    assert _pod(ds)["containers"][0]["volumeMounts"] == UPSTREAM_MOUNTS


def test_exporter_runs_only_on_compute_pools(mixed):
    """mixed: train (T4, compute) gets it; infer (A10 vGPU slices) does not."""
    terms = _pod(_named(mixed, "DaemonSet", "dcgm-exporter"))["affinity"]["nodeAffinity"]
    (term,) = terms["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert term["matchExpressions"] == [
        {"key": "gpu-k8s/gpu-kind", "operator": "In", "values": ["compute"]},
        {"key": "gpu-k8s/pool", "operator": "In", "values": ["train"]},
    ]
    assert len([d for d in kinds(mixed, "DaemonSet") if d.inputs["metadata"]["name"].startswith("dcgm")]) == 1
    assert mixed.outputs["gpuMetrics"]["nodes"] == {
        "train": "exporter, all counters",
        "infer": "none (vGPU guest: DCGM unsupported; see gpu-k8s:vgpuMetrics)",
    }


def test_exporter_requests_no_gpu_with_time_slicing(mixed):
    for run in (mixed, run_stack("mixed", timeSlicingReplicas=4)):
        exporters = [d for d in kinds(run, "DaemonSet") if d.inputs["metadata"]["name"].startswith("dcgm-exporter")]
        assert exporters
        for ds in exporters:
            (container,) = _pod(ds)["containers"]
            assert "nvidia.com/gpu" not in str(container["resources"]) and "limits" in container["resources"]


def test_pascal_gets_counters_without_profiling_and_no_sys_admin():
    run = shipped("p4")
    (ds,) = [d for d in kinds(run, "DaemonSet") if d.inputs["metadata"]["name"].startswith("dcgm-exporter")]
    assert ds.inputs["metadata"]["name"] == "dcgm-exporter-no-profiling"
    (container,) = _pod(ds)["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    counters = _named(run, "ConfigMap", "dcgm-exporter-counters-no-profiling").inputs["data"]["metrics"]
    rows = [line for line in counters.splitlines() if line and not line.startswith("#")]
    assert rows and not any(line.startswith("DCGM_FI_PROF_") for line in rows)
    assert all(field in counters for field in dcgm.GPU_TOP_FIELDS)


def test_vgpu_only_stack_creates_nothing_and_says_so():
    run = shipped("dev")
    assert not [r for r in run.resources if r.parent.endswith("GpuMonitoring::gpu-k8s-metrics")]
    assert any("vGPU guest, which DCGM does not support" in w and "gpu-k8s:vgpuMetrics" in w for w in run.warnings)
    assert run.outputs["gpuMetrics"]["read"].startswith("nothing to read")


@pytest.fixture(scope="module")
def dev_vgpu():
    """The shipped dev stack (an A10 vGPU slice) with vgpuMetrics, and a week's retention."""
    return run_stack("dev", vgpuMetrics=True, prometheusRetention="7d")


def test_vgpu_metrics_runs_a_standard_metrics_exporter_on_the_vgpu_guest(dev_vgpu):
    (ds,) = [d for d in kinds(dev_vgpu, "DaemonSet") if d.inputs["metadata"]["name"].startswith("dcgm-exporter")]
    assert ds.inputs["metadata"]["name"] == "dcgm-exporter-vgpu"
    (container,) = _pod(ds)["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # no SYS_ADMIN: no profiling
    terms = _pod(ds)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0] == {"key": "gpu-k8s/gpu-kind", "operator": "In", "values": ["vgpu"]}
    counters = _named(dev_vgpu, "ConfigMap", "dcgm-exporter-counters-vgpu").inputs["data"]["metrics"]
    fields = dcgm.counter_fields(counters)
    assert "DCGM_FI_DEV_VGPU_LICENSE_STATUS" in fields and not [f for f in fields if f.startswith("DCGM_FI_PROF_")]
    assert _named(dev_vgpu, "Deployment", "prometheus")
    note = dev_vgpu.outputs["gpuMetrics"]["nodes"]["gpu"]
    assert "standard metrics only; DCGM documents bare metal and passthrough: unverified on Aliyun GRID" in note
    assert "dcgm-exporter#661, PR #701" in note
    assert any(w.startswith("gpu-k8s:vgpuMetrics: dcgm-exporter on vGPU pool(s) gpu") for w in dev_vgpu.warnings)
    files = render_manifests(dev_vgpu)
    assert validate_manifests(files, dev_vgpu.config["gpu-k8s:kubernetesVersion"]) == []


def test_retention_is_configurable_and_storage_stays_an_emptydir(dev_vgpu, mixed):
    for run, retention in ((mixed, "24h"), (dev_vgpu, "7d")):
        pod = _named(run, "Deployment", "prometheus").inputs["spec"]["template"]["spec"]
        args = pod["containers"][0]["args"]
        assert f"--storage.tsdb.retention.time={retention}" in args and "--storage.tsdb.retention.size=1GB" in args
        assert {"name": "data", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
    assert dev_vgpu.outputs["gpuMetrics"]["retention"].startswith("7d (at most 1GB) in an emptyDir")


def test_prometheus(mixed):
    deployment = _named(mixed, "Deployment", "prometheus").inputs
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/prom/prometheus:v3.14.0"
    assert "--storage.tsdb.retention.time=24h" in container["args"]
    assert {"name": "data", "emptyDir": {"sizeLimit": "2Gi"}} in pod["volumes"]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    assert deployment["spec"]["replicas"] == 1 and pod["serviceAccountName"] == "prometheus"
    config = yaml.safe_load(_named(mixed, "ConfigMap", "prometheus-config").inputs["data"]["prometheus.yml"])
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "endpointslice", "namespaces": {"names": ["gpu-metrics"]}}]
    binding = _named(mixed, "RoleBinding", "prometheus").inputs
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "gpu-metrics"}]
    service = _named(mixed, "Service", "dcgm-exporter").inputs
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert mixed.outputs["gpuMetrics"]["read"].startswith("make gpu-top")


@pytest.fixture(scope="module")
def operator_stack():
    return run_stack("mixed", monitoring="servicemonitor", serviceMonitorLabels={"release": "kube-prometheus-stack"})


def test_service_monitor_and_prometheus_rule_replace_prometheus(operator_stack):
    run = operator_stack
    assert not [r for r in kinds(run, "Deployment") if r.inputs["metadata"]["name"] == "prometheus"]
    (monitor,) = [r for r in run.resources if r.type == "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"]
    spec = monitor.inputs["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}
    assert spec["endpoints"][0]["port"] == "metrics" and spec["endpoints"][0]["interval"] == "15s"
    (rule,) = [r for r in run.resources if r.type == "kubernetes:monitoring.coreos.com/v1:PrometheusRule"]
    for obj in (monitor, rule):  # kube-prometheus-stack selects both on its release label
        assert obj.inputs["metadata"]["labels"] == {"app.kubernetes.io/name": "dcgm-exporter", "release": "kube-prometheus-stack"}
    alerts = [r["alert"] for r in rule.inputs["spec"]["groups"][0]["rules"]]
    assert "GpuXidError" in alerts and "GpuNodeWithoutAllocatableGpus" in alerts
    files = render_manifests(run)
    assert [p for p in files if "-servicemonitor-" in p] and [p for p in files if "-prometheusrule-" in p]
    assert validate_manifests(files, run.config["gpu-k8s:kubernetesVersion"]) == []
    assert "selected" not in run.outputs["gpuMetrics"]


def test_prometheus_rule_is_checked_strictly_against_its_crd():
    rules, _ = monitoring.alert_rules("servicemonitor", [dcgm.PROGRAM_COUNTERS])
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "r", "namespace": "gpu-metrics"},
        "spec": {"groups": monitoring.rule_groups(rules)},
    }
    assert validate_manifests({"r.yaml": yaml.safe_dump(obj)}, "1.34.2") == []
    obj["spec"]["groups"][0]["rules"][0]["fors"] = "5m"  # a typo the CRD's schema must catch
    obj["spec"]["groups"][0]["rules"][1]["for"] = "5 minutes"
    errors = validate_manifests({"r.yaml": yaml.safe_dump(obj)}, "1.34.2")
    assert len(errors) == 2 and all(e.startswith("r.yaml: spec/groups/0/rules/") for e in errors)


# --- alerts and dashboard ---------------------------------------------------------------------


def test_in_cluster_prometheus_evaluates_the_gpu_rules(mixed):
    data = _named(mixed, "ConfigMap", "prometheus-config").inputs["data"]
    config = yaml.safe_load(data["prometheus.yml"])
    assert config["rule_files"] == ["/etc/prometheus/gpu-alerts.yml"]  # the ConfigMap's mount
    (group,) = yaml.safe_load(data["gpu-alerts.yml"])["groups"]
    by_name = {r["alert"]: r for r in group["rules"]}
    assert by_name["GpuXidError"]["expr"] == "DCGM_FI_DEV_XID_ERRORS > 0"
    assert by_name["GpuEccDoubleBitErrors"]["expr"] == "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0"
    assert by_name["GpuTemperatureHigh"]["expr"] == "DCGM_FI_DEV_GPU_TEMP > 85" and by_name["GpuTemperatureHigh"]["for"] == "5m"
    assert by_name["GpuExporterDown"]["expr"] == 'up{job="dcgm-exporter"} == 0'
    assert all(r["labels"]["alert_source"] == "gpu-k8s" for r in group["rules"])
    left_out = mixed.outputs["gpuMetrics"]["alerts"]["left out"]
    assert "kube-state-metrics" in left_out["GpuNodeWithoutAllocatableGpus"]  # not scraped here
    assert "no power limit" in left_out["GpuPowerNearLimit"]  # not in NVIDIA's default counters
    template = _named(mixed, "Deployment", "prometheus").inputs["spec"]["template"]
    config_hash = hashlib.sha256((data["prometheus.yml"] + data["gpu-alerts.yml"]).encode()).hexdigest()
    assert template["metadata"]["annotations"]["gpu-k8s/config-sha256"] == config_hash  # a rule change rolls it


@pytest.mark.parametrize(
    ("mode", "extra_rows", "present", "absent"),
    [
        ("dcgm", "", {"GpuXidError", "GpuExporterMissing"}, {"GpuPowerNearLimit", "GpuNodeWithoutAllocatableGpus"}),
        ("servicemonitor", "", {"GpuNodeWithoutAllocatableGpus"}, {"GpuPowerNearLimit"}),
        ("dcgm", "DCGM_FI_DEV_ENFORCED_POWER_LIMIT, gauge, Enforced power limit (in W).\n", {"GpuPowerNearLimit"}, set()),
    ],
)
def test_rules_follow_the_counters_and_the_mode(mode, extra_rows, present, absent):
    rules, left_out = monitoring.alert_rules(mode, [dcgm.PROGRAM_COUNTERS + extra_rows])
    names = {r["alert"] for r in rules}
    assert present <= names and not absent & names and absent <= set(left_out)
    if extra_rows:
        (power,) = [r for r in rules if r["alert"] == "GpuPowerNearLimit"]
        assert power["expr"] == "DCGM_FI_DEV_POWER_USAGE / DCGM_FI_DEV_ENFORCED_POWER_LIMIT > 0.95"


def test_a_counters_file_without_a_field_drops_its_rule():
    minimal = "\n".join(f"{f}, gauge, help" for f in dcgm.GPU_TOP_FIELDS) + "\n"
    rules, left_out = monitoring.alert_rules("dcgm", [minimal])
    assert {r["alert"] for r in rules} == {"GpuTemperatureHigh", "GpuExporterDown", "GpuExporterMissing"}
    assert left_out["GpuXidError"] == "the counters lack DCGM_FI_DEV_XID_ERRORS"


PROMTOOL_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - {series: 'DCGM_FI_DEV_XID_ERRORS{gpu="0",kubernetes_node="a"}', values: '0 0 79 79'}
      - {series: 'DCGM_FI_DEV_XID_ERRORS{gpu="0",kubernetes_node="b"}', values: '0x3'}
      - {series: 'DCGM_FI_DEV_GPU_TEMP{gpu="0",kubernetes_node="a"}', values: '90x10'}
      - {series: 'DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{gpu="0",kubernetes_node="b"}', values: '0 0 2 2'}
      - {series: 'up{job="dcgm-exporter",kubernetes_node="a"}', values: '1x20'}
      - {series: 'up{job="dcgm-exporter",kubernetes_node="b"}', values: '0x20'}
      - {series: 'DCGM_FI_DEV_GPU_UTIL{gpu="0",kubernetes_node="a"}', values: '5x20'}
      - {series: 'DCGM_FI_DEV_GPU_UTIL{gpu="0",kubernetes_node="b"}', values: '5x20'}
      - {series: 'kube_node_status_allocatable{node="a",resource="nvidia_com_gpu"}', values: '1x20'}
      - {series: 'kube_node_status_allocatable{node="b",resource="nvidia_com_gpu"}', values: '0x20'}
    alert_rule_test:
      - {eval_time: 3m, alertname: GpuXidError, exp_alerts: [{exp_labels: {gpu: "0", kubernetes_node: a, $L}}]}
      - {eval_time: 4m, alertname: GpuTemperatureHigh, exp_alerts: []}
      - {eval_time: 6m, alertname: GpuTemperatureHigh, exp_alerts: [{exp_labels: {gpu: "0", kubernetes_node: a, $L}}]}
      - {eval_time: 3m, alertname: GpuEccDoubleBitErrors, exp_alerts: [{exp_labels: {gpu: "0", kubernetes_node: b, $C}}]}
      - {eval_time: 6m, alertname: GpuExporterDown, exp_alerts: [{exp_labels: {job: dcgm-exporter, kubernetes_node: b, $L}}]}
      - {eval_time: 16m, alertname: GpuExporterMissing, exp_alerts: []}
      - {eval_time: 11m, alertname: GpuNodeWithoutAllocatableGpus, exp_alerts: [{exp_labels: {kubernetes_node: b, $L}}]}
  - interval: 1m
    input_series:
      - {series: 'DCGM_FI_DEV_GPU_UTIL{gpu="0",kubernetes_node="b"}', values: '5x20'}
    alert_rule_test:
      - {eval_time: 16m, alertname: GpuExporterMissing, exp_alerts: [{exp_labels: {job: dcgm-exporter, $L}}]}
      - {eval_time: 16m, alertname: GpuNodeWithoutAllocatableGpus, exp_alerts: []}
"""


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus' own rule checker) not installed")
def test_rules_fire_as_intended_under_promtool(tmp_path):
    """Prometheus' `promtool test rules` on the servicemonitor rule set (the dcgm one is a subset):
    each alert fires on its condition, after its `for`, and not without kube-state-metrics.
    Annotations are checked by `promtool check rules` (templates), not compared here."""
    rules, _ = monitoring.alert_rules("servicemonitor", [dcgm.PROGRAM_COUNTERS])
    (tmp_path / "checked.yml").write_text(yaml.safe_dump({"groups": monitoring.rule_groups(rules)}))
    check = subprocess.run(["promtool", "check", "rules", str(tmp_path / "checked.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    bare = [{k: v for k, v in r.items() if k != "annotations"} for r in rules]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": monitoring.rule_groups(bare)}))
    labels = "alert_source: gpu-k8s, severity"
    tests = PROMTOOL_TESTS.replace("$L", f"{labels}: warning").replace("$C", f"{labels}: critical")
    (tmp_path / "tests.yml").write_text(tests)
    done = subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_nvidias_file_for_grafana_in_both_modes(mixed, operator_stack):
    source = (dcgm._FILES / dcgm.DASHBOARD_FILE).read_bytes()
    assert hashlib.sha256(source).hexdigest() == dcgm.DASHBOARD_SHA256  # NVIDIA's bytes (NOTICE beside it)
    assert (dcgm._FILES / "NOTICE").read_text().count("Apache License, Version 2.0") == 1
    for run in (mixed, operator_stack):
        dashboard = _named(run, "ConfigMap", "dcgm-exporter-dashboard").inputs
        assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
        text = dashboard["data"]["dcgm-exporter-dashboard.json"]
        assert text.encode() == source and "DCGM_FI_DEV_GPU_UTIL" in text
        assert json.loads(text)["title"] == "NVIDIA DCGM Exporter Dashboard"
    (path,) = [p for p in render_manifests(mixed) if p.endswith("-configmap-gpu-k8s-metrics-dashboard.yaml")]
    rendered = yaml.safe_load(render_manifests(mixed)[path])["data"]["dcgm-exporter-dashboard.json"]
    assert hashlib.sha256(rendered.encode()).hexdigest() == dcgm.DASHBOARD_SHA256  # kubectl apply keeps the bytes


def test_monitoring_manifests_apply_in_order(mixed):
    names = [p.split("/", 1)[1] for p in sorted(render_manifests(mixed))]
    first = {
        kind: next(i for i, n in enumerate(names) if f"-{kind}-gpu-k8s-metrics" in n)
        for kind in ("namespace", "configmap", "daemonset", "deployment")
    }
    assert first["namespace"] < first["configmap"] < first["daemonset"] < first["deployment"]


def test_monitoring_none():
    run = run_stack("mixed", monitoring="none")
    assert not [r for r in run.resources if "metrics" in r.name]
    assert run.outputs["gpuMetrics"] == "off (gpu-k8s:monitoring none)"


def test_a_replaced_counters_file_rolls_the_exporter(mixed, tmp_path):
    custom = tmp_path / "counters.csv"
    custom.write_text("\n".join(f"{f}, gauge, help" for f in dcgm.GPU_TOP_FIELDS) + "\n")
    run = run_stack("mixed", dcgmCountersCsv=str(custom))
    assert _named(run, "ConfigMap", "dcgm-exporter-counters").inputs["data"]["metrics"] == custom.read_text()

    def counters_hash(r):
        template = _named(r, "DaemonSet", "dcgm-exporter").inputs["spec"]["template"]
        return template["metadata"]["annotations"]["gpu-k8s/counters-sha256"]

    assert counters_hash(run) != counters_hash(mixed)


# --- pure helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "variant"),
    [
        ("ecs.gn6i-c4g1.xlarge", "full"),
        ("ecs.gn7i-c8g1.2xlarge", "full"),
        ("ecs.gn6v-c8g1.2xlarge", "full"),
        ("ecs.gn5i-c2g1.large", "no-profiling"),
        ("ecs.sgn7i-vws-m2s.xlarge", "skip"),
        ("ecs.vgn6i-m4-vws.xlarge", "skip"),
    ],
)
def test_variant_per_family(instance_type, variant):
    profile = catalog.profile_for(instance_type)
    assert dcgm.exporter_variant(profile) == variant
    assert dcgm.exporter_variant(profile, vgpu_metrics=True) == ("vgpu" if variant == "skip" else variant)


def test_default_counters_are_nvidias_and_feed_gpu_top():
    assert dcgm.counters_error(dcgm.DEFAULT_COUNTERS) is None
    for variant in ("no-profiling", "vgpu"):
        stripped = dcgm.variant_counters(dcgm.DEFAULT_COUNTERS, variant)
        assert "DCGM_FI_PROF_" not in "".join(line for line in stripped.splitlines() if not line.startswith("#"))
    assert dcgm.variant_counters(dcgm.DEFAULT_COUNTERS, "full") == dcgm.DEFAULT_COUNTERS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# only comments\n", "no counters"),
        ("DCGM_FI_DEV_GPU_UTIL gauge GPU utilization\n", "line 1"),
        ("DCGM_FI_DEV_GPU_UTIL, histogram, x\n", "line 1"),
        ("DCGM_FI_DEV_GPU_UTIL, gauge, x\n", "lacks DCGM_FI_DEV_FB_USED"),
    ],
)
def test_counters_errors(text, message):
    assert message in dcgm.counters_error(text)


class _Cfg:
    def __init__(self, **values):
        self.values = {
            "monitoring": "dcgm",
            "dcgmExporterVersion": "4.6.0-4.8.3",
            "prometheusVersion": "v3.14.0",
            "prometheusRetention": "24h",  # Pulumi.yaml's default
            **values,
        }

    def get(self, key):
        return self.values.get(key)


@pytest.mark.parametrize(
    ("key", "value", "accepted"),
    [
        ("monitoring", "prometheus", "one of dcgm, servicemonitor, none"),
        ("dcgmExporterVersion", "latest", "a known dcgm-exporter release"),
        ("dcgmExporterVersion", "3.3.5-3.4.1", "e.g. 4.6.0-4.8.3"),
        ("prometheusVersion", "v2.53.0", "v3.x.y or newer"),
        ("prometheusVersion", "latest", "v3.x.y or newer"),
        ("dcgmCountersCsv", "no/such.csv", "a readable CSV file"),
        ("dcgmCountersCsv", "a\x00b.csv", "a readable CSV file"),  # a NUL (possible in YAML): no traceback
        ("prometheusRetention", "300y", "at most 100y"),  # Prometheus: "duration out of range"
        ("dcgmCountersCsv", "README.md", "not 'DCGM_FI_<FIELD>"),
    ],
)
def test_config_errors_are_one_line(key, value, accepted):
    with pytest.raises(ConfigError) as err:
        parse_monitoring(_Cfg(**{key: value}))
    text = str(err.value)
    # First line names the key; a reason goes on its own short line (config.ConfigError's format).
    assert err.value.key == key and accepted in text and text.startswith(f"gpu-k8s:{key}: ")
    assert all(len(line) <= 200 for line in text.splitlines())


def test_config_defaults_parse():
    assert parse_monitoring(_Cfg()) == {
        "monitoring": "dcgm",
        "dcgm_exporter_version": "4.6.0-4.8.3",
        "prometheus_version": "v3.14.0",
        "dcgm_counters": None,
        "prometheus_retention": "24h",
        "service_monitor_labels": {},
        "vgpu_metrics": False,
    }


def test_plan_refuses_a_bad_mode_in_one_line(capsys):
    assert plan.main(["--stack", "p4", "--config", "gpu-k8s:monitoring=prom"]) == 2
    # Under xdist a RuntimeWarning from an earlier test's event loop (garbage-collected now) may reach
    # stderr too; the CLI's own output is the one line.
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("  ", "RuntimeWarning", "/"))]
    assert len(err) == 1 and "gpu-k8s:monitoring: 'prom' is not accepted" in err[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "none"}, "mode"),
        ({"exporter_version": "4.9.9-9.9.9"}, "exporter_version"),
        ({"prometheus_version": "v2.0.0"}, "prometheus_version"),
        ({"pools": {}}, "pools is empty"),
        ({"counters": "nonsense"}, "counters"),
        ({"retention": "0s"}, "retention"),
        ({"retention": "a week"}, "retention"),
        ({"service_monitor_labels": {"release": 1}}, "service_monitor_labels"),
    ],
)
def test_args_are_validated(kwargs, message):
    base = {
        "mode": "dcgm",
        "exporter_version": "4.6.0-4.8.3",
        "prometheus_version": "v3.14.0",
        "pools": {"gpu": catalog.profile_for("ecs.gn6i-c4g1.xlarge")},
    }
    with pytest.raises(ValueError, match=message):
        GpuMonitoringArgs(**{**base, **kwargs})


def test_known_releases_name_real_image_variants():
    for release, variant in dcgm.KNOWN_EXPORTER_RELEASES.items():
        assert dcgm.exporter_image(release) == f"nvcr.io/nvidia/k8s/dcgm-exporter:{release}-{variant}"
        assert variant in ("distroless", "ubuntu22.04")


def test_new_pools_and_versions_update_the_daemonset_in_place():
    """A DaemonSet is replaced only when its name or selector changes (reference section 3):
    neither depends on the pools, the image or the counters, so those roll the pods instead."""
    one = monitoring.exporter_daemonset_spec("img:1", "full", ["train"], "cm", "h1")
    two = monitoring.exporter_daemonset_spec("img:2", "full", ["train", "more"], "cm", "h2")
    assert one["selector"] == two["selector"] and one["template"] != two["template"]
    other = monitoring.exporter_daemonset_spec("img:1", "no-profiling", ["p4"], "cm2", "h1")
    assert other["selector"] != one["selector"]  # two DaemonSets never claim each other's pods
