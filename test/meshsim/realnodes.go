package meshsim

import (
	"context"
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/test/cluster"
)

// JoinReal adds a real node running the real agent (with args): a faithful
// join, whose agent answers the others' probes. It returns once the node's
// pod CIDR is routed via wgmesh0 on every one of Real's nodes (WatchRoutes
// first), with how long that took from the start.
func (s *Sim) JoinReal(ctx context.Context, name string, args ...string) (*cluster.Node, time.Duration) {
	tb := s.tb
	tb.Helper()
	began := time.Now()
	n, err := s.c.AddNode(ctx, name, false)
	if err != nil {
		tb.Fatalf("add real node %s: %v", name, err)
	}
	if err := n.StartAgent(ctx, args...); err != nil {
		tb.Fatal(err)
	}
	var p netip.Prefix
	s.WaitFor(ctx, 2*time.Minute, "real node "+name+" routed on every real agent", func() error {
		if !p.IsValid() {
			cidrs, err := s.PodCIDRs(ctx)
			if err != nil {
				return err
			}
			if p = cidrs[name]; !p.IsValid() {
				return fmt.Errorf("%s has no pod CIDR yet", name)
			}
		}
		for _, r := range s.routes {
			if _, ok := r.firstAdd(p, began); !ok {
				return fmt.Errorf("%s has no route to %s yet", r.node, p)
			}
		}
		return nil
	})
	return n, time.Since(began)
}

// FailReal fails a real node as a machine dies: its node runtime (the
// kubelet stand-in, so nothing posts Ready again), its agent and its
// userspace WireGuard are killed, and the Node is marked as the node
// lifecycle controller marks it (Fail).
func (s *Sim) FailReal(ctx context.Context, n *cluster.Node) {
	tb := s.tb
	tb.Helper()
	wg := wireGuardPID(n)
	n.StopRuntime()
	if err := n.KillAgent(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	if wg > 0 {
		_ = syscall.Kill(wg, syscall.SIGKILL)
	}
	if err := s.Fail(ctx, n.Name); err != nil {
		tb.Fatal(err)
	}
}
