package probe

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// The real pinger between two namespaces, both families: answered echoes
// give an RTT, and an address that never answers times out.
func TestICMPPingerNetns(t *testing.T) {
	netns.SkipUnlessRoot(t)
	a := netns.NewForTest(t, "wgm-probe-a")
	b := netns.NewForTest(t, "wgm-probe-b")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(netns.Veth(a, "eth0", b, "eth0", 1500))
	must(netns.AddAddr(a, "eth0", "198.18.40.1/24"))
	must(netns.AddAddr(b, "eth0", "198.18.40.2/24"))
	must(netns.AddAddr(a, "eth0", "2001:db8:40::1/64"))
	must(netns.AddAddr(b, "eth0", "2001:db8:40::2/64"))
	must(netns.LinkUp(a, "eth0"))
	must(netns.LinkUp(b, "eth0"))
	must(netns.LinkUp(a, "lo"))
	must(netns.LinkUp(b, "lo"))

	var p *ICMPPinger
	must(a.Do(func() error {
		p = NewICMPPinger()
		// Open both sockets inside a's namespace.
		p.mu.Lock()
		defer p.mu.Unlock()
		if _, err := p.conn(false); err != nil {
			return err
		}
		_, err := p.conn(true)
		return err
	}))
	defer p.Close()

	ctx := context.Background()
	for _, addr := range []string{"198.18.40.2", "2001:db8:40::2"} {
		tgt := Target{Peer: "b", Addr: netip.MustParseAddr(addr)}
		var rtt time.Duration
		wait.For(t, 5*time.Second, "an answer from "+addr, func() (err error) { // IPv6 DAD may take a moment
			rtt, err = p.Ping(ctx, tgt, time.Second)
			return err
		})
		if rtt <= 0 || rtt > time.Second {
			t.Fatalf("ping %s: rtt %s", addr, rtt)
		}
	}
	// Nobody has this address: a timeout naming peer and address.
	_, err := p.Ping(ctx, Target{Peer: "ghost", Addr: netip.MustParseAddr("198.18.40.99")}, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "198.18.40.99") || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("ping of an absent address: %v", err)
	}
}
