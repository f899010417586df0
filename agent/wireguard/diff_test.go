package wireguard

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func tkey(n byte) wgtypes.Key {
	var k wgtypes.Key
	for i := range k {
		k[i] = n
	}
	return k
}

func udp(s string) *net.UDPAddr {
	ap := netip.MustParseAddrPort(s)
	return net.UDPAddrFromAddrPort(ap)
}

func nets(s ...string) []net.IPNet {
	var out []net.IPNet
	for _, x := range s {
		_, n, err := net.ParseCIDR(x)
		if err != nil {
			panic(err)
		}
		out = append(out, *n)
	}
	return out
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// describe renders a PeerConfig compactly so that expectations read like a
// change list.
func describe(pcs []wgtypes.PeerConfig) []string {
	var out []string
	for _, pc := range pcs {
		var parts []string
		parts = append(parts, fmt.Sprintf("key%d", pc.PublicKey[0]))
		switch {
		case pc.Remove:
			parts = append(parts, "remove")
		case pc.UpdateOnly:
			parts = append(parts, "update")
		default:
			parts = append(parts, "add")
		}
		if pc.Endpoint != nil {
			parts = append(parts, "endpoint="+pc.Endpoint.String())
		}
		if pc.ReplaceAllowedIPs {
			var a []string
			for _, n := range pc.AllowedIPs {
				a = append(a, n.String())
			}
			parts = append(parts, "allowed="+strings.Join(a, ","))
		}
		if pc.PersistentKeepaliveInterval != nil {
			parts = append(parts, "keepalive="+pc.PersistentKeepaliveInterval.String())
		}
		out = append(out, strings.Join(parts, " "))
	}
	return out
}

func TestDiff(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	fresh := now.Add(-30 * time.Second)
	stale := now.Add(-10 * time.Minute)
	tests := []struct {
		name    string
		desired []Peer
		current []wgtypes.Peer
		want    []string
	}{
		{
			name:    "nothing changed: no change at all",
			desired: []Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.12:51820"), AllowedIPs: prefixes("198.19.2.0/24", "2001:db8:100:2::/64")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.12:51820"), AllowedIPs: nets("2001:db8:100:2::/64", "198.19.2.0/24")}},
			want:    nil,
		},
		{
			name: "empty to empty",
			want: nil,
		},
		{
			name: "add, remove, sorted by key",
			desired: []Peer{
				{PublicKey: tkey(3), Endpoint: udp("198.18.0.13:51820"), AllowedIPs: prefixes("198.19.3.0/24"), Keepalive: 25 * time.Second},
				{PublicKey: tkey(2), AllowedIPs: prefixes("198.19.2.0/24")},
			},
			current: []wgtypes.Peer{{PublicKey: tkey(9), AllowedIPs: nets("198.19.9.0/24")}, {PublicKey: tkey(2), AllowedIPs: nets("198.19.2.0/24")}},
			want: []string{
				"key3 add endpoint=198.18.0.13:51820 allowed=198.19.3.0/24 keepalive=25s",
				"key9 remove",
			},
		},
		{
			name:    "allowedIPs changed: only that peer, replace its allowed IPs",
			desired: []Peer{{PublicKey: tkey(2), AllowedIPs: prefixes("198.19.2.0/24", "2001:db8:100:2::/64")}, {PublicKey: tkey(3), AllowedIPs: prefixes("198.19.3.0/24")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), AllowedIPs: nets("198.19.2.0/24")}, {PublicKey: tkey(3), AllowedIPs: nets("198.19.3.0/24")}},
			want:    []string{"key2 update allowed=198.19.2.0/24,2001:db8:100:2::/64"},
		},
		{
			name:    "keepalive changed",
			desired: []Peer{{PublicKey: tkey(2), Keepalive: 0}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), PersistentKeepaliveInterval: 25 * time.Second}},
			want:    []string{"key2 update keepalive=0s"},
		},
		{
			name:    "rotated key behind NAT: the new peer starts from the old one's learned endpoint",
			desired: []Peer{{PublicKey: tkey(7), AllowedIPs: prefixes("198.19.2.0/24")}},
			current: []wgtypes.Peer{
				{PublicKey: tkey(2), Endpoint: udp("198.18.0.254:40000"), AllowedIPs: nets("198.19.2.0/24"), LastHandshakeTime: fresh},
				{PublicKey: tkey(3), Endpoint: udp("198.18.0.254:40001"), AllowedIPs: nets("198.19.2.0/25"), LastHandshakeTime: stale},
			},
			want: []string{"key2 remove", "key3 remove", "key7 add endpoint=198.18.0.254:40000 allowed=198.19.2.0/24 keepalive=0s"},
		},
		{
			name:    "rotated key, configured endpoint, live session on another address (NAT): the learned one",
			desired: []Peer{{PublicKey: tkey(7), Endpoint: udp("198.18.1.11:51820"), AllowedIPs: prefixes("198.19.2.0/24")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.254:40000"), AllowedIPs: nets("198.19.2.0/24"), LastHandshakeTime: fresh}},
			want:    []string{"key2 remove", "key7 add endpoint=198.18.0.254:40000 allowed=198.19.2.0/24 keepalive=0s"},
		},
		{
			name:    "rotated key, configured endpoint, old session stale: the configured one",
			desired: []Peer{{PublicKey: tkey(7), Endpoint: udp("198.18.0.12:51820"), AllowedIPs: prefixes("198.19.2.0/24")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.254:40000"), AllowedIPs: nets("198.19.2.0/24"), LastHandshakeTime: stale}},
			want:    []string{"key2 remove", "key7 add endpoint=198.18.0.12:51820 allowed=198.19.2.0/24 keepalive=0s"},
		},
		{
			name:    "no endpoint from a peer that stays or does not overlap",
			desired: []Peer{{PublicKey: tkey(7), AllowedIPs: prefixes("198.19.2.0/24")}, {PublicKey: tkey(3), AllowedIPs: prefixes("198.19.2.0/25")}},
			current: []wgtypes.Peer{
				{PublicKey: tkey(3), Endpoint: udp("198.18.0.254:40001"), AllowedIPs: nets("198.19.2.0/25"), LastHandshakeTime: fresh},
				{PublicKey: tkey(4), Endpoint: udp("198.18.0.254:40002"), AllowedIPs: nets("198.19.4.0/24"), LastHandshakeTime: fresh},
			},
			want: []string{"key4 remove", "key7 add allowed=198.19.2.0/24 keepalive=0s"},
		},
		{
			name:    "no configured endpoint keeps the learned one",
			desired: []Peer{{PublicKey: tkey(2)}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.254:40000"), LastHandshakeTime: stale}},
			want:    nil,
		},
		{
			name:    "configured endpoint differs, live session: keep learned (NAT)",
			desired: []Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.1.11:51820")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.254:40000"), LastHandshakeTime: fresh}},
			want:    nil,
		},
		{
			name:    "pinned by the path choice, live session elsewhere: set it (a location moved the pair to its private path)",
			desired: []Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.10.2:51820"), Pinned: true}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.100.2:51820"), LastHandshakeTime: fresh}},
			want:    []string{"key2 update endpoint=198.18.10.2:51820"},
		},
		{
			name:    "configured endpoint differs, no recent handshake: set it",
			desired: []Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.12:51820")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2), Endpoint: udp("198.18.0.99:51820"), LastHandshakeTime: stale}},
			want:    []string{"key2 update endpoint=198.18.0.12:51820"},
		},
		{
			name:    "configured endpoint, peer had none yet",
			desired: []Peer{{PublicKey: tkey(2), Endpoint: udp("[2001:db8::12]:51820")}},
			current: []wgtypes.Peer{{PublicKey: tkey(2)}},
			want:    []string{"key2 update endpoint=[2001:db8::12]:51820"},
		},
		{
			name:    "remove all",
			current: []wgtypes.Peer{{PublicKey: tkey(4)}, {PublicKey: tkey(2)}},
			want:    []string{"key2 remove", "key4 remove"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := describe(DiffAt(tt.desired, tt.current, now))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("DiffAt =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}

// TestDiffConverges checks that applying a diff to a model of the device
// gives a device whose diff against the same desired state is empty.
func TestDiffConverges(t *testing.T) {
	desired := []Peer{
		{PublicKey: tkey(1), Endpoint: udp("198.18.0.11:51820"), AllowedIPs: prefixes("198.19.1.0/24")},
		{PublicKey: tkey(5), AllowedIPs: prefixes("198.19.5.0/24", "2001:db8:100:5::/64"), Keepalive: 25 * time.Second},
	}
	current := []wgtypes.Peer{{PublicKey: tkey(1), AllowedIPs: nets("198.19.9.0/24")}, {PublicKey: tkey(7)}}
	model := applyModel(current, Diff(desired, current))
	if d := Diff(desired, model); len(d) != 0 {
		t.Fatalf("second diff not empty: %q", describe(d))
	}
}

// applyModel applies peer configs the way WireGuard does.
func applyModel(current []wgtypes.Peer, pcs []wgtypes.PeerConfig) []wgtypes.Peer {
	m := map[wgtypes.Key]wgtypes.Peer{}
	for _, p := range current {
		m[p.PublicKey] = p
	}
	for _, pc := range pcs {
		p, ok := m[pc.PublicKey]
		if pc.Remove {
			delete(m, pc.PublicKey)
			continue
		}
		if pc.UpdateOnly && !ok {
			continue
		}
		p.PublicKey = pc.PublicKey
		if pc.Endpoint != nil {
			p.Endpoint = pc.Endpoint
		}
		if pc.PersistentKeepaliveInterval != nil {
			p.PersistentKeepaliveInterval = *pc.PersistentKeepaliveInterval
		}
		if pc.ReplaceAllowedIPs {
			p.AllowedIPs = nil
		}
		p.AllowedIPs = append(p.AllowedIPs, pc.AllowedIPs...)
		m[pc.PublicKey] = p
	}
	var out []wgtypes.Peer
	for _, p := range m {
		out = append(out, p)
	}
	return out
}
