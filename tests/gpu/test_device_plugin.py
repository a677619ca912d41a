"""NVIDIA device plugin: NVIDIA's static DaemonSet field by field, plus the config file."""

from __future__ import annotations

import pytest
import yaml
from helpers import env_of, kinds, run_stack, shipped

from components.facts import catalog
from components.gpu.device_plugin import NvidiaDevicePluginArgs, _config_yaml, _plugin_config
from components.kubeadm import cluster

# deployments/static/nvidia-device-plugin.yml at v0.20.0 (reference section 1.2); the
# tolerations as the Helm chart's values.yaml has them (CriticalAddonsOnly added).
UPSTREAM_POD_SPEC = {
    "tolerations": [
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ],
    "priorityClassName": "system-node-critical",
}
UPSTREAM_CONTAINER = {"name": "nvidia-device-plugin-ctr"}
RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
DEVICE_PLUGINS = "/var/lib/kubelet/device-plugins"


@pytest.fixture(scope="module")
def dev():
    return shipped("dev")


def _daemonset(run):
    (ds,) = [r for r in kinds(run, "DaemonSet") if r.inputs["metadata"]["name"] == "nvidia-device-plugin-daemonset"]
    return ds


def _config(run) -> dict:
    (cm,) = [r for r in kinds(run, "ConfigMap") if r.inputs["metadata"]["name"] == "nvidia-device-plugin-config"]
    return yaml.safe_load(cm.inputs["data"]["config.yaml"])


def test_daemonset_mirrors_nvidia_static_manifest(dev):
    ds = _daemonset(dev).inputs
    assert ds["apiVersion"] == "apps/v1" and ds["metadata"]["namespace"] == "kube-system"
    spec = ds["spec"]
    assert spec["selector"] == {"matchLabels": {"name": "nvidia-device-plugin-ds"}}
    assert spec["template"]["metadata"]["labels"] == {"name": "nvidia-device-plugin-ds"}
    assert spec["updateStrategy"] == {"type": "RollingUpdate"}
    pod = spec["template"]["spec"]
    for key, value in UPSTREAM_POD_SPEC.items():
        assert pod[key] == value
    (container,) = pod["containers"]
    for key, value in UPSTREAM_CONTAINER.items():
        assert container[key] == value
    assert container["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kubelet-device-plugins-dir"]["hostPath"] == {"path": DEVICE_PLUGINS, "type": "Directory"}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["kubelet-device-plugins-dir"] == DEVICE_PLUGINS


def test_daemonset_additions(dev):
    ds = _daemonset(dev).inputs
    assert ds["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    pod = ds["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": "gpu-k8s/gpu-kind", "operator": "Exists"}]}]
    assert "nodeSelector" not in pod
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {"CONFIG_FILE": "/etc/nvidia-device-plugin/config.yaml"}  # no FAIL_ON_INIT_ERROR
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["plugin-config"]["mountPath"] + "/config.yaml" == env["CONFIG_FILE"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["plugin-config"]["configMap"]["name"] == "nvidia-device-plugin-config"
    # GPU isolation (on by default): the plugin passes devices as volume mounts.
    flags = {"migStrategy": "none", "failOnInitError": True, "plugin": {"deviceListStrategy": "volume-mounts"}}
    assert _config(dev) == {"version": "v1", "flags": flags}


def test_daemonset_waits_for_its_config_map(dev):
    (cm,) = [r for r in kinds(dev, "ConfigMap") if r.name.endswith("device-plugin-config")]
    assert cm.urn in _daemonset(dev).dependencies


def test_seed_version_and_time_slicing_config():
    run = run_stack("p4", devicePluginVersion="v0.14.3", timeSlicingReplicas=4)
    (container,) = _daemonset(run).inputs["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.14.3"
    config = _config(run)
    assert config["flags"]["migStrategy"] == "none"
    # A request for two slices would get two slices of one GPU: refused (the plugin README: recommended).
    resources = [{"name": "nvidia.com/gpu", "replicas": 4}]
    time_slicing = {"renameByDefault": False, "failRequestsGreaterThanOne": True, "resources": resources}
    assert config["sharing"] == {"timeSlicing": time_slicing}
    assert not kinds(run, "CustomResourceDefinition")  # GPU Feature Discovery needs v0.19+ here


def test_renamed_slices_are_what_the_test_asks_for():
    run = run_stack("dev", timeSlicingReplicas=2, timeSlicingRenameByDefault=True)
    assert _config(run)["sharing"]["timeSlicing"]["renameByDefault"] is True
    pods = [r for r in kinds(run, "Pod") if r.inputs["metadata"]["name"].startswith("gpu-test")]
    assert pods and all(p.inputs["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu.shared": "1"} for p in pods)
    assert env_of(run.named("gpu-k8s-smoke-gpu-allocatable"))["GPU_RESOURCE"] == "nvidia.com/gpu.shared"


def test_isolation_off_keeps_nvidias_defaults():
    run = run_stack("dev", gpuIsolation=False)
    assert "plugin" not in _config(run)["flags"]
    (container,) = _daemonset(run).inputs["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"] == RESTRICTED
    assert "GPU_ISOLATION" not in env_of(run.named("gpu-0-bootstrap-container-runtime"))


def test_isolation_makes_the_plugin_privileged_and_tells_step_20(dev):
    (container,) = _daemonset(dev).inputs["spec"]["template"]["spec"]["containers"]
    # The toolkit ignores an unprivileged container's NVIDIA_VISIBLE_DEVICES: the plugin must see every GPU.
    assert container["securityContext"] == {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    assert env_of(dev.named("gpu-0-bootstrap-container-runtime"))["GPU_ISOLATION"] == "true"


def test_config_change_rolls_the_pods(dev):
    sliced = run_stack("dev", timeSlicingReplicas=2)

    def config_hash(run):
        return _daemonset(run).inputs["spec"]["template"]["metadata"]["annotations"]["gpu-k8s/config-sha256"]

    assert config_hash(dev) != config_hash(sliced)


@pytest.mark.parametrize("replicas", [1, 2, 4, 48])
def test_time_slicing_config_round_trips_through_yaml(replicas):
    config = _plugin_config("none", replicas)
    assert yaml.safe_load(_config_yaml(config)) == config
    sharing = config.get("sharing", {}).get("timeSlicing", {}).get("resources")
    assert sharing == (None if replicas == 1 else [{"name": "nvidia.com/gpu", "replicas": replicas}])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "latest"}, "v0.12.0 or newer"),
        ({"version": "v0.11.0"}, "v0.12.0 or newer"),
        ({"version": "v0.20.0", "mig_strategy": "all"}, "mig_strategy"),
        ({"version": "v0.20.0", "time_slicing_replicas": 0}, "time_slicing_replicas"),
        ({"version": "v0.20.0", "time_slicing_replicas": True}, "time_slicing_replicas"),
        ({"version": "v0.20.0", "mig_strategy": "mixed", "time_slicing_replicas": 2}, "mixed"),
    ],
)
def test_args_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NvidiaDevicePluginArgs(**kwargs)


@pytest.mark.parametrize("strategy", ["single", "mixed"])
def test_mig_adds_sys_admin_and_the_mig_monitor_env_as_nvidias_chart(strategy):
    """v0.20.0 chart: requiresCapSysAdmin -> capabilities.add [SYS_ADMIN]; addMigMonitorDevices -> env.
    On gn7e (an A100 per third parties: MIG possible, unverified) the strategy is planned with a warning."""
    run = run_stack("p4", instanceType="ecs.gn7e-c16g1.4xlarge", migStrategy=strategy, gpuIsolation=False)
    (container,) = _daemonset(run).inputs["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"] == {"capabilities": {"add": ["SYS_ADMIN"]}}
    assert {"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"} in container["env"]
    assert any(w.startswith(f"gpu-k8s:migStrategy {strategy}: ecs.gn7e") for w in run.warnings)


def test_mig_on_gpus_without_mig_is_refused():
    from components.config import ConfigError

    with pytest.raises(ConfigError, match="(?s)migStrategy.*Tesla T4, NVIDIA A10 have no MIG"):
        run_stack("mixed", migStrategy="single")


def test_runtime_class_nvidia_for_pods_that_ask_for_the_nvidia_runtime(dev):
    (rc,) = kinds(dev, "RuntimeClass")
    assert rc.inputs["apiVersion"] == "node.k8s.io/v1"
    assert rc.inputs["metadata"] == {"name": "nvidia"} and rc.inputs["handler"] == "nvidia"
    assert rc.name == "gpu-k8s-device-plugin-runtime-class"


def test_gpu_nodes_carry_nvidia_gpu_present():
    t4 = catalog.profile_for("ecs.gn6i-c4g1.xlarge")
    assert cluster.node_labels("train", t4, "Tesla T4")["nvidia.com/gpu.present"] == "true"
    assert "nvidia.com/gpu.present" not in cluster.node_labels("control-plane", None, None)
