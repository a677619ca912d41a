"""The mock cloud: what Aliyun, the SSH targets and the local machine would answer.

Every value that only the cloud knows at deploy time (zone, image id, IPs, command
output) is an obvious placeholder, and each one is recorded in ``placeholders`` with
a label so the plan can print a legend. Invokes are strict: an unknown token fails.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
import zlib
from collections.abc import Callable

from pulumi.runtime import mocks as pulumi_mocks

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


def command_env(create: str) -> dict[str, str]:
    """VAR=value pairs at the front of a rendered remote command line."""
    env: dict[str, str] = {}
    try:
        words = shlex.split(create or "")
    except ValueError:
        return env
    for word in words:
        if "=" in word and word.split("=", 1)[0].isidentifier():
            key, value = word.split("=", 1)
            env[key] = value
    return env


def _digest(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=repr).encode()).hexdigest()[:8]


class PlaceholderMocks(pulumi_mocks.Mocks):
    """Strict mocks with labelled placeholders. ``clock`` is injectable for TTL tests."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.placeholders: dict[str, str] = {
            ZONE: "availability zone Aliyun picks for the instance type (get_zones at deploy time)",
            IMAGE_ID: "system image id (get_images at deploy time)",
        }
        self.invokes: list[pulumi_mocks.MockCallArgs] = []
        self._hosts: dict[int, str] = {}
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
            return {"ids": [ZONE], "zones": [{"id": ZONE, "localName": ZONE}]}
        if token == "alicloud:vpc/getSwitches:getSwitches":
            # Placeholder: no vSwitch of this stack exists yet (a first deploy), so the zone is looked up.
            return {"ids": [], "vswitches": []}
        if token == "alicloud:ecs/getImages:getImages":
            return {
                "ids": [IMAGE_ID],
                "images": [{"id": IMAGE_ID, "imageId": IMAGE_ID, "name": IMAGE_ID, "osType": "linux"}],
            }
        if token == "alicloud:ecs/getInstanceTypes:getInstanceTypes":
            # Offline there is no price list: the program falls back to its estimate.
            itype = a.get("instanceType", "")
            return {"ids": [itype], "instanceTypes": [{"id": itype, "price": ""}]}
        if token == "command:local:run":
            self.placeholders[DEPLOYER_IP + "/32"] = "your public IP, detected at deploy time (allowedCidrs: auto)"
            return {"stdout": DEPLOYER_IP + "\n", "stderr": "", "assets": {}}
        raise NotImplementedError(f"strict mocks: unexpected invoke {token} with {sorted(a)}")

    # --- resources ---------------------------------------------------------------------
    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        typ, name, inputs = args.typ, args.name, dict(args.inputs)
        rid = f"<{name} id>"
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
            # A command whose inputs change is replaced and gets a new id; model that, so
            # steps that chain on ids (triggers) show the cascade in tests.
            rid = f"<{name} id {_digest(inputs)}>"
            out.setdefault("stdout", self._remote_stdout(name, inputs))
            out.setdefault("stderr", "")
        elif typ == "command:local:Command":
            out.setdefault("stdout", str(int(self.clock())))
            out.setdefault("stderr", "")
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

    def _remote_stdout(self, name: str, inputs: dict) -> str:
        create = inputs.get("create") or ""
        env = command_env(create)
        for suffix, producer in self.command_stdout.items():
            if name.endswith(suffix):
                return producer(inputs, env)
        return ""

    def _kubeconfig(self, inputs: dict, env: dict[str, str]) -> str:
        return FAKE_KUBECONFIG.format(server=env.get("API_SERVER_IP", "127.0.0.1"))

    def _gpu_verify(self, inputs: dict, env: dict[str, str]) -> str:
        name = env.get("EXPECTED_GPU_NAME") or "<GPU name from nvidia-smi>"
        driver = env.get("DRIVER_VERSION") or "<driver version from nvidia-smi>"
        line = f"{name}, {driver}, 0 MiB"
        self.placeholders[line] = "nvidia-smi's answer at deploy time (the plan shows the catalog's expectation)"
        return line + "\n"

    def _gpu_allocatable(self, inputs: dict, env: dict[str, str]) -> str:
        """70-gpu-allocatable.sh: {node: nvidia.com/gpu allocatable}, here the expected minimum."""
        nodes = env.get("GPU_NODES", "").replace(",", " ").split()
        per_node = int(env.get("MIN_GPUS_PER_NODE") or 1)
        answer = json.dumps({node: per_node for node in nodes})
        self.placeholders[answer] = "nvidia.com/gpu allocatable per GPU node, read from the cluster at deploy time"
        return answer + "\n"

    def _gpu_test_result(self, inputs: dict, env: dict[str, str]) -> str:
        """80-gpu-test-result.sh: every test pod Succeeded; logs are labelled placeholders."""
        pattern = env.get("SUCCESS_PATTERN", "")
        per_node = int(env.get("PODS_PER_NODE") or 1)
        pods = []
        for pod in env.get("TEST_PODS", "").replace(",", " ").split():  # namespace/name
            node = pod.rsplit("/", 1)[-1].removeprefix("gpu-test-")
            if per_node > 1:
                node = node.rsplit("-", 1)[0]
            log = f"<placeholder: log of {pod} at deploy time, which passes if it contains {pattern!r}>"
            self.placeholders[log] = f"what {pod} prints on the GPU node (read with kubectl logs at deploy time)"
            pods.append({"pod": pod, "node": node, "phase": "Succeeded", "passed": True, "log": log, "diagnosis": ""})
        return json.dumps({"passed": True, "pods": pods}) + "\n"
