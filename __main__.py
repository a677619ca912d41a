"""gpu-k8s: a GPU Kubernetes cluster on Alibaba Cloud, in the order of the seed walk-through."""

import pulumi

from components import lifecycle
from components.aliyun import access
from components.aliyun.network import Network, NetworkArgs
from components.aliyun.ssh_key import SshKey, SshKeyArgs, key_pair_prefix
from components.config import load_config
from components.config.gpu import feature_discovery_supported
from components.factory import create_cluster
from components.gpu import report
from components.gpu.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginArgs
from components.gpu.feature_discovery import GpuFeatureDiscovery, GpuFeatureDiscoveryArgs
from components.gpu.monitoring import GpuMonitoring, GpuMonitoringArgs
from components.gpu.smoke_test import GpuSmokeTest, GpuSmokeTestArgs

# 1. Config: every key read and validated before anything is created.
cfg = load_config()
allowed_cidrs = access.resolve_allowed_cidrs(cfg.allowed_cidrs)
#    What a running stack cannot change in place (region, backend, which node is the control
#    plane, the kubeadm version and pod CIDR) is refused first: everything below waits for it.
lifecycle.LifecycleGuard("gpu-k8s-lifecycle", lifecycle.LifecycleGuardArgs(facts=lifecycle.stack_facts(cfg)))

# 2. Network: VPC, vSwitch in a zone that sells the GPU types, locked-down security group.
network = Network(
    "gpu-k8s",
    NetworkArgs(
        region=cfg.region,
        instance_types=cfg.instance_types,
        allowed_cidrs=allowed_cidrs,
        spot=cfg.spot,
        stack=cfg.stack,
        zone_id=cfg.zone_id,
    ),
)

# 3. Access to the nodes: an SSH key pair (secret in state), for kubeadm's steps and for debugging.
ssh_key = SshKey("gpu-k8s-ssh", SshKeyArgs(key_pair_prefix=key_pair_prefix("gpu-k8s", cfg.stack, cfg.region)))

# 4. Nodes, Kubernetes and the pod network (gpu-k8s:cluster): kubeadm on our GPU instances over
#    SSH (driver by GPU family, containerd + NVIDIA runtime, flannel), or an ACK managed control
#    plane with GPU node pools (ACK installs the driver, runtime, flannel and its device plugin).
cluster = create_cluster(cfg, network, ssh_key)

# 5. GPU stack on Kubernetes: the NVIDIA device plugin on GPU nodes (ACK brings its own).
on_cluster = pulumi.ResourceOptions(providers={"kubernetes": cluster.provider})
network_ready = list(cluster.network_ready)
device_plugins: list[NvidiaDevicePlugin] = []
if not cluster.brings_device_plugin:
    device_plugins.append(
        NvidiaDevicePlugin(
            "gpu-k8s-device-plugin",
            NvidiaDevicePluginArgs(
                version=cfg.device_plugin_version,
                mig_strategy=cfg.mig_strategy,
                time_slicing_replicas=cfg.time_slicing_replicas,
                rename_shared=cfg.time_slicing_rename,
                isolation=cfg.gpu_isolation,
            ),
            pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}, depends_on=network_ready),
        )
    )

#     GPU Feature Discovery labels each GPU node (model, memory, sharing, CUDA driver) beside it.
feature_labels: tuple[str, ...] = ()
for plugin in device_plugins:
    if feature_discovery_supported(cfg.device_plugin_version):
        feature_labels = GpuFeatureDiscovery(
            "gpu-k8s-feature-discovery",
            GpuFeatureDiscoveryArgs(plugin=plugin, mig_strategy=cfg.mig_strategy),
            pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}, depends_on=network_ready),
        ).labels

# 5b. GPU metrics: dcgm-exporter on the GPU families DCGM supports, scraped by a small Prometheus.
gpu_metrics = None
if cfg.monitoring != "none":
    gpu_metrics = GpuMonitoring(
        "gpu-k8s-metrics",
        GpuMonitoringArgs(
            mode=cfg.monitoring,
            exporter_version=cfg.dcgm_exporter_version,
            prometheus_version=cfg.prometheus_version,
            pools={p.name: p.profile for p in cfg.pools},
            counters=cfg.dcgm_counters,
            retention=cfg.prometheus_retention,
            service_monitor_labels=cfg.service_monitor_labels,
            vgpu_metrics=cfg.vgpu_metrics,
            gpu_isolation=cfg.gpu_isolation and not cluster.brings_device_plugin,
        ),
        pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}, depends_on=network_ready),
    )

# 6. Test: wait for allocatable nvidia.com/gpu on every GPU node, run the GPU test there, read the verdict.
gpu_test = GpuSmokeTest(
    "gpu-k8s-smoke",
    GpuSmokeTestArgs(
        checks=cluster.checks,
        gpu_nodes=cluster.gpu_nodes(),
        test=cfg.smoke_test,
        image=cfg.smoke_test_image,
        image_cuda_version=cfg.smoke_test_cuda_version,
        time_slicing_replicas=cfg.time_slicing_replicas,
        gpu_resource=device_plugins[0].resource if device_plugins else "nvidia.com/gpu",
        run=cfg.gpu_test_run,
        verifies=[plugin.fingerprint for plugin in device_plugins],
        device_plugin=[plugin.daemonset for plugin in device_plugins],
        after=list(cluster.ready),
    ),
    on_cluster,
)

# 7. Node images (gpu-k8s:nodeImage bake): baked once the cluster works, for the nodes made later.
cluster.bake_images(after=[gpu_test])

# 8. Exports: how to reach the cluster, what it costs, when it goes away.
pulumi.export("region", cfg.region)
pulumi.export("zone", network.vswitch.zone_id)
pulumi.export("zoneChoice", network.zone_choice)
pulumi.export("allowedCidrs", list(allowed_cidrs))
pulumi.export("cluster", cluster.kind)
pulumi.export("controlPlaneIp", cluster.api_endpoint)
pulumi.export("nodes", cluster.describe_nodes())
pulumi.export("gpuTest", gpu_test.result)
pulumi.export("gpuNodes", report.gpu_node_table(cluster, gpu_test, feature_labels))
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("sshPrivateKey", ssh_key.private_key)
pulumi.export("autoReleaseTime", cluster.auto_release)
pulumi.export("imageId", cluster.image_id)
pulumi.export("cost", cluster.cost())
pulumi.export("timings", cluster.timings())
pulumi.export("gpuMetrics", gpu_metrics.summary if gpu_metrics else "off (gpu-k8s:monitoring none)")
