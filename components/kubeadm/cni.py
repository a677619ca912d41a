"""Flannel CNI: upstream kube-flannel.yml (v0.26.x) as typed Kubernetes resources.

Same objects, names and fields as flannel-io/flannel's release manifest: namespace
kube-flannel (privileged pod security), RBAC for the flannel service account, the
kube-flannel-cfg ConfigMap (CNI conflist + net-conf with the pod CIDR, VXLAN) and the
kube-flannel-ds DaemonSet. Images come from Docker Hub (``docker.io/flannel``), where
flannel publishes the same tags as on ghcr.io: Docker Hub mirrors are the usual way to
pull in mainland China (gpu-k8s:registryMirrors).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

IMAGE_REPO = "docker.io/flannel"
NAMESPACE = "kube-flannel"
NAME = "flannel"
CONFIG_MAP_NAME = "kube-flannel-cfg"
DAEMONSET_NAME = "kube-flannel-ds"
# The CNI plugin build upstream's Documentation/kube-flannel.yml pairs with the pinned flannel:
# v1.6.2-flannel1 at tags v0.26.4 to v0.26.7 (v1.7.1-flannel1 only from v0.27.0 on).
DEFAULT_CNI_PLUGIN_VERSION = "v1.6.2-flannel1"
_FLANNEL_VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+$")
_CNI_PLUGIN_VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+(-flannel\d+)?$")


@dataclass(frozen=True, kw_only=True)
class FlannelArgs:
    pod_cidr: str  # must equal kubeadm's --pod-network-cidr
    flannel_version: str  # docker.io/flannel/flannel tag, e.g. v0.26.7
    cni_plugin_version: str = DEFAULT_CNI_PLUGIN_VERSION  # docker.io/flannel/flannel-cni-plugin tag

    def __post_init__(self):
        try:
            net = ipaddress.ip_network(self.pod_cidr, strict=True)
        except ValueError:
            raise ValueError(f"FlannelArgs.pod_cidr {self.pod_cidr!r} is not a CIDR such as 10.244.0.0/16") from None
        if net.version != 4:
            raise ValueError(f"FlannelArgs.pod_cidr {self.pod_cidr!r}: this VXLAN setup is IPv4 only")
        if not _FLANNEL_VERSION_RE.match(self.flannel_version):
            raise ValueError(f"FlannelArgs.flannel_version {self.flannel_version!r}: expected a tag such as v0.26.7")
        if not _CNI_PLUGIN_VERSION_RE.match(self.cni_plugin_version):
            raise ValueError(
                f"FlannelArgs.cni_plugin_version {self.cni_plugin_version!r}: expected a tag such as v1.6.2-flannel1"
            )


def images(flannel_version: str, cni_plugin_version: str = DEFAULT_CNI_PLUGIN_VERSION) -> tuple[str, str]:
    """(flannel image, CNI plugin image): what the DaemonSet runs (and prefetch pulls ahead)."""
    return f"{IMAGE_REPO}/flannel:{flannel_version}", f"{IMAGE_REPO}/flannel-cni-plugin:{cni_plugin_version}"


def _cni_conf() -> str:
    return json.dumps(
        {
            "name": "cbr0",
            "cniVersion": "0.3.1",
            "plugins": [
                {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def _net_conf(pod_cidr: str) -> str:
    return json.dumps({"Network": pod_cidr, "EnableNFTables": False, "Backend": {"Type": "vxlan"}}, indent=2)


def _daemonset_spec(flannel_image: str, cni_plugin_image: str) -> dict:
    labels = {"app": "flannel", "tier": "node"}
    return {
        "selector": {"matchLabels": {"app": "flannel"}},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}
                            ]
                        }
                    }
                },
                "hostNetwork": True,
                "priorityClassName": "system-node-critical",
                # Every NoSchedule taint, GPU and control-plane included: no pod network otherwise.
                "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                "serviceAccountName": NAME,
                "initContainers": [
                    {
                        "name": "install-cni-plugin",
                        "image": cni_plugin_image,
                        "command": ["cp"],
                        "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                        "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}],
                    },
                    {
                        "name": "install-cni",
                        "image": flannel_image,
                        "command": ["cp"],
                        "args": ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
                        "volumeMounts": [
                            {"name": "cni", "mountPath": "/etc/cni/net.d"},
                            {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                        ],
                    },
                ],
                "containers": [
                    {
                        "name": "kube-flannel",
                        "image": flannel_image,
                        "command": ["/opt/bin/flanneld"],
                        "args": ["--ip-masq", "--kube-subnet-mgr"],
                        "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
                        "securityContext": {"privileged": False, "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "EVENT_QUEUE_DEPTH", "value": "5000"},
                        ],
                        "volumeMounts": [
                            {"name": "run", "mountPath": "/run/flannel"},
                            {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "run", "hostPath": {"path": "/run/flannel"}},
                    {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}},
                    {"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                    {"name": "flannel-cfg", "configMap": {"name": CONFIG_MAP_NAME}},
                    {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                ],
            },
        },
    }


class Flannel(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    config_map: k8s.core.v1.ConfigMap
    daemonset: k8s.apps.v1.DaemonSet
    flannel_image: str
    cni_plugin_image: str

    def __init__(self, name: str, args: FlannelArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:cni:Flannel", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.flannel_image, self.cni_plugin_image = images(args.flannel_version, args.cni_plugin_version)
        k8s_app = {"k8s-app": "flannel"}
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            # flanneld needs hostNetwork and NET_ADMIN: the namespace must admit privileged pods.
            metadata={"name": NAMESPACE, "labels": {**k8s_app, "pod-security.kubernetes.io/enforce": "privileged"}},
            opts=child,
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account", metadata={"name": NAME, "namespace": NAMESPACE, "labels": k8s_app}, opts=in_namespace
        )
        self.cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-cluster-role",
            metadata={"name": NAME, "labels": k8s_app},
            rules=[
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            ],
            opts=child,
        )
        self.cluster_role_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-cluster-role-binding",
            metadata={"name": NAME, "labels": k8s_app},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            subjects=[{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster_role, self.service_account]),
        )
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": CONFIG_MAP_NAME, "namespace": NAMESPACE, "labels": {"app": "flannel", **k8s_app, "tier": "node"}},
            data={"cni-conf.json": _cni_conf() + "\n", "net-conf.json": _net_conf(args.pod_cidr) + "\n"},
            opts=in_namespace,
        )
        # Awaited (no skipAwait): nodes only turn Ready once flannel runs on them.
        self.daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata={"name": DAEMONSET_NAME, "namespace": NAMESPACE, "labels": {"app": "flannel", **k8s_app, "tier": "node"}},
            spec=_daemonset_spec(self.flannel_image, self.cni_plugin_image),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.config_map, self.cluster_role_binding]),
        )
        self.register_outputs(
            {
                "namespace": NAMESPACE,
                "flannelImage": self.flannel_image,
                "cniPluginImage": self.cni_plugin_image,
                "podCidr": args.pod_cidr,
            }
        )
