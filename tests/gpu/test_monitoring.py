"""GPU metrics: dcgm-exporter field by field as NVIDIA's chart, per GPU family, and Prometheus."""

from __future__ import annotations

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
    assert container["volumeMounts"] == UPSTREAM_MOUNTS
    assert container["image"] == "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pod-gpu-resources"]["hostPath"] == {"path": "/var/lib/kubelet/pod-resources"}
    assert volumes["exporter-metrics-volume"]["configMap"] == {
        "name": "dcgm-exporter-counters",
        "items": [{"key": "metrics", "path": "default-counters.csv"}],
    }
    counters = _named(mixed, "ConfigMap", "dcgm-exporter-counters").inputs["data"]["metrics"]
    assert counters == dcgm.DEFAULT_COUNTERS and "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE" in counters


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
        "infer": "none (vGPU guest: DCGM unsupported)",
    }


def test_exporter_requests_no_gpu_with_time_slicing_or_mig(mixed):
    for run in (mixed, run_stack("mixed", timeSlicingReplicas=4, migStrategy="single")):
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
    assert any("vGPU guest, which DCGM does not support" in w for w in run.warnings)
    assert run.outputs["gpuMetrics"]["read"].startswith("nothing to read")


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


def test_service_monitor_replaces_prometheus():
    run = run_stack("mixed", monitoring="servicemonitor")
    assert not kinds(run, "Deployment")
    (monitor,) = [r for r in run.resources if r.type == "kubernetes:monitoring.coreos.com/v1:ServiceMonitor"]
    spec = monitor.inputs["spec"]
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}
    assert spec["endpoints"][0]["port"] == "metrics" and spec["endpoints"][0]["interval"] == "15s"
    files = render_manifests(run)
    assert [p for p in files if "-servicemonitor-" in p]
    assert validate_manifests(files, run.config["gpu-k8s:kubernetesVersion"]) == []


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
    assert dcgm.exporter_variant(catalog.profile_for(instance_type)) == variant


def test_default_counters_are_nvidias_and_feed_gpu_top():
    assert dcgm.counters_error(dcgm.DEFAULT_COUNTERS) is None
    stripped = dcgm.variant_counters(dcgm.DEFAULT_COUNTERS, "no-profiling")
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
        self.values = {"monitoring": "dcgm", "dcgmExporterVersion": "4.6.0-4.8.3", "prometheusVersion": "v3.14.0", **values}

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
    }


def test_plan_refuses_a_bad_mode_in_one_line(capsys):
    assert plan.main(["--stack", "p4", "--config", "gpu-k8s:monitoring=prom"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gpu-k8s:monitoring: 'prom' is not accepted" in err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "none"}, "mode"),
        ({"exporter_version": "4.9.9-9.9.9"}, "exporter_version"),
        ({"prometheus_version": "v2.0.0"}, "prometheus_version"),
        ({"pools": {}}, "pools is empty"),
        ({"counters": "nonsense"}, "counters"),
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
