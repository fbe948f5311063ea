# Plain verbs; see README.md.
GO        ?= go
FUZZTIME  ?= 5s
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X main.version=$(VERSION) -X main.commit=$(COMMIT)

.PHONY: run test fuzz generate check-generated lint lint-spec check-breaking build migrate bench

## run: local demo server on 127.0.0.1:8080 (embedded PostgreSQL under ./.data unless DATABASE_URL is set)
run:
	$(GO) run ./cmd/smtpcreds dev --log-format text

## test: every test, with the race detector, against real PostgreSQL
test:
	$(GO) test -race -count=1 -parallel 6 ./...

## fuzz: run each fuzz target for $(FUZZTIME)
fuzz:
	$(GO) test -run='^$$' -fuzz='^FuzzParse$$' -fuzztime=$(FUZZTIME) ./internal/basicauth/
	$(GO) test -run='^$$' -fuzz='^FuzzRoundTrip$$' -fuzztime=$(FUZZTIME) ./internal/basicauth/
	$(GO) test -run='^$$' -fuzz='^FuzzNormalizeUsername$$' -fuzztime=$(FUZZTIME) ./internal/credentials/
	$(GO) test -run='^$$' -fuzz='^FuzzRender$$' -fuzztime=$(FUZZTIME) ./internal/syncer/passwdfile/
	$(GO) test -run='^$$' -fuzz='^FuzzNormalize$$' -fuzztime=$(FUZZTIME) ./internal/hostname/

## generate: regenerate gen/ and the TypeScript bindings from openapi.yaml
generate:
	$(GO) generate ./...
	scripts/gen-ts.sh

## check-generated: fail when gen/ differs from what openapi.yaml generates
check-generated:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	sed "s#^output: .*#output: $$tmp/api.gen.go#" oapi-codegen.yaml > $$tmp/cfg.yaml && \
	$(GO) tool oapi-codegen -config $$tmp/cfg.yaml openapi.yaml && \
	diff -u gen/api.gen.go $$tmp/api.gen.go > $$tmp/diff || { cat $$tmp/diff | head -50; echo "gen/ is stale: run make generate"; exit 1; }
	@scripts/gen-ts.sh --check

## lint: go vet, gofmt, staticcheck (pinned as a Go tool in go.mod) and the import rules (internal/archtest)
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/')); [ -z "$$out" ] || { echo "gofmt needed: $$out"; exit 1; }
	$(GO) test -count=1 ./internal/archtest/
	$(GO) tool staticcheck ./...

## lint-spec: lint openapi.yaml with the pinned Spectral and .spectral.yaml; fails on any warning
lint-spec:
	scripts/spec-lint.sh

## check-breaking: fail when openapi.yaml breaks the published spec (latest v* tag, else api/openapi.baseline.yaml)
check-breaking:
	scripts/spec-breaking.sh

## build: the smtpcreds binary with version and commit stamped
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/smtpcreds ./cmd/smtpcreds

## bench: creates vs pgbench running the same SQL, read growth to 1M credentials, micro-benchmarks;
## writes bench/results.md and bench/latency.png (go run ./cmd/smtpcreds-bench -quick: a smoke run)
bench:
	$(GO) run ./cmd/smtpcreds-bench

## migrate: apply migrations to DATABASE_URL
migrate:
	$(GO) run ./cmd/smtpcreds migrate
