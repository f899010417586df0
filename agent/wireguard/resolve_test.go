package wireguard

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestResolver(t *testing.T) {
	now := time.Unix(1000, 0)
	answer := []netip.Addr{netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("198.18.0.5")}
	var fail bool
	lookups := 0
	r := &Resolver{TTL: time.Minute, Now: func() time.Time { return now },
		Lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
			lookups++
			if fail {
				return nil, errors.New("no such host")
			}
			return answer, nil
		}}
	ctx := context.Background()

	a, err := r.Resolve(ctx, "[2001:db8::9]:51820")
	if err != nil || a.String() != "[2001:db8::9]:51820" || lookups != 0 {
		t.Fatalf("literal: %v %v lookups=%d", a, err, lookups)
	}
	a, err = r.Resolve(ctx, "peer.example:51820")
	if err != nil || a.String() != "198.18.0.5:51820" {
		t.Fatalf("dns: %v %v (want IPv4 preferred)", a, err)
	}
	if _, _ = r.Resolve(ctx, "peer.example:51820"); lookups != 1 {
		t.Fatalf("cached answer looked up again: %d lookups", lookups)
	}
	now = now.Add(2 * time.Minute)
	answer = []netip.Addr{netip.MustParseAddr("198.18.0.6")}
	if a, _ = r.Resolve(ctx, "peer.example:51820"); a.String() != "198.18.0.6:51820" || lookups != 2 {
		t.Fatalf("re-resolve after TTL: %v, %d lookups", a, lookups)
	}
	now = now.Add(2 * time.Minute)
	fail = true
	a, err = r.Resolve(ctx, "peer.example:51820")
	if err == nil || a == nil || a.String() != "198.18.0.6:51820" {
		t.Fatalf("failed re-resolve: want last good address and an error, got %v %v", a, err)
	}
	if _, err := r.Resolve(ctx, "never.example:1"); err == nil {
		t.Fatal("unresolvable name without history: want error")
	}
	n := lookups
	if _, err := r.Resolve(ctx, "never.example:1"); err == nil || lookups != n {
		t.Fatalf("failure not cached: err=%v, %d new lookups", err, lookups-n)
	}
}
