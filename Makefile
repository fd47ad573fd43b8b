# llm-energy-measure — the two commands a newcomer needs are `make demo` and
# `make test`. Everything else is for developers.

GO        ?= go
BIN       := bin/lem
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
# cgo is needed by go-nvml (dlopen, no driver at build time). A stray nvml.h
# in TMPDIR breaks the build, so cgo gets a clean temp dir of its own.
export CGO_ENABLED := 1
export CGO_CFLAGS := -O2 -Wno-deprecated-declarations
CGO_TMP   := $(CURDIR)/.cache/cgo-tmp
DEMO_OUT  ?= lem-demo

.PHONY: iproute2 zookeeper all build build-device ui chromium validate-gpu debootstrap llama-root demo demo-stop test test-short bench fuzz docs check-docs clickhouse vet clean

all: build

build: ui
	@mkdir -p $(CGO_TMP) bin
	TMPDIR=$(CGO_TMP) $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/lem

# The results platform's front end (platform/ui: TypeScript, npm with its
# lockfile), built into platform/ui/dist, which go:embed puts in the binary.
# npm ci runs again only when the lockfile changed.
UI := platform/ui
ui: $(UI)/dist/index.html
$(UI)/node_modules/.package-lock.json: $(UI)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed to build the platform's front end (Debian: apt-get install npm)"; exit 1; }
	cd $(UI) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@
$(UI)/dist/index.html: $(UI)/node_modules/.package-lock.json $(wildcard $(UI)/src/*) $(UI)/build.mjs $(UI)/tsconfig.json
	cd $(UI) && npm run --silent build

# Debian's chromium, for the platform's browser tests (never a downloaded browser).
chromium:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
		echo "installing chromium (Debian package) for the browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# A stripped cgo build to carry to the GPU machine (see docs/validation/).
build-device: ui
	@mkdir -p $(CGO_TMP) .device-bin
	TMPDIR=$(CGO_TMP) $(GO) build -ldflags "-s -w $(LDFLAGS)" -o .device-bin/lem ./cmd/lem

# On a GPU machine: the NVML collector against a PyTorch workload with known
# phases (docs/validation/nvml-h200.md). OUT names the report directory.
OUT ?= validate-out
validate-gpu:
	@test -x .device-bin/lem || { echo "build it first where Go is: make build-device, then carry .device-bin/"; exit 1; }
	bash collectors/nvml/validate/run.sh .device-bin/lem $(OUT)

# A short measured experiment on embedded defaults: embedded JetStream,
# simulated GPU power, the built-in synthetic streaming server, a local
# clickhouse-server when installed (else the Parquet store), a results table,
# an exported dataset under $(DEMO_OUT)/, and the results platform (lem web)
# left running with the run on its leaderboard (make demo-stop stops it).
demo: build
	./$(BIN) demo -out $(DEMO_OUT)

demo-stop:
	@if [ -f $(DEMO_OUT)/web/pid ]; then kill $$(cat $(DEMO_OUT)/web/pid) 2>/dev/null || true; rm -f $(DEMO_OUT)/web/pid; echo stopped the results platform; fi
	@if [ -f $(DEMO_OUT)/clickhouse/pid ]; then kill $$(cat $(DEMO_OUT)/clickhouse/pid) 2>/dev/null || true; rm -f $(DEMO_OUT)/clickhouse/pid; echo stopped clickhouse-server; fi

# Installs clickhouse-server with apt when missing (Debian, root).
clickhouse:
	@command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ] || { \
		echo "installing clickhouse-server (Debian package)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null; }

# debootstrap builds the llama.cpp root filesystem (shared/tools/llama-server)
# that the load generator's integration tests run against.
debootstrap:
	@command -v debootstrap >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq debootstrap >/dev/null; }

# iproute2's ip: the JetStream partition test puts each node on a network
# namespace of its own and cuts one off.
iproute2:
	@command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq iproute2 >/dev/null; }

# Debian's zookeeper (Java): the ClickHouse 2 x 2 cluster test's replicated
# tables need it (18.16 has no keeper of its own).
zookeeper:
	@[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null 2>&1 || { \
		echo "installing zookeeper (Debian package) for the ClickHouse cluster test"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq zookeeper >/dev/null; }

# llama.cpp's server root (shared/tools/llama-server), built once here
# before the tests so that no two test packages build it at the same time.
LLAMA_ROOT  := /var/tmp/lem-llama-root
LLAMA_TOOLS := $(firstword $(wildcard ../shared/tools/llama-server shared/tools/llama-server))
llama-root: debootstrap
	@test -n "$(LLAMA_TOOLS)" || { echo "shared/tools/llama-server not found beside the repository"; exit 1; }
	@test -d $(LLAMA_ROOT) || { echo "building $(LLAMA_ROOT) (llama.cpp server for the load generator's tests; about a minute)"; \
		bash $(LLAMA_TOOLS)/setup.sh $(LLAMA_ROOT) >/dev/null; }

# All tests. Each test package starts the throwaway servers it needs;
# LEM_E2E=1 turns a missing server into a failure instead of a skip.
test: clickhouse llama-root chromium iproute2 zookeeper ui
	@mkdir -p $(CGO_TMP)
	TMPDIR=$(CGO_TMP) LEM_E2E=1 $(GO) test -count=1 -timeout 30m ./...
	@# The ClickHouse 2 x 2 cluster (four servers and ZooKeeper) on its own, after the suite.
	TMPDIR=$(CGO_TMP) LEM_E2E=1 LEM_CH_CLUSTER=1 $(GO) test -count=1 -timeout 15m -run TestClickHouseCluster2x2 ./cmd/lem
	TMPDIR=$(CGO_TMP) $(GO) test -count=1 -run XXX -fuzz FuzzDecode -fuzztime 15s ./schemas
	@# Every parser of user-supplied files, briefly (crashers land in testdata/fuzz and become regression tests).
	TMPDIR=$(CGO_TMP) $(GO) test -count=1 -run XXX -fuzz FuzzParse -fuzztime 5s ./experiment
	for f in FuzzTrace FuzzJSONL FuzzShareGPT FuzzStream; do TMPDIR=$(CGO_TMP) $(GO) test -count=1 -run XXX -fuzz $$f -fuzztime 5s ./collectors/loadgen || exit 1; done

test-short: ui
	@mkdir -p $(CGO_TMP)
	TMPDIR=$(CGO_TMP) $(GO) test -short ./...

bench: clickhouse
	@mkdir -p $(CGO_TMP)
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -bench . -benchmem ./schemas
	TMPDIR=$(CGO_TMP) LEM_E2E=1 $(GO) test -run XXX -bench EndToEnd -benchmem -benchtime 3x ./ingest
	@# lem against the peer pipeline (Telegraf, built from the module proxy into .cache the first time), then the target rate held for 20 s.
	TMPDIR=$(CGO_TMP) LEM_E2E=1 $(GO) test -run XXX -bench 'VersusPeer|Sustained|InsertOrder' -benchtime 1x -timeout 60m ./ingest
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -bench 'TimestampAccuracy|PoissonKS' -benchtime 3x ./collectors/loadgen
	@# Token stamps as a user gets them: lem run attached to a streaming server in its own process, 1,000 and 2,000 streams.
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -bench RunAttachedStamps -benchtime 2x -timeout 30m ./cmd/lem
	@# A long run of 64 GPUs (1.5, 6 and 24 h: up to 276 M power samples, 10 M requests; the stores are kept in .cache/longrun-*): lem export and lem analyze, peak RSS and time.
	TMPDIR=$(CGO_TMP) LEM_LONGRUN_ANALYZE=1 $(GO) test -run XXX -bench LongRunMemory -benchtime 1x -timeout 120m ./cmd/lem
	@# The results platform: leaderboard over 100,000 runs, the timeline of 1 h x 8 GPUs, 200 concurrent clients, bundle verification.
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -bench 'LeaderboardP95|LeaderboardAfterUpload|TimelineHour8GPU|ConcurrentClients|VerifyBundle|ReadBundleHour8GPU|RunPageAfterRestart' -benchtime 20x ./platform
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -bench 'VerifyHour8GPU' -benchtime 1x -timeout 20m ./platform
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -bench 'JobDispatch|LiveFanout' -benchtime 3x ./platform

fuzz:
	@mkdir -p $(CGO_TMP)
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -fuzz FuzzDecode -fuzztime 2m ./schemas
	TMPDIR=$(CGO_TMP) $(GO) test -run XXX -fuzz FuzzParse -fuzztime 1m ./experiment
	for f in FuzzTrace FuzzJSONL FuzzShareGPT FuzzStream; do TMPDIR=$(CGO_TMP) $(GO) test -run XXX -fuzz $$f -fuzztime 1m ./collectors/loadgen || exit 1; done

# Regenerates the documents the binary owns.
docs: build
	./$(BIN) docs -o docs/events.md events
	./$(BIN) docs -o docs/cli.md cli
	./$(BIN) docs -o docs/backends.md backends
	./$(BIN) docs -o docs/queries.md queries
	./$(BIN) docs -o docs/experiment.schema.json schema

vet: ui
	@mkdir -p $(CGO_TMP)
	TMPDIR=$(CGO_TMP) $(GO) vet ./...
	cd $(UI) && npx --no-install tsc --noEmit
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

clean:
	rm -rf bin .cache $(DEMO_OUT) $(UI)/node_modules
	find $(UI)/dist -mindepth 1 ! -name .keep -exec rm -rf {} +
