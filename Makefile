# wgmesh build, test and demo entry points. See README.md.
SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0
TEST_TIMEOUT ?= 50m
# CNI plugins built from github.com/containernetworking/plugins at the version in go.mod.
CNI_PLUGINS := bridge host-local portmap loopback

.PHONY: all build cni-plugins control-plane generate lint test unit bench demo demo-down clean

all: build

build: ## Build the binaries into bin/
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/...

cni-plugins: ## Build the standard CNI plugins into bin/cni/
	@mkdir -p $(BIN)/cni
	@for p in $(CNI_PLUGINS); do \
	  case $$p in host-local) d=ipam/$$p;; portmap) d=meta/$$p;; *) d=main/$$p;; esac; \
	  $(GO) build -o $(BIN)/cni/$$p github.com/containernetworking/plugins/plugins/$$d || exit 1; \
	done

control-plane: ## Build (or reuse from the cache) etcd, kube-apiserver, kube-controller-manager, kubectl
	@hack/control-plane.sh >/dev/null

generate: ## Regenerate deepcopy and the CRD
	$(CONTROLLER_GEN) object paths=./api/... crd output:crd:dir=./charts/wgmesh/crds

lint: ## vet, gofmt, and fail when generated files are stale
	$(GO) vet ./...
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@hack/verify-generated.sh

test: control-plane build cni-plugins ## Run every test (unit, API, network namespaces); needs root
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --dir)" WGMESH_BIN_DIR="$(BIN)" \
	  $(GO) test -count=1 -p 1 -timeout $(TEST_TIMEOUT) ./...

unit: ## Only the tests that need neither root nor the control plane
	$(GO) test -count=1 -short ./...

bench: control-plane build cni-plugins ## Benchmarks that print ratios measured side by side
	KUBEBUILDER_ASSETS="$$(hack/control-plane.sh --dir)" WGMESH_BIN_DIR="$(BIN)" \
	  $(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

clean:
	rm -rf $(BIN)
