"""Stand-in program for the GPU-on-Kubernetes layer (CNI, device plugin, smoke test).

Run by tests through tools.harness.run_program(..., program=this file) with the real
stack config, until __main__.py wires these components itself. No cloud resources:
a fake kubeconfig and a documentation-range control-plane IP.
"""

import pulumi
import pulumi_kubernetes as k8s

from components import cuda, remote
from components.cni import Flannel, FlannelArgs
from components.config import load_config
from components.device_plugin import NvidiaDevicePlugin, NvidiaDevicePluginArgs
from components.smoke_test import GpuNode, GpuSmokeTest, GpuSmokeTestArgs
from tools.mocks import FAKE_KUBECONFIG

CONTROL_PLANE_IP = "203.0.113.10"

cfg = load_config()
provider = k8s.Provider("gpu-k8s-k8s", kubeconfig=FAKE_KUBECONFIG.format(server=CONTROL_PLANE_IP))
k8s_opts = pulumi.ResourceOptions(providers={"kubernetes": provider})

cni = Flannel("gpu-k8s-cni", FlannelArgs(pod_cidr=cfg.pod_cidr, flannel_version=cfg.flannel_version), k8s_opts)
plugin = NvidiaDevicePlugin(
    "gpu-k8s-device-plugin",
    NvidiaDevicePluginArgs(
        version=cfg.device_plugin_version, mig_strategy=cfg.mig_strategy, time_slicing_replicas=cfg.time_slicing_replicas
    ),
    pulumi.ResourceOptions(providers={"kubernetes": provider}, depends_on=[cni]),
)
smoke = GpuSmokeTest(
    "gpu-k8s-smoke",
    GpuSmokeTestArgs(
        connection=remote.connection(CONTROL_PLANE_IP, pulumi.Output.secret("PLACEHOLDER-KEY")),
        gpu_nodes=[
            GpuNode(node, pool.profile, cuda.node_driver(pool.profile, cfg.driver_version))
            for pool in cfg.pools
            for node in pool.node_names()
        ],
        test=cfg.smoke_test,
        image=cfg.smoke_test_image,
        image_cuda_version=cfg.smoke_test_cuda_version,
        time_slicing_replicas=cfg.time_slicing_replicas,
        device_plugin=[plugin.daemonset],
    ),
    k8s_opts,
)
pulumi.export("gpuAllocatable", smoke.allocatable)
pulumi.export("gpuTest", smoke.result)
