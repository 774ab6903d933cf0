#!/bin/sh
# Started by `make run`: the demo upstream and hop, until Ctrl-C.
set -e
bin/hop-echo -addr 127.0.0.1:9000 &
ECHO=$!
trap 'kill $ECHO 2>/dev/null' EXIT INT TERM
cat <<'MSG'

hop is starting on 127.0.0.1:10000 (admin on 127.0.0.1:9901), proxying to
the demo echo upstream on 127.0.0.1:9000. Try, in another terminal:

  curl -i http://127.0.0.1:10000/hello                 # direct response
  curl -i http://127.0.0.1:10000/anything              # proxied, echoes the request
  curl -i --http2-prior-knowledge http://127.0.0.1:10000/anything  # the same over HTTP/2 (h2c)
  go run ./hack/wscat ws://127.0.0.1:10000/chat        # WebSocket: type lines, they echo back
  curl -s http://127.0.0.1:9901/stats?filter=upgrades  # downstream_cx_upgrades_* live

Ctrl-C stops both.

MSG
bin/hop -c testdata/demo/envoy.yaml --base-id 1
