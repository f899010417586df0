// Package sysctl sets the kernel parameters the data plane needs and reports
// what it found and changed: the one writer of sysctls in the agent (the
// tunnel's, agent/tunnel; br_netfilter's, agent/egress).
package sysctl

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Setting is one parameter and the value it needs. When OnlyIf is set, the
// value is written only if the current value is one of OnlyIf (for rp_filter:
// strict mode 1 becomes loose 2; off 0 and loose 2 are left alone).
type Setting struct {
	Key    string // dotted, e.g. net.ipv4.ip_forward
	Value  string
	OnlyIf []string
	Why    string
}

// Result is what Ensure did for one setting.
type Result struct {
	Key      string
	Previous string
	Current  string
	Changed  bool
	Err      error
}

// Options say which settings a node needs.
type Options struct {
	// IPv6 is whether the node has IPv6 pod CIDRs. Only then are IPv6
	// settings touched: a host booted with IPv6 disabled has none, and
	// turning on IPv6 forwarding on a host that needs no IPv6 pod traffic
	// would only risk its router advertisements.
	IPv6 bool
	// IPv6Uplinks are the interfaces carrying IPv6 default routes. With
	// forwarding on, the kernel ignores router advertisements unless
	// accept_ra is 2: a host that learned its default route from them
	// would lose it. Their accept_ra 1 becomes 2 before forwarding is set.
	IPv6Uplinks []string
}

// Required returns the host-wide settings for a node, in the order to apply
// them. The tunnel's own settings are ForLink's: they exist only once the
// link does.
func Required(o Options) []Setting {
	out := []Setting{
		{Key: "net.ipv4.ip_forward", Value: "1", Why: "forward pod traffic between the bridge and the tunnel"},
		{Key: "net.ipv4.conf.all.rp_filter", Value: "2", OnlyIf: []string{"1"}, Why: "strict reverse-path filtering drops tunnel traffic whose source routes elsewhere"},
	}
	if o.IPv6 {
		for _, up := range o.IPv6Uplinks {
			out = append(out, Setting{Key: "net.ipv6.conf." + up + ".accept_ra", Value: "2", OnlyIf: []string{"1"},
				Why: "keep the default route learned from router advertisements once forwarding is on"})
		}
		out = append(out, Setting{Key: "net.ipv6.conf.all.forwarding", Value: "1", Why: "forward IPv6 pod traffic"})
	}
	return out
}

// ForLink returns the settings of the WireGuard link, to apply once it
// exists (before, its /proc/sys/net/ipv4/conf/LINK does not).
func ForLink(link string) []Setting {
	return []Setting{
		{Key: "net.ipv4.conf." + link + ".rp_filter", Value: "2", OnlyIf: []string{"1"}, Why: "strict reverse-path filtering on the tunnel"},
	}
}

// BridgeNetfilter returns the br_netfilter settings: bridged IPv4 and IPv6
// traffic passes netfilter, so that the service NAT sees traffic between
// pods on the same bridge. They exist only while the br_netfilter module is
// loaded (agent/egress loads it).
func BridgeNetfilter() []Setting {
	why := "bridged pod traffic passes netfilter (service NAT to a pod on the same node)"
	return []Setting{
		{Key: "net.bridge.bridge-nf-call-iptables", Value: "1", Why: why},
		{Key: "net.bridge.bridge-nf-call-ip6tables", Value: "1", Why: why},
	}
}

// Ensure applies settings under root (default /proc/sys). Every setting is
// tried; errors are in the results and joined in the returned error.
func Ensure(root string, settings []Setting) ([]Result, error) {
	if root == "" {
		root = "/proc/sys"
	}
	var errs []error
	out := make([]Result, 0, len(settings))
	for _, s := range settings {
		r := ensure(root, s)
		if r.Err != nil {
			errs = append(errs, r.Err)
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

func ensure(root string, s Setting) Result {
	r := Result{Key: s.Key}
	path := filepath.Join(root, strings.ReplaceAll(s.Key, ".", "/"))
	data, err := os.ReadFile(path)
	if err != nil {
		r.Err = fmt.Errorf("reading sysctl %s: %w", s.Key, err)
		return r
	}
	r.Previous = strings.TrimSpace(string(data))
	r.Current = r.Previous
	if r.Previous == s.Value {
		return r
	}
	if len(s.OnlyIf) > 0 && !contains(s.OnlyIf, r.Previous) {
		return r
	}
	if err := os.WriteFile(path, []byte(s.Value), 0o644); err != nil {
		r.Err = fmt.Errorf("setting sysctl %s=%s (%s): %w", s.Key, s.Value, s.Why, err)
		return r
	}
	r.Current, r.Changed = s.Value, true
	return r
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
