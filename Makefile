# jobmill developer targets. Everything here needs only Go; the embedded SQLite backend needs no server.

GO ?= go

# The race detector needs cgo, i.e. a C compiler; Go turns cgo off when there is none, and the suite then
# runs without -race rather than not at all.
RACE ?= $(if $(filter 1,$(shell $(GO) env CGO_ENABLED 2>/dev/null)),-race,)

# Pinned so that lint results do not change under the code.
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK_CHECKS ?= inherit

.PHONY: run test conformance bench lint build

# The conformance suite runs every scenario on every backend combination against real servers; it has a
# target of its own (see below) because it takes a quarter of an hour.
UNIT_PACKAGES = $(shell $(GO) list ./... | grep -v /tests/conformance)

## run: the invoices demo, 1,000 customers, on the embedded SQLite default
run:
	$(GO) run ./cmd/jobmill demo

## test: vet, then unit, property, adapter (real servers), engine and end-to-end tests
test:
	$(GO) vet ./...
	$(GO) test $(RACE) -count=1 -timeout 20m $(UNIT_PACKAGES)

## conformance: the same scenarios on every backend combination (PostgreSQL, MariaDB, RabbitMQ, in-process Kafka)
conformance:
	$(GO) test -count=1 -timeout 45m ./tests/conformance/

## bench: the engine end to end beside the transport's raw rate, then the SQLite adapter's micro-benchmarks
bench:
	$(GO) run ./cmd/jobmill bench --subjobs 10000 --json
	$(GO) test -run '^$$' -bench . ./adapters/sqlite/

## lint: gofmt (fails on any unformatted file), go vet, staticcheck
lint:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) -checks '$(STATICCHECK_CHECKS)' ./...

## build: the jobmill binary in bin/
build:
	$(GO) build -o bin/jobmill ./cmd/jobmill
