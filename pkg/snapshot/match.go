package snapshot

import (
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"
)

// ConnInfo is what filter-chain matching knows about a new connection.
type ConnInfo struct {
	Dst, Src          netip.AddrPort
	ServerName        string   // SNI, when a tls_inspector saw a ClientHello
	TransportProtocol string   // "tls" or "raw_buffer"
	ALPN              []string // offered by the client
}

type chainMatch struct {
	proto       *listenerv3.FilterChainMatch
	dstPort     uint32 // 0 = any
	dstPrefixes []netip.Prefix
	serverNames []string // lower-cased; "*.example.com" wildcards
	transport   string
	alpn        []string
	srcPrefixes []netip.Prefix
	srcPorts    []uint32
}

func compileMatch(m *listenerv3.FilterChainMatch) (chainMatch, error) {
	cm := chainMatch{proto: m}
	if m == nil {
		return cm, nil
	}
	cm.dstPort = m.GetDestinationPort().GetValue()
	var err error
	if cm.dstPrefixes, err = prefixes(m.GetPrefixRanges()); err != nil {
		return cm, fmt.Errorf(".prefix_ranges%w", err)
	}
	if cm.srcPrefixes, err = prefixes(m.GetSourcePrefixRanges()); err != nil {
		return cm, fmt.Errorf(".source_prefix_ranges%w", err)
	}
	if len(m.GetDirectSourcePrefixRanges()) > 0 {
		return cm, fmt.Errorf(".direct_source_prefix_ranges: unsupported field")
	}
	if m.GetSourceType() != listenerv3.FilterChainMatch_ANY {
		return cm, fmt.Errorf(".source_type: unsupported field")
	}
	for _, n := range m.GetServerNames() {
		cm.serverNames = append(cm.serverNames, strings.ToLower(n))
	}
	cm.transport = m.GetTransportProtocol()
	cm.alpn = m.GetApplicationProtocols()
	cm.srcPorts = m.GetSourcePorts()
	return cm, nil
}

func prefixes(rs []*corev3.CidrRange) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, r := range rs {
		a, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			return nil, fmt.Errorf("[%d].address_prefix: %w", i, err)
		}
		bits := a.BitLen()
		if r.GetPrefixLen() != nil {
			bits = int(r.GetPrefixLen().GetValue())
		}
		p, err := a.Prefix(bits)
		if err != nil {
			return nil, fmt.Errorf("[%d].prefix_len: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func checkDuplicateMatches(chains []*FilterChain) error {
	for i := range chains {
		for j := 0; j < i; j++ {
			if proto.Equal(chains[i].match.proto, chains[j].match.proto) {
				return fmt.Errorf("filter_chains[%d]: multiple filter chains with the same matching rules are defined (same as filter_chains[%d])", i, j)
			}
		}
	}
	return nil
}

// stage scores one criterion for one chain: -1 no match, 0 the chain does
// not constrain it, >0 a specific match (higher is more specific).
type stage func(m *chainMatch, c *ConnInfo) int

// stages run in Envoy's order. At each stage only the chains with the best
// score go on; chains that do not constrain the criterion go on only when
// no chain matched it specifically. There is no backtracking, as in Envoy.
var stages = []stage{
	func(m *chainMatch, c *ConnInfo) int { // destination_port
		if m.dstPort == 0 {
			return 0
		}
		if uint32(c.Dst.Port()) == m.dstPort {
			return 1
		}
		return -1
	},
	func(m *chainMatch, c *ConnInfo) int { return prefixScore(m.dstPrefixes, c.Dst.Addr()) },
	func(m *chainMatch, c *ConnInfo) int { // server_names
		if len(m.serverNames) == 0 {
			return 0
		}
		sni := strings.ToLower(c.ServerName)
		best := -1
		for _, n := range m.serverNames {
			if n == sni && sni != "" {
				return 1 << 20 // exact beats every wildcard
			}
			if suffix, ok := strings.CutPrefix(n, "*"); ok && sni != "" && strings.HasSuffix(sni, suffix) && len(sni) > len(suffix) {
				best = max(best, len(suffix))
			}
		}
		return best
	},
	func(m *chainMatch, c *ConnInfo) int { // transport_protocol
		if m.transport == "" {
			return 0
		}
		if m.transport == c.TransportProtocol {
			return 1
		}
		return -1
	},
	func(m *chainMatch, c *ConnInfo) int { // application_protocols
		if len(m.alpn) == 0 {
			return 0
		}
		for _, want := range m.alpn {
			for _, got := range c.ALPN {
				if want == got {
					return 1
				}
			}
		}
		return -1
	},
	func(m *chainMatch, c *ConnInfo) int { return prefixScore(m.srcPrefixes, c.Src.Addr()) },
	func(m *chainMatch, c *ConnInfo) int { // source_ports
		if len(m.srcPorts) == 0 {
			return 0
		}
		for _, p := range m.srcPorts {
			if uint32(c.Src.Port()) == p {
				return 1
			}
		}
		return -1
	},
}

func prefixScore(ps []netip.Prefix, a netip.Addr) int {
	if len(ps) == 0 {
		return 0
	}
	a = a.Unmap()
	best := -1
	for _, p := range ps {
		if p.Contains(a) {
			best = max(best, p.Bits()+1)
		}
	}
	return best
}

// Match picks the filter chain for a connection, or the default chain, or
// nil when none applies (the connection is then closed, as in Envoy).
func (l *Listener) Match(c *ConnInfo) *FilterChain {
	if c.TransportProtocol == "" {
		c.TransportProtocol = "raw_buffer"
	}
	cands := l.Chains
	// Two buffers used in turn: a stage reads one and fills the other.
	var bufA, bufB [8]*FilterChain
	bufs := [2][]*FilterChain{bufA[:0], bufB[:0]}
	for i, st := range stages {
		best := -1
		next := bufs[i%2][:0]
		for _, fc := range cands {
			s := st(&fc.match, c)
			switch {
			case s > best:
				best = s
				next = append(next[:0], fc)
			case s == best && s >= 0:
				next = append(next, fc)
			}
		}
		if best < 0 {
			return l.Default
		}
		cands = next
	}
	if len(cands) == 0 {
		return l.Default
	}
	return cands[0]
}

// needsTLSInfo reports whether any chain is chosen by SNI, ALPN or the
// transport protocol, or has a tcp_proxy that formats the SNI into its
// tunnel request (%REQUESTED_SERVER_NAME%): only then does the
// tls_inspector's work pay.
func (l *Listener) needsTLSInfo() bool {
	for _, fc := range l.Chains {
		if len(fc.match.serverNames) > 0 || len(fc.match.alpn) > 0 || fc.match.transport != "" {
			return true
		}
	}
	for _, fc := range l.allChains() {
		if fc.TCP != nil && fc.TCP.UsesServerName() {
			return true
		}
	}
	return false
}
