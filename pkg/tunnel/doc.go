// Package tunnel owns every byte-stream concern of hop: deciding whether a
// request is an upgrade and of which type (Classify), taking the downstream
// connection over from the HTTP server with the bytes it had already
// buffered (HijackH1), opening the upstream side (OpenH1Upgrade), and
// splicing the two together (Splice) until both directions end.
//
// No other package reads the Upgrade or Connection headers to decide about
// upgrades; they ask this package.
//
// The life of an HTTP/1.1 upgrade:
//
//	Classify(req)                     → "websocket"
//	up := cluster.Dial(); OpenH1Upgrade(up, req)   → 101 + buffered upstream bytes
//	HijackH1(w)                       → downstream conn + buffered downstream bytes
//	write the 101 head downstream; replay both buffers
//	Splice(down, up)                  → io.Copy between the two *net.TCPConn
//
// Until the upstream answers 101, nothing the client pipelined behind the
// request headers is read: it stays in the HTTP server's buffer, which is
// how the payload is held back as Envoy holds it.
package tunnel
