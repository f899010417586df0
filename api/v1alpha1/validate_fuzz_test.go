package v1alpha1

import (
	"strings"
	"testing"
)

// FuzzParseEndpoint: never panics; what it accepts prints back to an
// endpoint it accepts again, with a port in 1-65535 and a host that is an
// IPv4 address, an IPv6 address or a DNS name; without DNS only addresses.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"198.18.0.1:51820", "[2001:db8::1]:51820", "gw.example.org:443", "a:1", "[::ffff:1.2.3.4]:1",
		"[fe80::1%eth0]:1", "300.1.1.1:1", "1.2.3:1", ":", "[]:1", "[:1", "x:00001", "-a.b:1"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, dns bool) {
		hp, err := ParseEndpoint(s, dns)
		if err != nil {
			if !strings.Contains(err.Error(), "is not") {
				t.Fatalf("error %q does not say what is accepted", err)
			}
			return
		}
		if hp.Port == 0 {
			t.Fatalf("%q: port 0 accepted", s)
		}
		if !hp.Addr.IsValid() && (!dns || !IsDNSName(hp.Host)) {
			t.Fatalf("%q: host %q is neither an address nor (allowed) a DNS name", s, hp.Host)
		}
		if hp.Addr.IsValid() && (hp.Addr.Is4In6() || hp.Addr.Zone() != "") {
			t.Fatalf("%q: accepted %s", s, hp.Addr)
		}
		again, err := ParseEndpoint(hp.String(), dns)
		if err != nil || again != hp {
			t.Fatalf("%q -> %q -> %+v, %v; want %+v", s, hp.String(), again, err, hp)
		}
	})
}

// FuzzParseCIDR: never panics; accepts only canonical text (what it prints
// is what it read), so two spellings of one prefix never both pass.
func FuzzParseCIDR(f *testing.F) {
	for _, s := range []string{"198.19.0.0/16", "198.19.0.1/16", "2001:db8::/64", "2001:DB8::/64", "::ffff:1.2.3.0/120", "0.0.0.0/0", "1.2.3.4/33", "fe80::%eth0/64"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseCIDR(s)
		if err != nil {
			return
		}
		if p.String() != s || p.Masked() != p || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			t.Fatalf("%q accepted as %s", s, p)
		}
	})
}

// FuzzParseKeepaliveAndKey: never panic; keepalives stay in 0-65535, keys
// are 44 characters.
func FuzzParseKeepaliveAndKey(f *testing.F) {
	for _, s := range []string{"0", "25", "65535", "65536", "-1", "+1", "1e3", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ParseKeepalive(s); err == nil && (k < 0 || k > 65535) {
			t.Fatalf("%q: keepalive %d", s, k)
		}
		if ParsePublicKey(s) == nil && len(s) != 44 {
			t.Fatalf("%q accepted as a key", s)
		}
		_ = URLHostAddrs(s)
		if a := URLHostAddrs(s); len(a) > 0 && !a[0].IsValid() {
			t.Fatalf("%q: invalid address %v", s, a)
		}
	})
}
