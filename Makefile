# gpu-k8s: `make plan` (offline), `make test`, `make up` / `make down` (real cloud).
SHELL := /bin/bash
VENV ?= venv
PY := $(VENV)/bin/python
STACK ?= dev
# Local file state by default: no Pulumi Cloud account needed. Override to use another backend.
PULUMI_BACKEND_URL ?= file://$(CURDIR)/.state
export PULUMI_BACKEND_URL

.PHONY: help install plan plan-out lint test bench up down refresh-down extend retest kubeconfig ssh-key stack outputs

help:
	@echo "make plan [STACK=dev]     offline plan: what 'pulumi up' would create (no account needed)"
	@echo "make plan-out             also write scripts and manifests to plan-out/<stack>/"
	@echo "make test                 lint + all tests"
	@echo "make bench                plan-scale benchmark (1..64 nodes)"
	@echo "make up / make down       pulumi up / destroy -s \$$STACK (needs Pulumi CLI + Aliyun keys)"
	@echo "make extend [HOURS=6]     auto-release at now + HOURS (default: the current ttlHours)"
	@echo "make retest               run the GPU test pods again (after fixing a failure)"
	@echo "make kubeconfig ssh-key   write ./kubeconfig and ./gpu-k8s.pem from the stack outputs"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

plan: install
	$(PY) -m tools.plan --stack $(STACK)

plan-out: install
	$(PY) -m tools.plan --stack $(STACK) --out plan-out/$(STACK)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck -x --source-path=SCRIPTDIR components/scripts/*.sh components/scripts/lib/*.sh components/scripts/local/*.sh .ci/run

test: lint
	$(PY) -m pytest

bench: install
	$(PY) -m benchmarks.plan_scale

# --- real cloud (Pulumi CLI, ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY) -----------------
stack: install
	@mkdir -p .state
	pulumi stack select $(STACK) --create

up: stack
	pulumi up -s $(STACK)

outputs:
	pulumi stack output -s $(STACK)

# Stops the meter. Never needs SSH to a node; an already-released instance is fine.
down:
	pulumi destroy -s $(STACK) --yes --continue-on-error

# After Aliyun auto-released the instances, the state still lists them: refresh first.
refresh-down:
	pulumi refresh -s $(STACK) --yes
	pulumi destroy -s $(STACK) --yes --continue-on-error

# Restart the auto-release countdown from now (optionally with a new TTL): the release
# time is anchored to a timestamp resource; replacing it re-reads the clock.
ANCHOR_URN = urn:pulumi:$(STACK)::gpu-k8s::gpu-k8s:auto_release:AutoRelease$$command:local:Command::gpu-k8s-ttl-anchor
extend:
	@if [ -n "$(HOURS)" ]; then pulumi config set -s $(STACK) gpu-k8s:ttlHours "$(HOURS)"; fi
	pulumi up -s $(STACK) --yes --replace '$(ANCHOR_URN)'

# Run the GPU test again (after fixing its cause): new test pods and a new result check.
# Their URNs come from the offline plan, which runs the same program with the same config.
RETEST_RESOURCES = -smoke-pod-|-smoke-gpu-test-result$$
retest: install
	pulumi up -s $(STACK) --yes $$($(PY) -m tools.plan --stack $(STACK) --urns='$(RETEST_RESOURCES)' | sed 's/^/--replace=/')

kubeconfig:
	umask 077; pulumi stack output -s $(STACK) --show-secrets kubeconfig > kubeconfig
	@echo "export KUBECONFIG=$(CURDIR)/kubeconfig"

ssh-key:
	umask 077; pulumi stack output -s $(STACK) --show-secrets sshPrivateKey > gpu-k8s.pem

# What a second `pulumi up` would do, offline: `make plan-save` once (the state a deploy
# leaves), change config, then `make diff [ASSUME='image=m-x now=2027-01-15T12:00:00Z']`.
.PHONY: plan-save diff
plan-save: install
	@mkdir -p plan-out/$(STACK)
	$(PY) -m tools.plan --stack $(STACK) --json > plan-out/$(STACK)/before.json
	@echo "saved plan-out/$(STACK)/before.json"

diff: install
	$(PY) -m tools.plan --stack $(STACK) --diff plan-out/$(STACK)/before.json $(foreach fact,$(ASSUME),--assume $(fact))
