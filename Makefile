# Vigil build. `make` builds every binary into bin/ (a working installation:
# binaries, detector plugins, libonnxruntime.so and the baseline bundles).
SHELL := /bin/bash
GO ?= go
# simd/archsimd (Go 1.26's experimental SIMD package): netflow/v1's window
# updates run as AVX-512 lanes, bit-identical to the scalar code, which
# builds without the experiment and on CPUs without AVX-512 (the plugin
# checks at start). `make test` tests both builds of the feature sets.
export GOEXPERIMENT ?= simd
BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/vigil-edge/vigil/internal/buildinfo.Version=$(VERSION)
ORT_LIB = $(shell ./installer/fetch-onnxruntime.sh)

# Pure-Go binaries (no cgo): the agent core, the server and the CLI.
PURE_MAINS := agent/cmd/vigil-agent server/cmd/vigil-server test/trafficgen/cmd/vigil-trafficgen test/lab/cmd/vigil-lab
# Detector plugins and vigilctl (model train/eval): cgo, they dlopen ONNX
# Runtime at run time.
PLUGIN_MAINS := $(filter-out plugins/example/%,$(wildcard plugins/*/cmd/vigil-detector-*))

.PHONY: all build ort test test-short race bench proto lint models fileactivity-traces coverage run clean fuzz package

all: build

build: ort
	@mkdir -p $(BIN)/lib $(BIN)/models
	@for m in $(PURE_MAINS); do \
	  if [ -d $$m ]; then echo "go build $$m"; CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ ./$$m || exit 1; fi; \
	done
	@for m in $(PLUGIN_MAINS) server/cmd/vigilctl; do \
	  echo "go build $$m"; CGO_ENABLED=1 $(GO) build -trimpath -buildmode=pie -ldflags "$(LDFLAGS)" -o $(BIN)/ ./$$m || exit 1; \
	done
	@install -m 0644 "$(ORT_LIB)" $(BIN)/lib/libonnxruntime.so
	@rm -f $(BIN)/models/*.vgb
	@for b in models/baseline/*.vgb; do [ -f "$$b" ] && install -m 0644 "$$b" $(BIN)/models/ || true; done

ort:
	@./installer/fetch-onnxruntime.sh >/dev/null

# make test: the whole suite, expensive tests included (end to end with real
# binaries, network namespaces when run as root, packages, browser).
test: build
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); exit 1; }
	$(GO) vet ./...
	GOEXPERIMENT= $(GO) vet ./models/features/...
	GOEXPERIMENT= VIGIL_SHARED_DATA=$(CURDIR)/../shared/data $(GO) test -count=1 ./models/features/...
	VIGIL_E2E=1 VIGIL_BIN=$(BIN) ONNXRUNTIME_LIB=$(BIN)/lib/libonnxruntime.so VIGIL_SHARED_DATA=$(CURDIR)/../shared/data \
	  $(GO) test -count=1 -timeout 25m -p 2 ./...

# Quick suite: unit tests only.
test-short:
	ONNXRUNTIME_LIB=$(ORT_LIB) $(GO) test -count=1 ./...

# make bench: every Go benchmark (components, ingest, idle agents, ring vs
# gRPC, ORT scoring), then scan throughput against ndpiReader and tcpdump on
# a ~1M-packet reference capture. Figures go to .cache/bench*.txt; record
# them in docs/benchmarks.md with machine, date and command.
bench: build
	@mkdir -p .cache
	VIGIL_E2E=1 VIGIL_BIN=$(BIN) ONNXRUNTIME_LIB=$(BIN)/lib/libonnxruntime.so VIGIL_SHARED_DATA=$(CURDIR)/../shared/data \
	  $(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./... | tee $(CURDIR)/.cache/bench.txt
	VIGIL_BIN=$(BIN) ./test/e2e/netflow_bench.sh | tee $(CURDIR)/.cache/bench-scan.txt

# make race: the data race detector over the whole suite (about 30 minutes
# here, so not part of make test): the unit tests with -race, then the end-to-end
# tests against race-enabled builds of every binary in .cache/race-bin
# (agent, server and plugins write their reports to .cache/race-logs; any
# report fails the target). The package test is skipped: lintian refuses the
# unstripped race builds.
RACE_BIN := $(CURDIR)/.cache/race-bin
RACE_LOGS := $(CURDIR)/.cache/race-logs
race: build
	ONNXRUNTIME_LIB=$(BIN)/lib/libonnxruntime.so $(GO) test -race -count=1 -timeout 40m ./...
	@rm -rf $(RACE_BIN) $(RACE_LOGS) && mkdir -p $(RACE_BIN)/lib $(RACE_BIN)/models $(RACE_LOGS)
	@for m in $(PURE_MAINS) $(PLUGIN_MAINS) server/cmd/vigilctl; do \
	  echo "go build -race $$m"; CGO_ENABLED=1 $(GO) build -race -trimpath -o $(RACE_BIN)/ ./$$m || exit 1; \
	done
	@cp $(BIN)/lib/libonnxruntime.so $(RACE_BIN)/lib/ && cp $(BIN)/models/*.vgb $(RACE_BIN)/models/
	GORACE="log_path=$(RACE_LOGS)/race" VIGIL_E2E=1 VIGIL_BIN=$(RACE_BIN) ONNXRUNTIME_LIB=$(RACE_BIN)/lib/libonnxruntime.so \
	  VIGIL_SHARED_DATA=$(CURDIR)/../shared/data $(GO) test -count=1 -timeout 60m -skip 'TestInstallerPackages' ./test/e2e
	@if ls $(RACE_LOGS)/race.* >/dev/null 2>&1; then cat $(RACE_LOGS)/race.*; echo "data races reported (above)"; exit 1; fi

proto:
	cd wire/v1 && protoc --go_out=. --go_opt=paths=source_relative vigil.proto
	@for d in $$(find plugins models -name '*.proto' -printf '%h\n' | sort -u); do \
	  (cd $$d && protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative *.proto) || exit 1; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$'); exit 1; }
	$(GO) vet ./...

# Baseline model bundles, reproducible from the shared benign captures.
# The lab baseline that the shipped models train on besides the shared
# benign captures (test/lab: seed 24, 6 clients, 6 minutes, frames cut to 256
# bytes; models/baseline/lab/README.md). LAB= (empty) trains without it;
# LAB=a.pcap,b.pcap on other lab captures.
LAB_BASELINE := models/baseline/lab/lab-24.pcap.gz
LAB_PCAP := $(CURDIR)/.cache/lab/lab-24.pcap
LAB ?= $(LAB_PCAP)

$(LAB_PCAP): $(LAB_BASELINE)
	@mkdir -p $(dir $@)
	gunzip -c $< > $@.tmp && mv $@.tmp $@

# The fileactivity model trains on the file-event traces in
# models/baseline/fileactivity (recorded by `make fileactivity-traces`, which
# runs the benign workloads and the attacks again, about 14 minutes; traces
# depend on this machine's timing, so only the recording is not byte for byte).
FA_VERSION := 4

models: build $(if $(filter $(LAB_PCAP),$(LAB)),$(LAB_PCAP))
	ONNXRUNTIME_LIB=$(BIN)/lib/libonnxruntime.so $(GO) run ./models/cmd/vigil-train-baseline -benign ../shared/data/benign -attacks ../shared/data/attacks -manifest ../shared/data/MANIFEST.csv -out models/baseline $(if $(LAB),-lab $(LAB))
	ONNXRUNTIME_LIB=$(BIN)/lib/libonnxruntime.so $(GO) run ./models/cmd/vigil-train-fileactivity -traces models/baseline/fileactivity -version $(FA_VERSION) -out models/baseline

# make coverage: how much of each labelled attack of ../shared/data the
# agent's findings cover, with and without their lead-in, and the same share
# of the held-out benign packets (test/coverage): models/baseline/COVERAGE.md
# and coverage.json.
coverage: build
	$(GO) run ./test/coverage/cmd/vigil-coverage

fileactivity-traces: build
	rm -rf models/baseline/fileactivity/*.vft.gz models/baseline/fileactivity/sessions.json
	ONNXRUNTIME_LIB=$(BIN)/lib/libonnxruntime.so $(GO) run ./models/cmd/vigil-train-fileactivity -save models/baseline/fileactivity -dry-run > /dev/null

# make run: a demo deployment in .demo/ (git-ignored): PKI, admin token,
# server, one enrolled agent replaying a generated capture; Ctrl-C stops all.
run: build
	VIGIL_BIN=$(BIN) ./test/demo/run.sh

# .deb and .rpm for vigil-agent and vigil-server, the offline tarball,
# SHA256SUMS (signed when VIGIL_SIGN_KEY names an ECDSA key), into dist/.
package: build
	./installer/package.sh

# Every FuzzXxx target of the module, FUZZTIME each (default 10s; about
# 12 minutes for all of them). FUZZ_PKGS narrows it: make fuzz FUZZ_PKGS=./wire/...
FUZZTIME ?= 10s
FUZZ_PKGS ?= ./...
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./test/fuzz/run.sh $(FUZZ_PKGS)

clean:
	rm -rf $(BIN) .demo dist
