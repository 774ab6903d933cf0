#!/bin/sh
# Started by `make run-xds`: the demo upstream, the local control plane
# (hack/localcp) serving testdata/localcp, and hop, until Ctrl-C.
set -e
bin/hop-echo -addr 127.0.0.1:18081 &
ECHO=$!
bin/hop-localcp -dir testdata/localcp -addr 127.0.0.1:18000 -node hop-demo &
CP=$!
trap 'kill $ECHO $CP 2>/dev/null' EXIT INT TERM
cat <<'MSG'

hop takes its listeners, routes and clusters from hack/localcp, which serves
the files in testdata/localcp over ADS and pushes a new version whenever one
changes. Try, in another terminal:

  curl -i http://127.0.0.1:10000/anything            # proxied to the echo upstream
  go run ./hack/wscat ws://127.0.0.1:10000/chat      # a WebSocket: keep it open...
  $EDITOR testdata/localcp/routes.yaml               # ...edit and save: localcp pushes,
                                                     # hop ACKs (or NACKs, with the reason)
  curl -s 'http://127.0.0.1:9901/config_dump?resource=dynamic_route_configs'
  curl -s http://127.0.0.1:9901/stats | grep -E 'lds|cds|rds|control_plane'

The WebSocket stays open across every push. Ctrl-C stops all three.

MSG
bin/hop -c testdata/localcp-bootstrap.yaml --base-id 1
