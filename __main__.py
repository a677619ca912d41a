"""gpu-k8s: a GPU Kubernetes cluster on Alibaba Cloud, in the order of the seed walk-through."""

import pulumi

from components import access, cost
from components.auto_release import AutoRelease, AutoReleaseArgs
from components.config import load_config
from components.fleet import Fleet, FleetArgs
from components.network import Network, NetworkArgs
from components.ssh_key import SshKey, SshKeyArgs

# 1. Config: every key read and validated before anything is created.
cfg = load_config()
allowed_cidrs = access.resolve_allowed_cidrs(cfg.allowed_cidrs)

# 2. Network: VPC, vSwitch in a zone that sells the GPU types, locked-down security group.
network = Network(
    "gpu-k8s",
    NetworkArgs(
        region=cfg.region,
        instance_types=tuple(dict.fromkeys(p.instance_type for p in cfg.pools if p.count)),
        allowed_cidrs=allowed_cidrs,
        spot=cfg.spot,
    ),
)

# 3. Nodes: SSH key, auto-release time, pay-as-you-go GPU instances.
ssh_key = SshKey("gpu-k8s-ssh", SshKeyArgs(key_pair_name=f"gpu-k8s-{cfg.stack}"))
release = AutoRelease("gpu-k8s-ttl", AutoReleaseArgs(ttl_hours=cfg.ttl_hours))
fleet = Fleet(
    "gpu-k8s",
    FleetArgs(
        pools=cfg.pools,
        control_plane_instance_type=cfg.control_plane_instance_type,
        image_name_regex=cfg.image_name_regex,
        vswitch_id=network.vswitch.id,
        security_group_id=network.security_group.id,
        key_pair_name=ssh_key.key_pair_name,
        system_disk_gib=cfg.system_disk_gib,
        public_bandwidth_mbps=cfg.public_bandwidth_mbps,
        auto_release_time=release.release_time,
        spot=cfg.spot,
        spot_price_limit=cfg.spot_price_limit,
    ),
)

# 7. Exports: how to reach the cluster, what it costs, when it goes away.
pulumi.export("region", cfg.region)
pulumi.export("zone", network.zone_id)
pulumi.export("allowedCidrs", list(allowed_cidrs))
pulumi.export("controlPlaneIp", fleet.control_plane.public_ip)
pulumi.export("nodes", fleet.describe())
pulumi.export("sshPrivateKey", ssh_key.private_key)
pulumi.export("autoReleaseTime", release.release_time or "off: the instances bill until `make down`")
pulumi.export("cost", cost.stack_cost(cfg, fleet))
