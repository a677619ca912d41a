"""gpu-k8s: a GPU Kubernetes cluster on Alibaba Cloud, in the order of the seed walk-through."""

import pulumi

from components import access, cost, prefetch, report
from components.auto_release import AutoRelease, AutoReleaseArgs
from components.bootstrap import NodeSetup
from components.cluster import KubeCluster, KubeClusterArgs
from components.cni import Flannel, FlannelArgs
from components.config import load_config
from components.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginArgs
from components.fleet import Fleet, FleetArgs, hostnames
from components.monitoring import GpuMonitoring, GpuMonitoringArgs
from components.network import Network, NetworkArgs
from components.node import replacing_inputs
from components.smoke_test import GpuSmokeTest, GpuSmokeTestArgs
from components.ssh_key import SshKey, SshKeyArgs, key_pair_prefix

# 1. Config: every key read and validated before anything is created.
cfg = load_config()
allowed_cidrs = access.resolve_allowed_cidrs(cfg.allowed_cidrs)

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

# 3. Nodes: SSH key, auto-release time, pay-as-you-go GPU instances.
ssh_key = SshKey("gpu-k8s-ssh", SshKeyArgs(key_pair_prefix=key_pair_prefix("gpu-k8s", cfg.stack, cfg.region)))
# One release anchor per node, re-taken when that node's instance is replaced.
release = AutoRelease(
    "gpu-k8s-ttl",
    AutoReleaseArgs(
        ttl_hours=cfg.ttl_hours,
        hostnames=tuple(hostnames(cfg.pools, cfg.control_plane_instance_type)),
        replace_triggers=replacing_inputs(cfg.spot, cfg.spot_price_limit),
    ),
)
fleet = Fleet(
    "gpu-k8s",
    FleetArgs(
        pools=cfg.pools,
        control_plane_instance_type=cfg.control_plane_instance_type,
        image_name_regex=cfg.image_name_regex,
        image_id=cfg.image_id,
        vswitch_id=network.vswitch.id,
        security_group_id=network.security_group.id,
        key_pair_name=ssh_key.key_pair_name,
        system_disk_gib=cfg.system_disk_gib,
        public_bandwidth_mbps=cfg.public_bandwidth_mbps,
        auto_release_times=release.release_times,
        spot=cfg.spot,
        spot_price_limit=cfg.spot_price_limit,
    ),
)

# 4. Bootstrap over SSH: driver by GPU family, containerd + NVIDIA runtime, kubeadm, kubeconfig.
cluster = KubeCluster(
    "gpu-k8s",
    KubeClusterArgs(
        fleet=fleet,
        private_key=ssh_key.private_key,
        setup=NodeSetup(
            driver_version=cfg.driver_version,
            grid_driver_version=cfg.grid_driver_version,
            install_cuda_toolkit=cfg.install_cuda_toolkit,
            cuda_toolkit_version=cfg.cuda_toolkit_version,
            grid_driver_url=cfg.grid_driver_url,
            container_toolkit_version=cfg.container_toolkit_version,
            package_mirror=cfg.kubernetes_mirror,
            registry_mirrors=cfg.registry_mirrors,
            install_docker=cfg.install_docker,
            kubernetes_version=cfg.kubernetes_version,
        ),
        pod_cidr=cfg.pod_cidr,
        images=prefetch.from_config(cfg),  # pulled while the driver builds (the manifests' images)
        ssh_rules=tuple(network.ssh_rules),
        api_rules=tuple(network.api_rules),
    ),
)

# 5. GPU stack on Kubernetes: pod network, then the NVIDIA device plugin on GPU nodes.
on_cluster = pulumi.ResourceOptions(providers={"kubernetes": cluster.provider})
cni = Flannel("gpu-k8s-cni", FlannelArgs(pod_cidr=cfg.pod_cidr, flannel_version=cfg.flannel_version), on_cluster)
device_plugin = NvidiaDevicePlugin(
    "gpu-k8s-device-plugin",
    NvidiaDevicePluginArgs(
        version=cfg.device_plugin_version, mig_strategy=cfg.mig_strategy, time_slicing_replicas=cfg.time_slicing_replicas
    ),
    pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}, depends_on=[cni]),
)

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
        ),
        pulumi.ResourceOptions(providers={"kubernetes": cluster.provider}, depends_on=[cni]),
    )

# 6. Test: wait for allocatable nvidia.com/gpu on every GPU node, run the GPU test there, read the verdict.
gpu_test = GpuSmokeTest(
    "gpu-k8s-smoke",
    GpuSmokeTestArgs(
        connection=cluster.control_plane_connection,
        gpu_nodes=cluster.gpu_nodes(),
        test=cfg.smoke_test,
        image=cfg.smoke_test_image,
        image_cuda_version=cfg.smoke_test_cuda_version,
        time_slicing_replicas=cfg.time_slicing_replicas,
        device_plugin=[device_plugin.daemonset],
        after=list(cluster.node_labels.values()),
    ),
    on_cluster,
)

# 7. Exports: how to reach the cluster, what it costs, when it goes away.
pulumi.export("region", cfg.region)
pulumi.export("zone", network.vswitch.zone_id)
pulumi.export("zoneChoice", network.zone_choice)
pulumi.export("allowedCidrs", list(allowed_cidrs))
pulumi.export("controlPlaneIp", fleet.control_plane.public_ip)
pulumi.export("nodes", fleet.describe())
pulumi.export("gpuTest", gpu_test.result)
pulumi.export("gpuNodes", report.gpu_node_table(fleet, cluster, gpu_test))
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("sshPrivateKey", ssh_key.private_key)
pulumi.export("autoReleaseTime", release.earliest or "off: the instances bill until `make down`")
pulumi.export("imageId", fleet.control_plane.image_id)
pulumi.export("cost", cost.stack_cost(cfg, fleet))
pulumi.export("timings", cluster.timings())  # per node, in run order; measured on a real run
pulumi.export("gpuMetrics", gpu_metrics.summary if gpu_metrics else "off (gpu-k8s:monitoring none)")
