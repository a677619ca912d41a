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
"""

from __future__ import annotations

import json
import re
import shlex
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from pulumi.runtime import mocks as pulumi_mocks

from components.node import KEEP_IMAGE
from tools import engine, mock_cluster

PUBLIC_IP_BASE = "203.0.113."  # RFC 5737 TEST-NET-3: documentation only
PRIVATE_IP_BASE = "192.0.2."  # RFC 5737 TEST-NET-1: documentation only
DEPLOYER_IP = "198.51.100.7"  # RFC 5737 TEST-NET-2: documentation only
ZONE = "<zone>"
IMAGE_ID = "<image-id: newest match of imageNameRegex>"
CA_HASH = "sha256:" + "0" * 64

FAKE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: gpu-k8s
  cluster:
    server: https://{server}:6443
    certificate-authority-data: PLACEHOLDER-CA
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
    certificate-authority-data: PLACEHOLDER-CA
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
        self.existing: list[engine.State] = []
        self.placeholders: dict[str, str] = {
            ZONE: "availability zone Aliyun picks for the instance type (get_zones at deploy time)",
        }
        if zones is not None:
            self.placeholders.pop(ZONE)
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
            "-ca-hash": lambda inputs, env: CA_HASH,
            "-gpu-allocatable": self._gpu_allocatable,
            "-gpu-test-result": self._gpu_test_result,
        }

    # --- invokes ---------------------------------------------------------------------
    def call(self, args: pulumi_mocks.MockCallArgs):
        self.invokes.append(args)
        token, a = args.token, args.args
        if token == "alicloud:index/getZones:getZones":
            zones = [ZONE] if self.zones is None else self.zones
            return {"ids": zones, "zones": [{"id": z, "localName": z} for z in zones]}
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
        rid, out = self.new_resource(args)
        if old is None:
            return rid, out
        if args.typ.startswith("kubernetes:") and not args.typ.startswith("pulumi:providers"):
            return rid, out  # the object's id is namespace/name, replaced or not
        rid = (old.id or rid) if op in (engine.SAME, engine.UPDATE) else next_id(args.name, old.id)
        if op == engine.REPLACE and args.typ == "alicloud:ecs/instance:Instance":
            # A new instance: new addresses (no EIP), so every step that dials it runs again.
            n = self._host_number(rid)
            public, private = f"{PUBLIC_IP_BASE}{n}", f"{PRIVATE_IP_BASE}{n}"
            self.placeholders[public] = f"public IP of the replacement {args.name} (assigned by Aliyun)"
            self.placeholders[private] = f"private IP of the replacement {args.name} (assigned by Aliyun)"
            out.update(publicIp=public, privateIp=private, primaryIpAddress=private)
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
        if op == engine.UPDATE and args.inputs.get("update") == KEEP_IMAGE and "stdout" in old.outputs:
            out["stdout"] = old.outputs["stdout"]  # the record's update prints the stdout it has (node.py)
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
            out.update(
                privateKeyOpenssh="-----BEGIN OPENSSH PRIVATE KEY-----\nPLACEHOLDER\n-----END OPENSSH PRIVATE KEY-----\n",
                privateKeyPem="-----BEGIN RSA PRIVATE KEY-----\nPLACEHOLDER\n-----END RSA PRIVATE KEY-----\n",
                publicKeyOpenssh="ssh-rsa AAAAB3NzaC1yc2EPLACEHOLDER gpu-k8s\n",
                publicKeyFingerprintSha256="SHA256:PLACEHOLDER",
            )
        elif typ == "random:index/randomString:RandomString":
            length = int(inputs.get("length", 8))
            out["result"] = ("x" * length)[:length]
            self.placeholders.setdefault("x" * 6, "random bootstrap-token characters (generated at deploy time)")
        elif typ == "command:remote:Command":
            # The id is stable (engine: same/update keep it; a replace gets a new one, respond),
            # so steps that chain on ids (triggers) re-run only when an upstream is replaced.
            out.setdefault("stdout", self._remote_stdout(name, inputs, runs))
            out.setdefault("stderr", "")
        elif typ == "command:local:Command" and str(inputs.get("create", "")).startswith("printf %s "):
            out.setdefault("stdout", shlex.split(inputs["create"])[2])  # a node's image record (node.py)
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

    def _host_number(self, name: str) -> int:
        """A last octet that depends on the instance's name only (stable when nodes are added)."""
        n = 10 + zlib.crc32(name.encode()) % 240
        while self._hosts.get(n, name) != name:
            n = 10 + (n - 9) % 240
        self._hosts[n] = name
        return n

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
            "kubeConfig": ACK_KUBECONFIG.format(server=server)
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
        return FAKE_KUBECONFIG.format(server=env.get("API_SERVER_IP", "127.0.0.1"))

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
        return json.dumps({"passed": True, "pods": pods}) + "\n"
