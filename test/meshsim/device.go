package meshsim

// The real agents' devices and routes: the peers on each wgmesh0, read
// through its UAPI socket, and when each route via wgmesh0 appeared.

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/wait"
)

const (
	// linkName is the real agents' WireGuard link.
	linkName = "wgmesh0"
	// uapiTimeout bounds one UAPI exchange (a thousand peers' dump).
	uapiTimeout = 10 * time.Second
)

// uapiPeers lists the peers (hex public keys) of a userspace WireGuard
// device through its UAPI socket (what wgctrl does; its userspace client
// only looks in this process's own /var/run/wireguard, and each node has
// its own).
func uapiPeers(sock string) (map[string]bool, error) {
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(uapiTimeout))
	if _, err := io.WriteString(conn, "get=1\n\n"); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	keys := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			return keys, nil
		}
		if v, ok := strings.CutPrefix(line, "public_key="); ok {
			keys[v] = true
		}
		if v, ok := strings.CutPrefix(line, "errno="); ok && v != "0" {
			return nil, fmt.Errorf("%s: errno %s", sock, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

// hexKey is a base64 WireGuard key as UAPI writes it ("" when invalid).
func hexKey(b64 string) string {
	k, err := wgtypes.ParseKey(b64)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(k[:])
}

func uapiSocket(n *cluster.Node) string {
	return n.HostPath("/var/run/wireguard/" + linkName + ".sock")
}

// WaitPeers waits until every real agent's wgmesh0 has every healthy
// simulated node's current key and want peers in all (the other real nodes
// included).
func (s *Sim) WaitPeers(ctx context.Context, timeout time.Duration, want int) {
	s.tb.Helper()
	s.mu.Lock()
	keys := make([]string, 0, len(s.alive))
	for n := range s.alive {
		if !s.fail[n] { // a NodeNotReady peer may be left out
			keys = append(keys, hexKey(s.keys[n]))
		}
	}
	s.mu.Unlock()
	s.WaitFor(ctx, timeout, fmt.Sprintf("%d peers on every real agent's %s", want, linkName), func() error {
		for _, n := range s.real {
			got, err := uapiPeers(uapiSocket(n))
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			if len(got) < want {
				return fmt.Errorf("%s has %d", n.Name, len(got))
			}
			for _, k := range keys {
				if !got[k] {
					return fmt.Errorf("%s lacks a simulated node's key", n.Name)
				}
			}
		}
		return nil
	})
}

// routeLog records when routes via wgmesh0 appeared in a node.
type routeLog struct {
	node string
	done chan struct{}
	mu   sync.Mutex
	adds map[netip.Prefix][]time.Time
	lost atomic.Int64 // netlink errors (overflow)
}

func newRouteLog(node string) *routeLog {
	return &routeLog{node: node, done: make(chan struct{}), adds: map[netip.Prefix][]time.Time{}}
}

// WatchRoutes records, on every real node, when a route via wgmesh0
// appears: the last step of programming a peer (the agent sets the
// WireGuard peer first, then its routes).
func (s *Sim) WatchRoutes() {
	for _, n := range s.real {
		r, err := watchRoutes(n)
		if err != nil {
			s.tb.Fatal(err)
		}
		s.routes = append(s.routes, r)
	}
}

func watchRoutes(n *cluster.Node) (*routeLog, error) {
	h, err := n.NetNS.Netlink()
	if err != nil {
		return nil, err
	}
	l, err := h.LinkByName(linkName)
	h.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", n.Name, linkName, err)
	}
	idx := l.Attrs().Index
	nsh, err := vnetns.GetFromPath(n.NetNS.Path())
	if err != nil {
		return nil, err
	}
	r := newRouteLog(n.Name)
	ch := make(chan netlink.RouteUpdate, 8192)
	err = netlink.RouteSubscribeWithOptions(ch, r.done, netlink.RouteSubscribeOptions{
		Namespace: &nsh, ReceiveBufferSize: 8 << 20,
		ErrorCallback: func(error) { r.lost.Add(1) },
	})
	nsh.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: route subscription: %w", n.Name, err)
	}
	go func() {
		for u := range ch {
			if u.Type != unix.RTM_NEWROUTE || u.LinkIndex != idx || u.Dst == nil {
				continue
			}
			p, ok := netip.AddrFromSlice(u.Dst.IP)
			if !ok {
				continue
			}
			ones, _ := u.Dst.Mask.Size()
			r.add(netip.PrefixFrom(p.Unmap(), ones), time.Now())
		}
	}()
	return r, nil
}

func (r *routeLog) add(p netip.Prefix, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.adds[p] = append(r.adds[p], at)
}

func (r *routeLog) stop() {
	select {
	case <-r.done:
	default:
		close(r.done)
	}
}

// firstAdd is the first time a route to p appeared at or after t.
func (r *routeLog) firstAdd(p netip.Prefix, t time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.adds[p] {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// WatchPublished records when each MeshPeer spec (name and key) first
// appears: the operator's part of a join (JoinLatencies' pub).
func (s *Sim) WatchPublished(ctx context.Context) {
	wc, err := client.NewWithWatch(s.cfg, client.Options{Scheme: cluster.Scheme()})
	if err != nil {
		s.tb.Fatal(err)
	}
	w, err := wc.Watch(ctx, &wgv1.MeshPeerList{})
	if err != nil {
		s.tb.Fatalf("watch MeshPeers: %v", err)
	}
	s.pubMu.Lock()
	s.published = map[string]time.Time{}
	s.pubMu.Unlock()
	go func() {
		for ev := range w.ResultChan() {
			mp, ok := ev.Object.(*wgv1.MeshPeer)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) || len(mp.Spec.AllowedIPs) == 0 {
				continue
			}
			key := mp.Name + "/" + string(mp.Spec.PublicKey)
			s.pubMu.Lock()
			if _, ok := s.published[key]; !ok {
				s.published[key] = time.Now()
			}
			s.pubMu.Unlock()
		}
	}()
	s.tb.Cleanup(w.Stop)
}

func (s *Sim) publishedAt(name, key string) (time.Time, bool) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	t, ok := s.published[name+"/"+key]
	return t, ok
}

// JoinLatencies waits (up to timeout) until each join's pod CIDR has a
// route via wgmesh0 on every real agent (WatchRoutes), then returns the
// latencies from its annotation write (one per join and agent), those to
// its MeshPeer's publication (with WatchPublished), and how many never came
// or are not on the device. A timeout is not a failure: it is counted in
// missing.
func (s *Sim) JoinLatencies(ctx context.Context, joins []Join, timeout time.Duration) (lat, pub []time.Duration, missing int) {
	var cidrs map[string]netip.Prefix
	_ = wait.Poll(ctx, timeout, func() error {
		var err error
		if cidrs, err = s.PodCIDRs(ctx); err != nil {
			return err
		}
		pending := 0
		for _, j := range joins {
			if j.Err != nil {
				continue
			}
			p, ok := cidrs[j.Name]
			if !ok {
				pending++
				continue
			}
			for _, r := range s.routes {
				if _, ok := r.firstAdd(p, j.Announced); !ok {
					pending++
				}
			}
		}
		if pending > 0 {
			return fmt.Errorf("%d joins x agents not routed yet", pending)
		}
		return nil
	})
	devices := make([]map[string]bool, len(s.real))
	for i, n := range s.real {
		devices[i], _ = uapiPeers(uapiSocket(n))
	}
	for _, j := range joins {
		if j.Err != nil {
			continue
		}
		if at, ok := s.publishedAt(j.Name, j.PublicKey); ok {
			pub = append(pub, at.Sub(j.Announced))
		}
		p, ok := cidrs[j.Name]
		for i, r := range s.routes {
			at, seen := time.Time{}, false
			if ok {
				at, seen = r.firstAdd(p, j.Announced)
			}
			// A node that already left may be gone from the device again.
			if !seen || (devices[i] != nil && !devices[i][hexKey(j.PublicKey)] && s.isAlive(j.Name)) {
				missing++
				continue
			}
			lat = append(lat, at.Sub(j.Announced))
		}
	}
	return lat, pub, missing
}
