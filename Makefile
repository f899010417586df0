# wgmesh build, test and demo entry points. See README.md.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
TEST_TIMEOUT ?= 50m

.PHONY: all build serviceproxy cni-plugins image control-plane helm promtool kube-proxy node-parts e2e-test conformance conformance-reference generate lint test fuzz unit bench demo demo-down demo-stop clean deps-demo deps-test deps-test-kernel deps-bench deps-conformance

all: build

# The Debian packages a target needs (hack/deps.sh: the one list), installed with apt-get
# when run as root and missing; silent when everything is present. Each target below that
# runs outside tools depends on its own deps-<target>, first.
deps-demo deps-test deps-test-kernel deps-bench deps-conformance:
	@hack/deps.sh install $(@:deps-%=%)

build: ## Build the binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

# wgmesh-guard and the standard plugins, built inside the plugins module at the go.mod
# version (hack/cni-plugins.sh), so the product's go.mod needs none of the plugins' deps.
cni-plugins: ## Build the CNI plugins the agent installs into bin/cni/
	@GO="$(GO)" hack/cni-plugins.sh $(BIN)/cni

# One image for linux/amd64 and linux/arm64 (wgmesh-operator, wgmesh-agent, the CNI
# plugins), without Docker, named as the chart's defaults name it: values.yaml
# image.repository and Chart.yaml appVersion (IMAGE_REPOSITORY=, IMAGE_TAG= override).
# Reproducible: the same commit gives the same digest. test/image checks it.
image: ## Build the wgmesh image as an OCI archive: bin/image/wgmesh-<appVersion>.oci.tar
	@GO="$(GO)" hack/image.sh $(BIN)/image

control-plane: ## Build (or reuse from the cache) etcd, kube-apiserver, kube-controller-manager, kubectl
	@hack/control-plane.sh >/dev/null

# Chart tests (test/chart) find helm through WGMESH_HELM.
helm: ## Build (or reuse from the cache) helm for the chart tests
	@hack/helm.sh >/dev/null

# The chart tests (test/chart) run promtool on the chart's alerts and
# wgmesh-promql on the dashboard's queries, found through WGMESH_PROMTOOL_DIR.
promtool: ## Build (or reuse from the cache) promtool and wgmesh-promql for the chart tests
	@hack/promtool.sh >/dev/null

# Only the benchmarks use it (BenchmarkServiceProxy finds it through WGMESH_KUBE_PROXY).
kube-proxy: control-plane ## Build (or reuse from the cache) the real kube-proxy: the service NAT benchmark's reference, and what clusters that keep it run
	@hack/kube-proxy.sh >/dev/null

# Real nodes (make conformance): kubelet, containerd, CoreDNS, the images the e2e suite
# runs; test/nodeparts checks them through WGMESH_NODE_PARTS.
node-parts: ## Build (or reuse from the cache) kubelet, kube-scheduler, containerd, runc shim, ctr, CoreDNS, pause, agnhost and their images
	@hack/node-parts.sh >/dev/null

# Only make conformance runs it.
e2e-test: ## Build (or reuse from the cache) the upstream e2e suite, e2e.test, at the control plane's version
	@hack/e2e-test.sh >/dev/null

generate: ## Regenerate deepcopy and the CRD
	$(CONTROLLER_GEN) object paths=./api/... crd output:crd:dir=./charts/wgmesh/crds

lint: ## vet, gofmt, and fail when generated files are stale
	$(GO) vet ./...
	$(GO) -C hack/image vet ./...
	$(GO) -C hack/promtool vet ./...
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@hack/verify-generated.sh

# WGMESH_NO_SKIP=1: a test that lacks root, the control plane or a built
# binary fails instead of skipping (test/skip), so make test cannot pass by
# skipping. The fuzz targets run briefly after the tests (their seed corpora
# run with the tests), then the kernel WireGuard tests in VMs (test-kernel).
test: deps-test demo-stop control-plane build cni-plugins helm promtool node-parts image kube-proxy ## Run every test (unit, API, network namespaces, real nodes, brief fuzzing); needs root
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --dir)" WGMESH_BIN_DIR="$(BIN)" WGMESH_HELM="$$(hack/helm.sh --path)" WGMESH_PROMTOOL_DIR="$$(hack/promtool.sh --dir)" \
	  WGMESH_NODE_PARTS="$$(hack/node-parts.sh --dir)" WGMESH_IMAGE="$$(hack/image.sh --path)" WGMESH_KUBE_PROXY="$$(hack/kube-proxy.sh --path)" WGMESH_NO_SKIP=1 \
	  $(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...
	$(GO) -C hack/image test -count=1 ./...
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(FUZZTIME_TEST)
	@$(MAKE) --no-print-directory test-kernel

# Kernel WireGuard, which this machine's kernel lacks, in VMs booting Debian's stock kernel
# under qemu (hack/vm.sh fetches and caches both); hack/test-kernel.sh says what runs
# where (about 5 minutes warm, 7 cold on 2 cores). WGMESH_KERNEL_TESTS=ci or quick: less.
.PHONY: test-kernel
test-kernel: deps-test-kernel demo-stop control-plane build cni-plugins ## Kernel WireGuard tests in VMs (Debian's kernel under qemu); needs root
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --dir)" WGMESH_BIN_DIR="$(BIN)" hack/test-kernel.sh

# The upstream network conformance specs (e2e.test at the control plane's version) on a
# real-node cluster with wgmesh installed by helm and no kube-proxy; prints passed, failed
# and skipped per spec and keeps the JUnit report (test/cmd/wgmesh-conformance; README,
# "Conformance"). conformance-reference runs the same with upstream kube-proxy instead of
# wgmesh's service NAT. CONFORMANCE_ARGS adds flags, e.g. --focus='\[Conformance\]'.
REAL_NODE_ENV = KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --dir)" WGMESH_BIN_DIR="$(BIN)" WGMESH_HELM="$$(hack/helm.sh --path)" \
	WGMESH_NODE_PARTS="$$(hack/node-parts.sh --dir)" WGMESH_IMAGE="$$(hack/image.sh --path)" WGMESH_E2E_TEST="$$(hack/e2e-test.sh --path)"
conformance: deps-conformance demo-stop control-plane build helm node-parts image e2e-test ## Run the upstream network conformance specs on real nodes without kube-proxy; needs root
	$(REAL_NODE_ENV) $(GO) run ./test/cmd/wgmesh-conformance $(CONFORMANCE_ARGS)

KUBE_PROXY_MODE ?= nftables
conformance-reference: deps-conformance demo-stop control-plane build helm node-parts image e2e-test kube-proxy ## The same specs beside upstream kube-proxy (KUBE_PROXY_MODE=nftables or iptables), wgmesh's service NAT off
	$(REAL_NODE_ENV) $(GO) run ./test/cmd/wgmesh-conformance --kube-proxy="$$(hack/kube-proxy.sh --path)" --kube-proxy-mode=$(KUBE_PROXY_MODE) $(CONFORMANCE_ARGS)

# Go native fuzz targets: every parser of outside input and the topology.
FUZZ_PACKAGES := ./api/v1alpha1 ./operator ./agent/mesh ./podnet ./agent/servicenat ./agent/paths
FUZZTIME ?= 2m
FUZZTIME_TEST ?= 3s
fuzz: ## Fuzz every parser and the topology, FUZZTIME each (default 2m)
	@for pkg in $(FUZZ_PACKAGES); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/wgmesh-fuzz.log 2>&1 || { cat /tmp/wgmesh-fuzz.log; exit 1; }; \
	  done; \
	done

unit: ## Only the tests that need neither root nor the control plane
	$(GO) test -count=1 -short ./...
	$(GO) -C hack/image test -count=1 -short ./...

# The service NAT alone, as its own process, for the side-by-side benchmark with kube-proxy.
serviceproxy:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./test/cmd/wgmesh-serviceproxy

# BenchmarkMesh1000 (test/bench, about 12 minutes) needs the binaries, the CNI plugins and the
# control plane; WGMESH_BENCH_MESH_* shorten it (test/bench/doc.go).
BENCH_TIMEOUT ?= 90m
bench: deps-bench demo-stop control-plane build cni-plugins kube-proxy serviceproxy ## Benchmarks that print ratios measured side by side, and the 1,000-node simulation
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --dir)" WGMESH_BIN_DIR="$(BIN)" WGMESH_KUBE_PROXY="$$(hack/kube-proxy.sh --path)" \
	  $(GO) test -p 1 -run '^$$' -bench . -benchmem -timeout $(BENCH_TIMEOUT) ./...

clean:
	rm -rf $(BIN)

# --- local-cluster demo (test/cmd/wgmesh-demo, hack/demo.sh); needs root ---
demo: deps-demo build cni-plugins control-plane helm node-parts image ## Start a 3-node cluster (1 behind NAT) on real kubelets and containerd, wgmesh installed with helm, and show it
	@hack/demo.sh up

demo-down: ## Remove the demo: every namespace, link, mount, process and file it made
	@hack/demo.sh down

# The tests, benchmarks and conformance runs start clusters on the demo's addresses: a
# running demo is stopped first, saying so.
demo-stop:
	@hack/demo.sh stop-for-tests
