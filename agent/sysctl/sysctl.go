// Package sysctl sets the kernel parameters the data plane needs and reports
// what it found and changed.
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

// Required returns the settings for a node whose WireGuard link is link.
func Required(link string) []Setting {
	return []Setting{
		{Key: "net.ipv4.ip_forward", Value: "1", Why: "forward pod traffic between the bridge and the tunnel"},
		{Key: "net.ipv6.conf.all.forwarding", Value: "1", Why: "forward IPv6 pod traffic"},
		{Key: "net.ipv4.conf.all.rp_filter", Value: "2", OnlyIf: []string{"1"}, Why: "strict reverse-path filtering drops tunnel traffic whose source routes elsewhere"},
		{Key: "net.ipv4.conf." + link + ".rp_filter", Value: "2", OnlyIf: []string{"1"}, Why: "strict reverse-path filtering on the tunnel"},
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
