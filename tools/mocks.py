"""The mock cloud: what Aliyun, the SSH targets and the local machine would answer.

Every value that only the cloud knows at deploy time (zone, image id, IPs, command
output) is an obvious placeholder, and each one is recorded in ``placeholders`` with
a label so the plan can print a legend. Invokes are strict: an unknown token fails.

Facts a later run may meet (``python -m tools.plan --assume``): the newest image
(``image``), the zones that still sell the types (``zones``), the deployer's clock
(``clock``) and what the GPU test pods do (``gpu_test``: a failing outcome is the real
result script's verdict, tools/mock_cluster.py). Ids are stable per resource: the
same id for ``same``/``update`` against a previous state, a new one on create/replace
(``respond``, called by the harness's engine model).

What each host holds is modelled too (``host_files``): a remote step that runs finds its
script only where a CopyToRemote really copied it, as pulumi-command does it: a copy copies
when it is created or replaced, and on an update only when its asset or remote path changed
(pulumi-command provider/pkg/provider/remote/copyController.go ``Update``: ``needCopy :=
news.hash() != olds.hash() || news.RemotePath != olds.RemotePath``). A new instance (a new
address) starts with no file, and an in-place image change (ReplaceSystemDisk) wipes one.
A step that runs where its script is missing fails as bash would (exit 127), which fails
`pulumi up` (reference §2).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from pulumi.runtime import mocks as pulumi_mocks

from components.steps import REMOTE_DIR
from tools import engine, mock_cluster

PUBLIC_IP_BASE = "203.0.113."  # RFC 5737 TEST-NET-3: documentation only
PRIVATE_IP_BASE = "192.0.2."  # RFC 5737 TEST-NET-1: documentation only
DEPLOYER_IP = "198.51.100.7"  # RFC 5737 TEST-NET-2: documentation only
ZONE = "<zone>"
CHECKED_AT = "<placeholder: when the GPU test result was read>"
IMAGE_ID = "<image-id: newest match of imageNameRegex>"
NAT_GATEWAY = "<nat-gateway: found after the ACK cluster is created, if ACK made one>"


FAKE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: gpu-k8s
  cluster:
    server: https://{server}:6443
    certificate-authority-data: {ca}
contexts:
- name: gpu-k8s
  context: {{cluster: gpu-k8s, user: kubernetes-admin}}
current-context: gpu-k8s
users:
- name: kubernetes-admin
  user: {{client-certificate-data: PLACEHOLDER, client-key-data: PLACEHOLDER}}
"""

# ACK (issue 14): what only ACK knows at deploy time. The cluster's API server sits behind an SLB
# (connections.api_server_internet / _intranet in the provider's Read).
ACK_API_SERVER = "<ack-api-server: public address of the ACK API server SLB>"
ACK_API_SERVER_PRIVATE = "<ack-api-server-private: VPC address of the ACK API server SLB>"
ACK_API_SERVER_LABELS = {
    ACK_API_SERVER: "public address of the ACK API server SLB (slbInternetEnabled; assigned by ACK at deploy time)",
    ACK_API_SERVER_PRIVATE: "VPC address of the ACK API server SLB (assigned by ACK at deploy time)",
}
ACK_KUBECONFIG_EXPIRY = "<ack-kubeconfig-expiry: when ACK's kubeconfig certificate expires>"
ACK_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: kubernetes
  cluster:
    server: https://{server}:6443
    certificate-authority-data: {ca}
contexts:
- name: ack-admin
  context: {{cluster: kubernetes, user: ack-user}}
current-context: ack-admin
users:
- name: ack-user
  user: {{client-certificate-data: PLACEHOLDER, client-key-data: PLACEHOLDER}}
"""
ACK_VERSIONS = Path(__file__).resolve().parent / "fixtures" / "ack-kubernetes-versions.json"
ACK_CLUSTER = "alicloud:cs/managedKubernetes:ManagedKubernetes"
# Deployer-side scripts the mocks run for real: a node's image record (components/aliyun/node.py)
# and the lifecycle guard (components/lifecycle.py). Both only compare and print.
DEPLOYER_SCRIPT = re.compile(r"bash components/scripts/local/(image-record|lifecycle-guard)\.sh$")
ROOT = Path(__file__).resolve().parent.parent


def command_env(create: str) -> dict[str, str]:
    """VAR=value pairs at the front of a rendered command line: a remote step's
    ``... bash /opt/gpu-k8s/NN.sh`` or a deployer check's ``... bash
    components/scripts/local/with-kubeconfig.sh components/scripts/NN.sh``. Words from the
    command on (``bash`` and its arguments) are not environment."""
    env: dict[str, str] = {}
    try:
        words = shlex.split(create or "")
    except ValueError:
        return env
    for word in words:
        if not ("=" in word and word.split("=", 1)[0].isidentifier()):
            break
        key, value = word.split("=", 1)
        env[key] = value
    return env


def _runs_on_deployer(name: str, create: object) -> bool:
    """A cluster check run on the deployer (remote.run_local_script): 70/80 via with-kubeconfig.sh."""
    return name.endswith(("-gpu-allocatable", "-gpu-test-result")) and mock_cluster.WITH_KUBECONFIG in str(create or "")


_GENERATION = re.compile(r" #(\d+)>$")


@functools.lru_cache(maxsize=512)
def _run_pure_script(command: str, env: tuple[tuple[str, str], ...]) -> subprocess.CompletedProcess:
    """A deployer script, run once per (command, environment) in this process: the scripts the
    mocks run for real (DEPLOYER_SCRIPT: image record, lifecycle guard) read only their
    environment, so the same inputs give the same outputs; a suite plans the same node many times."""
    return subprocess.run(["/bin/sh", "-c", command], cwd=ROOT, env=dict(env), capture_output=True, text=True, check=False)


def _instance_of(dependencies) -> str:
    """The URN of the ECS instance among a resource's dependencies ("" when none)."""
    return next((u for u in dependencies if re.search(r"[$:]alicloud:ecs/instance:Instance::", u)), "")


def next_id(name: str, old_id: str | None) -> str:
    """``<name id>`` at first create, ``<name id #2>``, ``#3`` ... at each replacement."""
    if not old_id:
        return f"<{name} id>"
    m = _GENERATION.search(old_id)
    return f"<{name} id #{int(m.group(1)) + 1 if m else 2}>"


def _holds_marker(value: object) -> bool:
    """A saved value that stands for something the state file does not hold (a secret, an asset)."""
    if isinstance(value, str):
        return value.startswith(("[secret", "<text asset", "file:", "[unknown]"))
    if isinstance(value, dict):
        return any(_holds_marker(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_marker(v) for v in value)
    return False


class PlaceholderMocks(pulumi_mocks.Mocks):
    """Strict mocks with labelled placeholders. ``clock`` is injectable for TTL tests."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        image: str | None = None,
        zones: list[str] | None = None,
        gpu_test: str | None = None,
    ):
        if gpu_test is not None and gpu_test not in mock_cluster.GPU_TEST_OUTCOMES:
            raise ValueError(f"gpu_test {gpu_test!r}: expected one of {', '.join(mock_cluster.GPU_TEST_OUTCOMES)}")
        self.clock = clock
        self.image = image
        self.zones = zones
        self.gpu_test = gpu_test
        # What the cloud holds from an earlier `pulumi up` (engine states; set by the harness).
        self._existing: list[engine.State] = []
        # (instance URN, instance id, path) of every file a CopyToRemote put on a host (module
        # docstring): a host is one instance, a replaced instance (new id) is a new, empty host.
        self.host_files: set[tuple[str, str, str]] = set()
        self.ids: dict[str, str] = {}  # URN -> id, as this run leaves it
        self.placeholders: dict[str, str] = {
            ZONE: "availability zone Aliyun picks for the instance type (get_zones at deploy time)",
        }
        if zones is not None:
            self.placeholders.pop(ZONE)
        self._pinned_zone: str | None = None
        # NAT gateways an ACK cluster's VPC holds after create: None = unknown offline (a
        # labelled placeholder, priced so the plan shows what one would cost).
        self.nat_gateways: list[str] | None = None
        # Images this account already has (owner self), beside the Image states of an earlier run:
        # {"id", "imageId", "name", "tags"}, e.g. one kept by retain_on_delete after `make down`.
        self.baked_images: list[dict] = []
        self.invokes: list[pulumi_mocks.MockCallArgs] = []
        # Steps that fail at deploy time (they make `pulumi up` fail): messages, resource names.
        self.failures: list[str] = []
        self.failed: list[str] = []
        self._hosts: dict[int, str] = {}
        self._ack_clusters: dict[str, tuple[str, bool]] = {}  # ACK cluster id -> (name, public endpoint?)
        # Extra stdout producers for remote commands, by resource-name suffix.
        self.command_stdout: dict[str, Callable[[dict, dict[str, str]], str]] = {
            "-kubeconfig": self._kubeconfig,
            "-gpu-verify": self._gpu_verify,
            "-nvidia-driver": self._driver_installed,
            "-ca-hash": self._ca_hash,
            "-gpu-allocatable": self._gpu_allocatable,
            "-gpu-test-result": self._gpu_test_result,
        }

    def pin_zone(self, zone: str | None) -> None:
        """gpu-k8s:zoneId: offline, with no zone list assumed, the pinned zone is taken as one
        get_zones lists; labelled, since only the deployed get_zones can confirm it."""
        if self.zones is not None or not zone:
            return
        self._pinned_zone = zone
        self.placeholders.pop(ZONE, None)
        self.placeholders[zone] = (
            "gpu-k8s:zoneId as pinned: whether it sells every type is checked at deploy time (get_zones); "
            "offline it is assumed (--assume zones=Z1,Z2 to check against a list)"
        )

    @property
    def existing(self) -> list[engine.State]:
        return self._existing

    @existing.setter
    def existing(self, states: list[engine.State]) -> None:
        """The cloud after an earlier `up`: its resources, and the files its copies left on the hosts."""
        self._existing = list(states)
        self.ids = {s.urn: s.id for s in self._existing}
        self.host_files = set()
        for s in self._existing:
            host = _instance_of(s.connection_dependencies)
            if s.type == "command:remote:CopyToRemote" and host:
                self.host_files.add((host, self.ids.get(host, ""), str(s.inputs.get("remotePath", ""))))

    # --- invokes ---------------------------------------------------------------------
    def call(self, args: pulumi_mocks.MockCallArgs):
        self.invokes.append(args)
        token, a = args.token, args.args
        if token == "alicloud:index/getZones:getZones":
            zones = self.zones if self.zones is not None else [self._pinned_zone or ZONE]
            return {"ids": zones, "zones": [{"id": z, "localName": z} for z in zones]}
        if token == "alicloud:vpc/getNatGateways:getNatGateways":
            if self.nat_gateways is None:
                self.placeholders[NAT_GATEWAY] = (
                    "ACK's CreateCluster default decides whether it makes a NAT gateway (the provider never sends "
                    "new_nat_gateway=false); the deployed stack looks for one and prices it only if found"
                )
            ids = [NAT_GATEWAY] if self.nat_gateways is None else list(self.nat_gateways)
            return {"ids": ids, "names": ids, "gateways": [{"id": i, "vpcId": a.get("vpcId", "")} for i in ids]}
        if token == "alicloud:vpc/getSwitches:getSwitches":
            # The cloud has what an earlier `pulumi up` created: this stack's vSwitch (a
            # previous state given to the harness), else none (a first deploy).
            # The data source filters on name and (when given) every tag.
            wanted = dict(a.get("tags") or {})
            found = [
                s
                for s in self.existing
                if s.type == "alicloud:vpc/switch:Switch"
                and s.outputs.get("vswitchName") == a.get("vswitchName")
                and wanted.items() <= dict(s.outputs.get("tags") or {}).items()
            ]
            return {
                "ids": [s.id for s in found],
                "vswitches": [
                    {
                        "id": s.id,
                        "zoneId": s.outputs.get("zoneId", ""),
                        "vpcId": s.outputs.get("vpcId", ""),
                        "tags": s.outputs.get("tags") or {},
                    }
                    for s in found
                ],
            }
        if token == "alicloud:ecs/getImages:getImages" and a.get("owners") == "self":
            # This account's images with the given tags: what an earlier `up` baked (its Image
            # states; retained after it leaves the program), else none (a bake is planned).
            # One status a call, Available unless asked (the provider's data source default).
            wanted, status = dict(a.get("tags") or {}), a.get("status") or "Available"
            found = [
                s
                for s in self.existing
                if s.type == "alicloud:ecs/image:Image"
                and status == "Available"
                and wanted.items() <= dict(s.outputs.get("tags") or {}).items()
            ] + [i for i in self.baked_images if wanted.items() <= i["tags"].items() and i.get("status", "Available") == status]
            images = [
                {"id": i.id, "imageId": i.id, "name": i.outputs.get("imageName", "")} if hasattr(i, "id") else i for i in found
            ]
            return {"ids": [i["id"] for i in images], "images": images}
        if token == "alicloud:ecs/getImages:getImages":
            image = self.image or IMAGE_ID
            if self.image is None:  # only where the program looks an image up (not on ACK)
                self.placeholders[IMAGE_ID] = "system image id (get_images at deploy time)"
            return {
                "ids": [image],
                "images": [{"id": image, "imageId": image, "name": image, "osType": "linux"}],
            }
        if token == "alicloud:ecs/getInstanceTypes:getInstanceTypes":
            # Offline there is no price list: the program falls back to its estimate.
            itype = a.get("instanceType", "")
            return {"ids": [itype], "instanceTypes": [{"id": itype, "price": ""}]}
        if token == "alicloud:cs/getClusterCredential:getClusterCredential":
            return self._ack_credential(a)
        if token == "alicloud:cs/getKubernetesVersion:getKubernetesVersion":
            return self._ack_versions(a)
        if token == "command:local:run":
            self.placeholders[DEPLOYER_IP + "/32"] = "your public IP, detected at deploy time (allowedCidrs: auto)"
            return {"stdout": DEPLOYER_IP + "\n", "stderr": "", "assets": {}}
        raise NotImplementedError(f"strict mocks: unexpected invoke {token} with {sorted(a)}")

    # --- resources ---------------------------------------------------------------------
    def respond(self, args: pulumi_mocks.MockResourceArgs, op: str, old: engine.State | None):
        """Id and outputs as the engine leaves them after ``op`` against ``old`` (its state).

        same: the old id and outputs (nothing runs), except values the saved state only
        holds as digests (secrets), which are the mocks' own deterministic answers;
        update: the old id, the new inputs, a command's new stdout, other computed outputs kept;
        create/replace: a new id, fresh outputs.
        """
        args.op = op  # read by new_resource: only steps that run produce failures
        args.old = old  # and what a copy had (CopyToRemote copies on update only on a new asset or path)
        rid, out = self._respond(args, op, old)
        if getattr(args, "urn", ""):
            self.ids[args.urn] = rid
        return rid, out

    def _respond(self, args: pulumi_mocks.MockResourceArgs, op: str, old: engine.State | None):
        rid, out = self.new_resource(args)
        if old is None:
            return rid, out
        if args.typ.startswith("kubernetes:") and not args.typ.startswith("pulumi:providers"):
            return rid, out  # the object's id is namespace/name, replaced or not
        rid = (old.id or rid) if op in (engine.SAME, engine.UPDATE) else next_id(args.name, old.id)
        if op == engine.REPLACE and args.typ == "alicloud:ecs/instance:Instance":
            # A new instance: new addresses (no EIP), so every step that dials it runs again.
            n = self._host_number(rid, avoid=str(old.outputs.get("publicIp", "")))
            public, private = f"{PUBLIC_IP_BASE}{n}", f"{PRIVATE_IP_BASE}{n}"
            self.placeholders[public] = f"public IP of the replacement {args.name} (assigned by Aliyun)"
            self.placeholders[private] = f"private IP of the replacement {args.name} (assigned by Aliyun)"
            out.update(publicIp=public, privateIp=private, primaryIpAddress=private)
        if op == engine.REPLACE and args.typ == "alicloud:cs/nodePool:NodePool":
            # A new node pool is a new pool and a new ESS scaling group (what its TTL task scales).
            gen = _GENERATION.search(rid)
            for key, what in (("nodePoolId", "node pool id"), ("scalingGroupId", "ESS scaling group id")):
                value = f"<{args.name} {what} #{gen.group(1) if gen else 2}>"
                self.placeholders[value] = f"{what} of the replacement node pool {args.name} (assigned by ACK)"
                out[key] = value
        if op == engine.REPLACE and args.typ == "random:index/randomString:RandomString":
            # A replaced random string is a new random value (§4), so what it feeds changes.
            m = _GENERATION.search(rid)
            char = "xyzwvu"[(int(m.group(1)) - 1) % 6 if m else 0]
            out["result"] = char * len(str(out.get("result", "")))
            self.placeholders.setdefault(
                char * 6, "random bootstrap-token characters of a replacement (generated at deploy time)"
            )
        from tools.harness import canonical

        for key, saved in old.outputs.items() if op in (engine.SAME, engine.UPDATE) else ():
            if _holds_marker(saved) or (key in out and canonical(out[key]) == saved):
                continue
            # same: nothing runs, the old outputs stand. update: inputs are new, a command's
            # stdout is its new run's; other computed outputs (an instance's IPs, a random
            # result: §4) stay what the resource has.
            if op == engine.SAME or (key not in args.inputs and args.typ not in engine.COMMAND_TYPES):
                out[key] = saved
        if op == engine.REPLACE and args.typ == "tls:index/privateKey:PrivateKey":
            # A replaced key is a new key (§4): the key pair's name and every SSH connection change.
            out.update(self._key_material(rid))
        if op == engine.UPDATE and args.typ == "alicloud:ecs/instance:Instance":
            # An in-place image change is ReplaceSystemDisk (§1.2): the host's files are gone.
            from tools.harness import canonical as _canonical

            if _canonical(args.inputs.get("imageId")) != old.inputs.get("imageId"):
                self.host_files = {f for f in self.host_files if f[0] != getattr(args, "urn", "")}
        return rid, out

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        typ, name, inputs = args.typ, args.name, dict(args.inputs)
        rid = f"<{name} id>"
        runs = getattr(args, "op", engine.CREATE) != engine.SAME
        out = dict(inputs)
        if typ == "alicloud:ecs/instance:Instance":
            n = self._host_number(name)
            public, private = f"{PUBLIC_IP_BASE}{n}", f"{PRIVATE_IP_BASE}{n}"
            self.placeholders[public] = f"public IP of {name} (assigned by Aliyun)"
            self.placeholders[private] = f"private IP of {name} (assigned by Aliyun)"
            out.update(publicIp=public, privateIp=private, primaryIpAddress=private, status="Running")
        elif typ == "tls:index/privateKey:PrivateKey":
            out.update(self._key_material(rid))
        elif typ == "command:remote:CopyToRemote" and runs:
            self._copy(args, inputs)
        elif typ == "random:index/randomString:RandomString":
            length = int(inputs.get("length", 8))
            out["result"] = ("x" * length)[:length]
            self.placeholders.setdefault("x" * 6, "random bootstrap-token characters (generated at deploy time)")
        elif typ == "command:remote:Command":
            # The id is stable (engine: same/update keep it; a replace gets a new one, respond),
            # so steps that chain on ids (triggers) re-run only when an upstream is replaced.
            if runs:
                self._check_script_on_host(args, inputs)
            out.setdefault("stdout", self._remote_stdout(name, inputs, runs))
            out.setdefault("stderr", "")

        elif typ == "command:local:Command" and DEPLOYER_SCRIPT.search(str(inputs.get("create", ""))):
            if runs:  # the image record and the lifecycle guard: the real script, as the engine runs it
                out.update(self._run_deployer_script(args, inputs))
        elif typ == "command:local:Command" and _runs_on_deployer(name, inputs.get("create")):
            out.setdefault("stdout", self._remote_stdout(name, inputs, runs, local=True))  # 70/80 from the deployer
            out.setdefault("stderr", "")
        elif typ == "command:local:Command":
            out.setdefault("stdout", str(int(self.clock())))
            out.setdefault("stderr", "")
        elif typ == ACK_CLUSTER:
            out.update(self._ack_cluster_outputs(name, inputs, rid))
        elif typ == "alicloud:cs/nodePool:NodePool":
            # The provider's id is "<cluster id>:<node pool id>"; the pool's scaling group is what
            # an ESS scheduled task scales (Read: node_pool_id, scaling_group_id).
            for key, what in (("nodePoolId", "node pool id"), ("scalingGroupId", "ESS scaling group id")):
                value = f"<{name} {what}>"
                self.placeholders[value] = f"{what} of node pool {name} (assigned by ACK)"
                out[key] = value
        elif typ == "alicloud:ess/scheduledTask:ScheduledTask":
            # The resource's id is the task id (CreateScheduledTask's ScheduledTaskId); the SDK has
            # no task_id output.
            self.placeholders[rid] = f"ESS scheduled task id of {name} (assigned by Auto Scaling)"
        elif typ.startswith("kubernetes:") and not typ.startswith("pulumi:providers"):
            meta = dict(out.get("metadata") or {})
            rid = "/".join(x for x in (meta.get("namespace"), meta.get("name")) if x) or rid
        return rid, out

    def _host_number(self, name: str, *, avoid: str = "") -> int:
        """A last octet that depends on the instance's name only (stable when nodes are added);
        a replacement never gets the address of the instance it replaces (``avoid``)."""
        n = 10 + zlib.crc32(name.encode()) % 240
        while self._hosts.get(n, name) != name or f"{PUBLIC_IP_BASE}{n}" == avoid:
            n = 10 + (n - 9) % 240
        self._hosts[n] = name
        return n

    # --- hosts, keys and the lifecycle guard (issue 20) ------------------------------------
    @staticmethod
    def _key_material(rid: str) -> dict[str, str]:
        """A placeholder SSH key per key generation: a replaced tls key is another key (§4)."""
        m = _GENERATION.search(rid)
        tag = f"PLACEHOLDER{'-' + m.group(1) if m else ''}"
        return {
            "privateKeyOpenssh": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{tag}\n-----END OPENSSH PRIVATE KEY-----\n",
            "privateKeyPem": f"-----BEGIN RSA PRIVATE KEY-----\n{tag}\n-----END RSA PRIVATE KEY-----\n",
            "publicKeyOpenssh": f"ssh-rsa AAAAB3NzaC1yc2E{tag} gpu-k8s\n",
            "publicKeyFingerprintSha256": f"SHA256:{tag}",
        }

    def _host(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, str]:
        """The instance a copy or a step connects to (its URN and id now), from its dependencies."""
        urn = _instance_of(getattr(args, "connection_dependencies", ()))
        return urn, self.ids.get(urn, "")

    def _copy(self, args: pulumi_mocks.MockResourceArgs, inputs: dict) -> None:
        """A CopyToRemote that runs: it copies on create and replace; on update only when its
        asset or remote path changed (copyController.go ``Update``)."""
        from tools.harness import canonical

        path = str(inputs.get("remotePath", ""))
        old = getattr(args, "old", None)
        same_file = old is not None and (canonical(inputs.get("source")), path) == (
            old.inputs.get("source"),
            old.inputs.get("remotePath"),
        )
        if getattr(args, "op", engine.CREATE) == engine.UPDATE and same_file:
            return  # only the connection changed: nothing is copied
        self.host_files.add((*self._host(args), path))

    def _check_script_on_host(self, args: pulumi_mocks.MockResourceArgs, inputs: dict) -> None:
        """A remote step that runs `bash /opt/gpu-k8s/<script>` fails where no copy put the script."""
        words = shlex.split(str(inputs.get("create") or ""))
        host = self._host(args)
        for path in [w for w in words if w.startswith(f"{REMOTE_DIR}/")]:
            if (*host, path) not in self.host_files:
                self.failures.append(
                    f"{args.name}: bash: {path}: No such file or directory (exit 127) on {host[0].rsplit('::', 1)[-1]} "
                    f"{host[1]}: no copy put the script on this instance (a CopyToRemote whose only change is its "
                    "connection copies nothing)"
                )
                self.failed.append(args.name)

    def _run_deployer_script(self, args: pulumi_mocks.MockResourceArgs, inputs: dict) -> dict[str, str]:
        """A deployer-side script (DEPLOYER_SCRIPT) run for real, as pulumi-command runs a local
        command: ``/bin/sh -c <create>`` in the project directory; on an update (no ``update``
        command is set, so ``create`` runs again) with the previous stdout and stderr in
        ``PULUMI_COMMAND_STDOUT``/``_STDERR`` when non-empty (local/commandOutputs.go). A non-zero
        exit fails the step, and with it `pulumi up`."""
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "HOME")}
        old = getattr(args, "old", None)
        if getattr(args, "op", engine.CREATE) == engine.UPDATE and old is not None:
            for key, var in (("stdout", "PULUMI_COMMAND_STDOUT"), ("stderr", "PULUMI_COMMAND_STDERR")):
                if isinstance(old.outputs.get(key), str) and old.outputs[key]:
                    env[var] = old.outputs[key]
        proc = _run_pure_script(str(inputs["create"]), tuple(sorted(env.items())))
        if proc.returncode != 0:
            why = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
            self.failures.append(f"{args.name}: {why}")
            self.failed.append(args.name)
        # pulumi-command trims one trailing newline of each (remote/commandOutputs.go)
        return {"stdout": proc.stdout.removesuffix("\n"), "stderr": proc.stderr.removesuffix("\n")}

    def _cluster_ca(self, inputs: dict) -> str:
        """A placeholder CA per kubeadm init: the ids of the steps a command follows (its triggers
        after the script hash and the instance id) name the init run that made the cluster."""
        made_by = json.dumps([str(t) for t in (inputs.get("triggers") or [])[2:]])
        return "PLACEHOLDER-CA-" + hashlib.sha256(made_by.encode()).hexdigest()[:12]

    def _ca_hash(self, inputs: dict, env: dict[str, str]) -> str:
        digest = hashlib.sha256(self._cluster_ca(inputs).encode()).hexdigest()
        self.placeholders.setdefault(
            "sha256:<CA public-key hash>", "the cluster CA's public-key hash (42-ca-cert-hash.sh at deploy time; a secret)"
        )
        return f"sha256:{digest}"

    # --- ACK (issue 14) -----------------------------------------------------------------
    def _ack_cluster_outputs(self, name: str, inputs: dict, rid: str) -> dict:
        """Computed outputs of cs.ManagedKubernetes the program may read, as labelled placeholders.

        With slbInternetEnabled false (default true) there is no public endpoint; with
        newNatGateway false (default true) no NAT gateway id.
        """
        public = inputs.get("slbInternetEnabled", True) is not False
        nat = inputs.get("newNatGateway", True) is not False
        values = {
            "slbId": (f"<{name} API server SLB id>", f"id of the SLB in front of {name}'s API server (created by ACK)"),
            "vpcId": (f"<{name} VPC id>", f"VPC of {name}'s vSwitches (read from the cluster)"),
            "workerRamRoleName": (f"<{name} worker RAM role>", f"RAM role ACK attaches to {name}'s nodes"),
            "serviceDomain": (f"<{name} service domain>", f"{name}'s service domain (connections.service_domain)"),
        }
        if nat:
            values["natGatewayId"] = (f"<{name} NAT gateway id>", f"NAT gateway ACK creates for {name} (newNatGateway)")
        if not inputs.get("securityGroupId"):
            values["securityGroupId"] = (f"<{name} security group id>", f"security group ACK creates for {name}")
        for value, label in values.values():
            self.placeholders[value] = label
        self.placeholders[rid] = f"ACK cluster id of {name} (assigned by ACK)"
        self.placeholders[ACK_API_SERVER_PRIVATE] = ACK_API_SERVER_LABELS[ACK_API_SERVER_PRIVATE]
        if public:
            self.placeholders[ACK_API_SERVER] = ACK_API_SERVER_LABELS[ACK_API_SERVER]
        out = {key: value for key, (value, _) in values.items()}
        out.setdefault("natGatewayId", "")
        out["slbInternet"] = ACK_API_SERVER if public else ""
        out["slbIntranet"] = ACK_API_SERVER_PRIVATE
        # A list of one in pulumi-alicloud 4.0.0 (Sequence[ManagedKubernetesConnection]; a map upstream).
        out["connections"] = [
            {
                "apiServerInternet": f"https://{ACK_API_SERVER}:6443" if public else "",
                "apiServerIntranet": f"https://{ACK_API_SERVER_PRIVATE}:6443",
                "masterPublicIp": ACK_API_SERVER if public else "",
                "serviceDomain": out.pop("serviceDomain"),
            }
        ]
        self._ack_clusters[rid] = (name, public)
        return out

    def _ack_credential(self, a: dict) -> dict:
        """cs.get_cluster_credential: ACK's kubeconfig for the cluster (a placeholder, never a real one).

        It points at the public API server address when the cluster has one (else the VPC one).
        """
        cluster_id = a.get("clusterId")
        if not cluster_id:
            raise ValueError("strict mocks: getClusterCredential needs clusterId (required by the provider)")
        name, public = self._ack_clusters.get(cluster_id, ("", True))
        server = ACK_API_SERVER if public else ACK_API_SERVER_PRIVATE
        self.placeholders[server] = ACK_API_SERVER_LABELS[server]
        minutes = a.get("temporaryDurationMinutes")
        label = f"{minutes} minutes after the kubeconfig is read" if minutes else "set by ACK"
        self.placeholders[ACK_KUBECONFIG_EXPIRY] = f"when ACK's kubeconfig certificate expires ({label})"
        return {
            "id": cluster_id,
            "clusterId": cluster_id,
            "clusterName": name,
            # A temporary credential is a new client certificate at every read (ack-engine-facts.md):
            # modelled by the read time, so a second run sees another kubeconfig, as the engine would.
            # A new cluster is a new CA (and endpoint): the Kubernetes provider follows it.
            "kubeConfig": ACK_KUBECONFIG.format(server=server, ca=f"PLACEHOLDER-CA-of-{cluster_id}")
            + (f"# <temporary client certificate issued at {int(self.clock())}>\n" if minutes else ""),
            "expiration": ACK_KUBECONFIG_EXPIRY,
            "certificateAuthorities": [
                {"clientCert": "PLACEHOLDER", "clientKey": "PLACEHOLDER", "clusterCert": "PLACEHOLDER-CA"}
            ],
            **({"temporaryDurationMinutes": minutes} if minutes else {}),
        }

    def _ack_versions(self, a: dict) -> dict:
        """cs.get_kubernetes_version from tools/fixtures/ack-kubernetes-versions.json (dated, sourced).

        Without kubernetesVersion: every version the fixture lists; with one: that version's entry,
        or none when ACK does not offer it (the program must then refuse the version).
        """
        fixture = json.loads(ACK_VERSIONS.read_text())
        cluster_type, profile = a.get("clusterType"), a.get("profile") or "Default"
        if cluster_type != fixture["cluster_type"] or profile != fixture["profile"]:
            raise NotImplementedError(
                f"strict mocks: getKubernetesVersion for clusterType={cluster_type!r} profile={profile!r}: "
                f"the fixture only holds {fixture['cluster_type']}/{fixture['profile']}"
            )
        wanted = a.get("kubernetesVersion")
        metadatas = [m for m in fixture["metadatas"] if not wanted or m["version"] == wanted]
        for m in metadatas:
            self.placeholders[m["version"]] = (
                f"a Kubernetes version ACK offered on {fixture['as_of']} ({ACK_VERSIONS.name}); "
                "the live list at deploy time may differ"
            )
        out = {"id": cluster_type, "clusterType": cluster_type, "profile": profile, "metadatas": metadatas}
        if wanted:
            out["kubernetesVersion"] = wanted
        return out

    def _remote_stdout(self, name: str, inputs: dict, runs: bool = True, *, local: bool = False) -> str:
        create = inputs.get("create") or ""
        env = command_env(create)
        for suffix, producer in self.command_stdout.items():
            if name.endswith(suffix):
                if producer == self._gpu_test_result:  # not replaced by a test
                    return self._gpu_test_result(inputs, env, name=name, runs=runs, local=local)
                return producer(inputs, env)
        return ""

    def _kubeconfig(self, inputs: dict, env: dict[str, str]) -> str:
        return FAKE_KUBECONFIG.format(server=env.get("API_SERVER_IP", "127.0.0.1"), ca=self._cluster_ca(inputs))

    def _driver_installed(self, inputs: dict, env: dict[str, str]) -> str:
        """11-nvidia-driver.sh's stdout: the driver it installed. Tesla: the version asked for;
        GRID: what the plugin or the .run at gridDriverUrl brings (known at deploy time only)."""
        if env.get("GPU_DRIVER") == "tesla":
            return f"driver_version={env.get('DRIVER_VERSION', '')}"
        source = "the Cloud Assistant plugin"
        stdin = str(inputs.get("stdin") or "").strip()
        if stdin and not stdin.startswith("["):
            source = f"the .run at gridDriverUrl #{hashlib.sha256(stdin.encode()).hexdigest()[:6]}"
        value = f"driver_version=<placeholder: the GRID driver {source} installs>"
        self.placeholders[value] = "the GRID driver version nvidia-smi reports after step 11, at deploy time"
        return value

    def _gpu_verify(self, inputs: dict, env: dict[str, str]) -> str:
        name = env.get("EXPECTED_GPU_NAME") or "<GPU name from nvidia-smi>"
        driver = env.get("DRIVER_VERSION") or "<driver version from nvidia-smi>"
        recorded = mock_cluster.nvidia_smi_answer(name, driver)
        if recorded is not None:
            line, fixture = recorded
            self.placeholders[line] = f"nvidia-smi of this GPU and driver as recorded in {fixture} (parsed)"
            return line + "\n"
        line = f"{name}, {driver}, 0 MiB"
        self.placeholders[line] = "nvidia-smi's answer at deploy time (the plan shows the catalog's expectation)"
        return line + "\n"

    def _gpu_allocatable(self, inputs: dict, env: dict[str, str]) -> str:
        """70-gpu-allocatable.sh: {node: nvidia.com/gpu allocatable}, here the expected minimum.

        Group mode (GPU_NODE_GROUPS): a node pool names its nodes at deploy time, so each
        node is a labelled placeholder, <ACK node N of <key>=<value>> (mock_cluster.group_node).
        """
        per_node = int(env.get("MIN_GPUS_PER_NODE") or 1)
        if env.get("GPU_NODE_GROUPS", "").strip():
            nodes = []
            for selector, node in mock_cluster.group_nodes(env["GPU_NODE_GROUPS"]):
                self.placeholders[node] = f"the name of a node labelled {selector} (its node pool names it at deploy time)"
                nodes.append(node)
        else:
            nodes = env.get("GPU_NODES", "").replace(",", " ").split()
        answer = json.dumps({node: per_node for node in nodes})
        self.placeholders[answer] = "nvidia.com/gpu allocatable per GPU node, read from the cluster at deploy time"
        return answer + "\n"

    def _gpu_test_result(
        self, inputs: dict, env: dict[str, str], *, name: str = "", runs: bool = True, local: bool = False
    ) -> str:
        """80-gpu-test-result.sh: with gpu_test failed/timeout, the real script's verdict over a
        recorded failure (a failing step fails `pulumi up`); otherwise every test pod passes
        with labelled placeholder logs (never a real result). ``local``: run on the deployer
        (with-kubeconfig.sh); in group mode a pod's node is a labelled placeholder of its pool."""
        group = mock_cluster.is_group_mode(env, local=local)
        if self.gpu_test in mock_cluster.FAILURE_CASES and runs:
            proc = mock_cluster.run_gpu_test_result(env, self.gpu_test, local=local)
            why = mock_cluster.gpu_test_failure(proc)
            if why is not None:
                self.failures.append(f"{name}: {why}")
                self.failed.append(name)
            return proc.stdout
        pattern = env.get("SUCCESS_PATTERN", "")
        pods = []
        for pod in env.get("TEST_PODS", "").replace(",", " ").split():  # namespace/name
            node = mock_cluster.pod_node(pod, env, group=group)
            if group:
                self.placeholders.setdefault(node, f"the name of the node {pod} ran on (its node pool names it at deploy time)")
            log = f"<placeholder: log of {pod} at deploy time, which passes if it contains {pattern!r}>"
            self.placeholders[log] = f"what {pod} prints on the GPU node (read with kubectl logs at deploy time)"
            pods.append({"pod": pod, "node": node, "phase": "Succeeded", "passed": True, "log": log, "diagnosis": ""})
        self.placeholders[CHECKED_AT] = "when the result check read the verdict (UTC, at deploy time)"
        return json.dumps({"passed": True, "verdict": "PASSED", "checkedAt": CHECKED_AT, "pods": pods}) + "\n"
