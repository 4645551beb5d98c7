# fledge: the README's commands. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO      ?= go
BIN     := $(CURDIR)/bin
# Programs of this checkout: the manager and plugin (cmd/) and the lab's command.
PROGRAMS := $(wildcard ./cmd/*/) ./test/fledge-lab ./test/demoapp
# Lab tests start real processes; a cached result would hide a changed lab.
TESTFLAGS ?= -count=1 -timeout 45m
# The manager's image name, as manifests/kustomization.yaml renders it.
IMAGE ?= ghcr.io/fledge-dev/fledge:dev

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

.PHONY: demo
demo: tools build labcheck ## the demo: a healthy release promoted, a broken one rolled back at 50%, held, undone (about 2 minutes)
	$(BIN)/fledge-lab demo

.PHONY: build
build: ## build fledge's programs into bin/
	$(GO) build -o $(BIN)/ $(PROGRAMS)

.PHONY: image
image: ## the manager's container image, without Docker, into bin/ for kind load image-archive (PUSH=REF also pushes it)
	$(GO) run ./hack/image -image $(IMAGE) $(if $(PUSH),-push $(PUSH))

.PHONY: tools
tools: ## build the lab's programs from source (first time: about 25 minutes); nft and iptables for the data plane
	@bash test/tools/build.sh

.PHONY: test
test: tools lint labcheck ## unit tests and lab tests (builds the lab's programs first if needed)
	$(BIN)/gotestsum --format pkgname-and-test-fails -- $(TESTFLAGS) ./...

.PHONY: test-unit
test-unit: ## unit tests only (no lab)
	$(GO) test -short ./...

.PHONY: bench
bench: ## benchmarks: figures and ratios measured in one run
	$(GO) test -short -run '^$$' -bench . -benchmem ./...

.PHONY: bench-scale
bench-scale: tools build labcheck ## the manager at scale on the lab: memory, reconciles, step lag, writes, webhook latency (about 10 minutes; SCALE_FLAGS='-deployments 10000 -namespaces 100 -rollouts 0 -replicas 1,0,0,0')
	$(GO) run ./test/scale $(SCALE_FLAGS)

.PHONY: lab
lab: tools build labcheck ## start the lab in the foreground; prints the KUBECONFIG to use
	$(BIN)/fledge-lab up

.PHONY: labcheck
labcheck: ## stop at once, in one line, where the lab's data plane cannot run (Linux, root, nft, iptables, ip)
	@bash test/tools/dataplane.sh --check

.PHONY: lint
lint: ## go vet and gofmt
	$(GO) vet ./...
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

.PHONY: clean
clean: ## remove bin/ (the built lab programs stay in the per-user cache)
	rm -rf $(BIN)
