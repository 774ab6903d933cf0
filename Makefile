# hop — two commands do everything: `make run` and `make test`.
GO      ?= go
BIN     := bin/hop
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build run run-xds test bench vet clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/hop

# Builds hop, starts the demo WebSocket/HTTP echo upstream on 127.0.0.1:9000
# and hop on testdata/demo/envoy.yaml (listener 127.0.0.1:10000, admin :9901).
run: build
	@$(GO) build -o bin/hop-echo ./hack/echo
	@sh hack/run-demo.sh

# The same demo driven live by a local xDS control plane (hack/localcp):
# edit testdata/localcp/*.yaml while it runs and hop hot-reloads.
run-xds: build
	@$(GO) build -o bin/hop-echo ./hack/echo
	@$(GO) build -o bin/hop-localcp ./hack/localcp
	@sh hack/run-xds-demo.sh

# Every test, with the race detector. The only thing CI runs.
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 8m ./...

# WebSocket echo and raw TCP tunnels (CONNECT on HTTP/1.1 and HTTP/2,
# tcp_proxy over HTTP/2 CONNECT) through hop vs direct (see hack/bench).
bench: build
	$(GO) run ./hack/bench -hop $(BIN)

clean:
	rm -rf bin
