# gpu-k8s: `make plan` (offline), `make test`, `make up` / `make down` (real cloud).
SHELL := /bin/bash
VENV ?= venv
PY := $(VENV)/bin/python
STACK ?= dev
# Local file state by default: no Pulumi Cloud account needed. Override to use another backend.
PULUMI_BACKEND_URL ?= file://$(CURDIR)/.state
export PULUMI_BACKEND_URL

.PHONY: help install plan plan-out lint test bench up down refresh-down extend replace-node rejoin retest kubeconfig ssh-key stack outputs
.PHONY: gpu-top preflight estimate baked-images delete-images

help:
	@echo "make help                        this list"
	@echo "make install                     the virtualenv ($(VENV)) with requirements-dev.txt"
	@echo "make plan [STACK=dev]            offline plan: what 'pulumi up' would create (no account needed)"
	@echo "make plan-out [STACK=dev]        also write scripts and manifests to plan-out/<stack>/"
	@echo "make plan-save [STACK=dev]       save the plan as plan-out/<stack>/before.json (for make diff)"
	@echo "make diff [ASSUME='now=...']     what a second 'pulumi up' would change against before.json"
	@echo "make preflight [STACK=dev]       stock and hourly price from Aliyun's ECS API (needs Aliyun keys)"
	@echo "make lint                        ruff, import layers, shellcheck"
	@echo "make test                        lint + all tests"
	@echo "make bench                       plan-scale benchmark (1..64 nodes)"
	@echo "make estimate [STACK=dev]        minutes and bytes to GPU-ready, with/without prefetch, vs the seed's path"
	@echo "make stack [STACK=dev]           select (or create) the stack in the Pulumi backend"
	@echo "make up / make down              pulumi up / destroy -s \$$STACK (needs Pulumi CLI + Aliyun keys)"
	@echo "make refresh-down                refresh, then destroy (after Aliyun auto-released the instances)"
	@echo "make extend [HOURS=6]            auto-release at now + HOURS (default: the current ttlHours)"
	@echo "make replace-node NODE=x         replace one node's instance (the control plane: REBUILD=yes rebuilds the cluster)"
	@echo "make rejoin NODE=x               a worker's join failed long after its token was made: new token, join"
	@echo "make retest                      run the GPU test pods again (after fixing a failure)"
	@echo "make kubeconfig / make ssh-key   write ./kubeconfig and ./gpu-k8s.pem from the stack outputs"
	@echo "make outputs                     the stack outputs; STALE when the newest pulumi up failed"
	@echo "make gpu-top [WATCH=5]           GPU utilisation, memory, temperature, power per node (DCGM, via the API server)"
	@echo "make baked-images [STACK=dev]    the node images nodeImage bake made (kept after make down), with their storage fee"
	@echo "make delete-images [STACK=dev]   delete those images and their snapshots (ALL=yes: every stack's; needs Aliyun keys)"

UV_VERSION = 0.13.9
$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	# uv (pinned) installs the same pinned requirements in parallel, in a fifth of pip's time; pip
	# is the fallback. --no-compile: byte-compiling every installed module (pulumi_alicloud alone
	# has thousands) costs a third of pip's install; Python compiles what it imports, on first use.
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) && \
	  $(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements-dev.txt || \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-compile -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

plan: install
	$(PY) -m tools.plan --stack $(STACK)

# Real stock and price per type from Aliyun's ECS API (ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY).
preflight: install
	$(PY) -m tools.preflight --stack $(STACK)

plan-out: install
	$(PY) -m tools.plan --stack $(STACK) --out plan-out/$(STACK)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/shellcheck -x --source-path=SCRIPTDIR components/scripts/*.sh components/scripts/lib/*.sh components/scripts/local/*.sh .ci/run

test: lint
	$(PY) -m pytest -n 2

bench: install
	$(PY) -m benchmarks.plan_scale

estimate: install
	$(PY) -m benchmarks.estimate --stack $(STACK)

# The images gpu-k8s:nodeImage bake made in the stack's region (they outlive `make down`).
baked-images: install
	$(PY) -m tools.baked_images --stack $(STACK) $(if $(filter yes,$(ALL)),--all)

delete-images: install
	$(PY) -m tools.baked_images --stack $(STACK) $(if $(filter yes,$(ALL)),--all) --delete

# --- real cloud (Pulumi CLI, ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY) -----------------
stack: install
	@mkdir -p .state
	pulumi stack select $(STACK) --create

# After each `pulumi up` here: the up that bakes a node image (nodeImage bake) keeps its builder,
# a GPU instance billing until the next up deletes it; run that up now (tools/baked_images.py).
AFTER_UP = $(PY) -m tools.baked_images --stack $(STACK) --after-up
UP_THEN_BUILDERS = || { rc=$$?; $(AFTER_UP) failed; exit $$rc; }; $(AFTER_UP) ok
# The same after an `up --yes`: the second up asks nothing either.
UP_YES_THEN_BUILDERS = || { rc=$$?; $(AFTER_UP) failed; exit $$rc; }; $(AFTER_UP) ok --yes

up: stack
	pulumi up -s $(STACK) $(UP_THEN_BUILDERS)

# The stack outputs, marked STALE when the newest `pulumi up` failed (Pulumi then keeps the
# outputs of the last update that succeeded, GPU verdict included): tools/outputs.py.
outputs: install
	$(PY) -m tools.outputs --stack $(STACK)

# Stops the meter. Never needs SSH to a node; an already-released instance is fine.
down:
	pulumi destroy -s $(STACK) --yes --continue-on-error
	@echo "note: node images baked with gpu-k8s:nodeImage bake are kept (snapshot storage, about 0.12 CNY/GB-month): make baked-images lists them, make delete-images deletes them"

# After Aliyun auto-released the instances, the state still lists them: refresh first.
refresh-down:
	pulumi refresh -s $(STACK) --yes
	pulumi destroy -s $(STACK) --yes --continue-on-error

# Restart every node's auto-release countdown from now (optionally with a new TTL): each
# node's release time is anchored to its own timestamp command; replacing them all re-reads
# the clock. Their URNs come from the offline plan (same program, same config), like retest's.
# On ACK (the plan has scale-to-zero tasks) it also refreshes: a pool its task already set to
# 0 is read at 0, and the update brings it back to its count under the new TTL.
TTL_ANCHORS = ^(?!bake-).*-ttl-anchor$$
ACK_TTL_TASKS = -scale-to-zero$$
extend: install
	@if [ -n "$(HOURS)" ]; then pulumi config set -s $(STACK) gpu-k8s:ttlHours "$(HOURS)"; fi
	@urns=$$($(PY) -m tools.plan --stack $(STACK) --urns='$(TTL_ANCHORS)') && [ -n "$$urns" ] || \
	  { echo "make extend: no auto-release anchors in the plan of $(STACK) (ttlHours 0?)" >&2; exit 2; }; \
	tasks=$$($(PY) -m tools.plan --stack $(STACK) --urns='$(ACK_TTL_TASKS)') || exit 2; \
	pulumi up -s $(STACK) --yes $${tasks:+--refresh} $$(printf -- '--replace=%s ' $$urns) $(UP_YES_THEN_BUILDERS)

# Replace one node's instance on purpose (e.g. to move it to a newer image or imageId), with
# its auto-release anchor so that the new instance gets a valid release time, and its image
# record (<node>-image) so that it gets the image chosen now (components/aliyun/node.py). Every step
# of the node runs again on the new instance (their triggers hold its id); a worker gets a fresh
# join token and rejoins. The control plane can be replaced too, with REBUILD=yes: the cluster
# is rebuilt on the new instance (kubeadm init, every worker reset and rejoined, every
# Kubernetes object made again, the GPU test run again; workloads on it are lost).
replace-node: install
	@[ -n "$(NODE)" ] || { echo "usage: make replace-node NODE=<hostname, e.g. gpu-1> [REBUILD=yes for the control plane]" >&2; exit 2; }
	@urns=$$($(PY) -m tools.plan --stack $(STACK) --urns='^$(NODE)-(image|instance|ttl-anchor)$$') && [ -n "$$urns" ] || \
	  { echo "make replace-node: $(NODE) is not a node of $(STACK) (on ACK the node pools own their nodes: remove the node in ACK and the pool adds one)" >&2; exit 2; }; \
	join=$$($(PY) -m tools.plan --stack $(STACK) --urns='^$(NODE)-kubeadm-join$$') || exit 2; \
	if [ -z "$$join" ] && [ "$(REBUILD)" != yes ]; then \
	  echo "make replace-node: $(NODE) is the control plane: replacing it rebuilds the whole cluster on the new instance (workloads on it are lost); run again with REBUILD=yes" >&2; exit 2; \
	fi; \
	pulumi up -s $(STACK) --yes $$(printf -- '--replace=%s ' $$urns) $(UP_YES_THEN_BUILDERS)

# Run the GPU test again (after fixing its cause): a new gpu-k8s:gpuTestRun names new test
# pods (the old ones are deleted first, under other names: no wait for a terminating pod of
# the same name), and their new names re-run the result check. The offline plan first checks
# that the stack has a GPU test at all.
RETEST_RESOURCES = -smoke-pod-|-smoke-gpu-test-result$$
retest: install
	@urns=$$($(PY) -m tools.plan --stack $(STACK) --urns='$(RETEST_RESOURCES)') && [ -n "$$urns" ] || \
	  { echo "make retest: no GPU test in the plan of $(STACK) (smokeTest none, or a config error above)" >&2; exit 2; }; \
	pulumi config set -s $(STACK) gpu-k8s:gpuTestRun "$$(date -u +%Y%m%dT%H%M%SZ)" && pulumi up -s $(STACK) --yes $(UP_YES_THEN_BUILDERS)

# GPU metrics table from the cluster's Prometheus (README "GPU metrics"); GPU_TOP passes
# more options, e.g. GPU_TOP='--source exporter' or '--prometheus monitoring/prometheus-operated:9090'.
gpu-top: install
	@[ -n "$$KUBECONFIG" ] || [ -s kubeconfig ] || \
	  { echo "make gpu-top: no kubeconfig: run make kubeconfig STACK=$(STACK) first (or set KUBECONFIG)" >&2; exit 2; }
	$(PY) -m tools.gpu_top $(if $(WATCH),--watch $(WATCH)) $(GPU_TOP)

# A worker's join failed and is retried more than 2 h after its token was made (the token
# has expired): make its token again, then join.
rejoin: install
	@[ -n "$(NODE)" ] || { echo "usage: make rejoin NODE=<worker hostname>" >&2; exit 2; }
	@token=$$($(PY) -m tools.plan --stack $(STACK) --urns='^$(NODE)-join-token$$') && [ -n "$$token" ] || \
	  { echo "make rejoin: $(NODE) is not a kubeadm worker of $(STACK) (on ACK, ACK joins the nodes)" >&2; exit 2; }; \
	pulumi up -s $(STACK) --yes --replace="$$token" $(UP_YES_THEN_BUILDERS)

# From the stack outputs; when `up` failed (no outputs recorded), from the state itself
# (tools/stack_secret.py). The file (mode 600) is replaced only by a whole value: without the
# pulumi CLI, a stack or the value, one line and exit 2, and an earlier file stays as it was.
kubeconfig: install
	@$(PY) -m tools.stack_secret kubeconfig --stack $(STACK) --to kubeconfig
	@echo "export KUBECONFIG=$(CURDIR)/kubeconfig"

ssh-key: install
	@$(PY) -m tools.stack_secret ssh-key --stack $(STACK) --to gpu-k8s.pem

# What a second `pulumi up` would do, offline: `make plan-save` once (the state a deploy
# leaves), change config, then `make diff [ASSUME='image=m-x now=2027-01-15T12:00:00Z']`.
.PHONY: plan-save diff
plan-save: install
	@mkdir -p plan-out/$(STACK)
	$(PY) -m tools.plan --stack $(STACK) --json > plan-out/$(STACK)/before.json
	@echo "saved plan-out/$(STACK)/before.json"

diff: install
	$(PY) -m tools.plan --stack $(STACK) --diff plan-out/$(STACK)/before.json $(foreach fact,$(ASSUME),--assume $(fact))
