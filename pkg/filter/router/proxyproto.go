package router

import (
	"encoding/binary"
	"net/netip"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// proxyProtocolV2Sig is the 12-byte signature that opens a PROXY protocol
// version 2 header.
const proxyProtocolV2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// proxyProtocolHeader is the PROXY protocol header Envoy writes to a
// terminated CONNECT's upstream connection (connect_config
// proxy_protocol_config): it describes the downstream connection, source
// = the client's address (remote), destination = the address hop
// accepted it on (local), both "ip:port".
//
// Version 1 is the text line "PROXY TCP4|TCP6 <src> <dst> <sport>
// <dport>\r\n"; version 2 the binary form with the PROXY command over
// TCP, 12 (IPv4) or 36 (IPv6) address bytes and no TLVs. The family is the
// source's; a destination of the other family is written in the source's
// (IPv4-mapped) when it can be, else both in IPv6 form. Addresses that are
// not IP (an internal listener) give "PROXY UNKNOWN\r\n" or a version 2
// LOCAL header, which tell the upstream to use the connection's own
// addresses.
func proxyProtocolHeader(v corev3.ProxyProtocolConfig_Version, remote, local string) []byte {
	src, err1 := netip.ParseAddrPort(remote)
	dst, err2 := netip.ParseAddrPort(local)
	ok := err1 == nil && err2 == nil
	var sa, da netip.Addr
	if ok {
		sa, da = src.Addr().Unmap().WithZone(""), dst.Addr().Unmap().WithZone("")
		if sa.Is4() != da.Is4() {
			sa, da = as16(sa), as16(da)
		}
	}
	if v == corev3.ProxyProtocolConfig_V2 {
		return proxyV2(ok, sa, da, src.Port(), dst.Port())
	}
	if !ok {
		return []byte("PROXY UNKNOWN\r\n")
	}
	b := make([]byte, 0, 108)
	b = append(b, "PROXY TCP4 "...)
	if !sa.Is4() {
		b[9] = '6'
	}
	b = sa.AppendTo(b)
	b = append(b, ' ')
	b = da.AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, "\r\n"...)
}

// as16 is a in its IPv6 form (an IPv4 address mapped).
func as16(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }

func proxyV2(ok bool, sa, da netip.Addr, sp, dp uint16) []byte {
	b := make([]byte, 0, 16+36)
	b = append(b, proxyProtocolV2Sig...)
	if !ok {
		// Version 2, LOCAL command, unspecified family, no addresses.
		return append(b, 0x20, 0x00, 0x00, 0x00)
	}
	b = append(b, 0x21) // version 2, PROXY command
	if sa.Is4() {
		b = append(b, 0x11, 0, 12) // AF_INET, STREAM; 12 address bytes
		s4, d4 := sa.As4(), da.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, 0x21, 0, 36) // AF_INET6, STREAM; 36 address bytes
		s16, d16 := sa.As16(), da.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, sp)
	return binary.BigEndian.AppendUint16(b, dp)
}
