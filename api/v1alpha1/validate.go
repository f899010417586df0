package v1alpha1

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// The one validator of each user input (MeshPeer fields, Node annotations,
// flags). The CRD's CEL rules say the same in the API server; the Want*
// texts are shared with their messages (a test keeps them in step).

// What each input accepts, for error messages.
const (
	WantPublicKey      = "a WireGuard public key: 32 bytes in base64 (44 characters ending in =)"
	WantEndpoint       = "host:port (IPv4, [IPv6] or DNS name, and a port in 1-65535)"
	WantEndpointIP     = "host:port with an IPv4 address or an [IPv6] address and a port in 1-65535"
	WantCIDR           = "a CIDR in canonical form (such as 10.244.1.0/24 or 2001:db8:1::/64)"
	WantKeepalive      = "a number of seconds in 0-65535"
	WantLocation       = "a location name: 1-63 letters, digits and -_. beginning and ending with a letter or digit (a label value)"
	WantCandidateKind  = "private, public or observed"
	maxDNSNameLength   = 253
	maxDNSLabelLength  = 63
	maxPortNumber      = 65535
	maxKeepaliveSecond = 65535
)

// ParsePublicKey checks that s is 32 bytes in canonical base64.
func ParsePublicKey(s string) error {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("%q is not %s", s, WantPublicKey)
	}
	return nil
}

// HostPort is a parsed endpoint. Addr is valid when the host is an IP
// address; otherwise Host is a DNS name.
//
// +kubebuilder:object:generate=false
type HostPort struct {
	Host string
	Addr netip.Addr
	Port uint16
}

// ParseEndpoint parses host:port, where host is an IPv4 address, an IPv6
// address in brackets or (with allowDNS) a DNS name, and port is 1-65535.
func ParseEndpoint(s string, allowDNS bool) (HostPort, error) {
	want := WantEndpoint
	if !allowDNS {
		want = WantEndpointIP
	}
	bad := func(why string) (HostPort, error) {
		return HostPort{}, fmt.Errorf("%q is not %s: %s", s, want, why)
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("no port")
	}
	host, port := s[:i], s[i+1:]
	p, ok := parseUint(port, maxPortNumber)
	if !ok || p == 0 {
		return bad(fmt.Sprintf("port %q is not in 1-65535", port))
	}
	out := HostPort{Host: host, Port: uint16(p)}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" {
			return bad(fmt.Sprintf("%s is not an IPv6 address", host))
		}
		out.Host, out.Addr = a.String(), a
		return out, nil
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !a.Is4() {
			return bad("an IPv6 address needs brackets, like [2001:db8::1]:51820")
		}
		out.Addr = a
		return out, nil
	}
	if !allowDNS {
		return bad(fmt.Sprintf("host %q is not an IP address", host))
	}
	if !IsDNSName(host) {
		return bad(fmt.Sprintf("host %q is neither an IP address nor a DNS name", host))
	}
	return out, nil
}

// String is host:port again, with brackets around IPv6 addresses.
func (h HostPort) String() string {
	if h.Addr.Is6() {
		return fmt.Sprintf("[%s]:%d", h.Addr, h.Port)
	}
	return fmt.Sprintf("%s:%d", h.Host, h.Port)
}

// IsDNSName reports whether s is a DNS name: letters, digits and inner
// hyphens in labels of at most 63 characters, at most 253 in all, and not
// all digits and dots (300.1.1.1 is a bad address, not a name).
func IsDNSName(s string) bool {
	if s == "" || len(s) > maxDNSNameLength {
		return false
	}
	digitsOnly := true
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > maxDNSLabelLength || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				digitsOnly = false
			default:
				return false
			}
		}
	}
	return !digitsOnly
}

// ParseCIDR parses an IPv4 or IPv6 prefix in canonical form (no host bits,
// no zone, no IPv4-in-IPv6).
func ParseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	switch {
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("%q is not %s", s, WantCIDR)
	case p.Addr().Is4In6():
		return netip.Prefix{}, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: want %s", s, WantCIDR)
	case p.Masked() != p:
		return netip.Prefix{}, fmt.Errorf("%q has host bits set: want %s", s, p.Masked())
	case p.String() != s:
		return netip.Prefix{}, fmt.Errorf("%q is not written in canonical form: want %s", s, p)
	}
	return p, nil
}

// ParseLocation checks a location name (spec.location, the
// wgmesh.io/location label): a label value that is not empty.
func ParseLocation(s string) error {
	if s == "" || len(s) > maxDNSLabelLength || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return fmt.Errorf("%q is not %s", s, WantLocation)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' {
			return fmt.Errorf("%q is not %s", s, WantLocation)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// ParseCandidate checks one spec.candidates entry: a known kind and an
// endpoint, which only a public candidate may give as a DNS name (a private
// or observed one is an address a node has or was seen at).
func ParseCandidate(c Candidate) (HostPort, error) {
	switch c.Kind {
	case CandidatePrivate, CandidatePublic, CandidateObserved:
	default:
		return HostPort{}, fmt.Errorf("candidate kind %q is not %s", c.Kind, WantCandidateKind)
	}
	hp, err := ParseEndpoint(string(c.Endpoint), c.Kind == CandidatePublic)
	if err != nil {
		return HostPort{}, fmt.Errorf("%s candidate: %w", c.Kind, err)
	}
	return hp, nil
}

// ParseKeepalive parses a persistent keepalive in seconds (0-65535).
func ParseKeepalive(s string) (int32, error) {
	n, ok := parseUint(s, maxKeepaliveSecond)
	if !ok {
		return 0, fmt.Errorf("%q is not %s", s, WantKeepalive)
	}
	return int32(n), nil
}

// CheckRange checks a numeric setting (a flag) against [lo, hi], naming it
// and the value on error.
func CheckRange(name string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s=%d is out of range: want %d-%d", name, v, lo, hi)
	}
	return nil
}

// parseUint accepts 1-5 decimal digits up to max (no sign, no spaces).
func parseUint(s string, max int) (int, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n <= max
}

// URLHostAddrs is the IP address in a URL's host (such as the API server's
// https://198.18.0.1:6443), or nothing when the host is a DNS name.
func URLHostAddrs(rawURL string) []netip.Addr {
	host := rawURL
	if u, err := url.Parse(rawURL); err == nil && u.Host != "" {
		host = u.Host
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return []netip.Addr{a.Unmap()}
	}
	return nil
}
