# Modelship developer entry points. The real one-node cluster lives in hack/node, the demo in hack/demo.
SHELL := /bin/bash
MODELSHIP_CACHE ?= /var/cache/modelship
PY ?= $(MODELSHIP_CACHE)/venv/bin/python

.PHONY: demo demo-down demo-prepare e2e node-up node-down

## demo: build or reuse everything, run the whole pipeline on a real node, wait for Ctrl-C, tear down
##       (DEMO_ARGS=--no-wait: tear down after the report; DEMO_ARGS=--keep: leave the node and the operator up)
demo: demo-prepare
	$(PY) hack/demo/demo.py $(DEMO_ARGS)

## demo-prepare: packages, kubelet, add-ons (CoreDNS, metrics-server), control plane binaries, images (all cached
##               by version or content: rebuilt when the code changed)
demo-prepare:
	bash hack/node/prepare
	bash hack/cluster/build-binaries >/dev/null
	bash hack/images/ensure-docker && bash hack/images/base-image >/dev/null && bash hack/images/build-all >/dev/null
	bash hack/node/buildkit-image >/dev/null

## demo-down: leave the machine as it was (idempotent; also ends an operator kept by --keep)
demo-down:
	bash hack/node/down

## e2e: the e2e pytest tier (real node)
e2e:
	$(PY) -m pytest tests/e2e -m e2e

node-up:
	bash hack/node/up --registry
node-down:
	bash hack/node/down
