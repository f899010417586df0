package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/meshsim"
	"github.com/wgmesh/wgmesh/test/wait"
)

// Bounds of TestMeshScale: small constants, far below the node count, so
// that anything proportional to it fails.
const (
	scaleSimNodes        = 200
	scaleRealNodes       = 3
	scaleWindow          = 12 * time.Second // longer than the agents' --status-min-interval (10s)
	maxOpWritesPerJoin   = 10               // pod CIDR, MeshPeer (its create is often followed by an update), their Events: 4-7 seen
	maxOpWritesPerFail   = 3                // the NodeNotReady condition and its Event
	maxStatusWritesAgent = 1                // per agent in a window: one membership write may fall in it
)

// TestMeshScale is the count-based (not timed) check of issue 11's "no
// fan-out storms", on the simulated mesh of BenchmarkMesh1000 at 200
// simulated nodes and three real agents: once the mesh has settled,
//   - a status-only update of other MeshPeers (as their agents write) wakes
//     no reconcile of a real agent and makes the operator write nothing,
//     counted once all of them have seen every update;
//   - simulated node joins cause a small constant number of operator
//     writes each, and every joined peer is programmed;
//   - a real node joining (a fourth agent, which answers probes) costs a
//     constant number of operator writes and at most one status write per
//     real agent (membership changes are delayed and coalesced);
//   - that node failing (agent and WireGuard killed, Ready=Unknown as the
//     node lifecycle controller writes it) makes the operator mark its
//     MeshPeer NodeNotReady with a constant number of writes, and the other
//     agents write their status at most once.
func TestMeshScale(t *testing.T) {
	meshsim.Need(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute) // with up to 20 min waiting for another local cluster
	defer cancel()
	began := time.Now()
	s := meshsim.Start(ctx, t, meshsim.Options{RealNodes: scaleRealNodes, Log: testLog{t}})
	real := s.Real()
	if _, err := s.JoinMany(ctx, scaleSimNodes, 16); err != nil {
		t.Fatal(err)
	}
	s.StartOperator(ctx)
	s.WaitFor(ctx, 2*time.Minute, "every simulated MeshPeer", func() error {
		_, published, sim, err := s.Published(ctx)
		if err != nil {
			return err
		}
		if published != sim || sim != scaleSimNodes {
			return fmt.Errorf("%d of %d published, want %d", published, sim, scaleSimNodes)
		}
		return nil
	})
	s.WaitRealCIDRs(ctx, time.Minute)
	args := []string{"--probe-interval=2s"} // the hold-down passes within the settling time
	s.StartAgents(ctx, args...)
	s.WaitPeers(ctx, 2*time.Minute, scaleSimNodes+scaleRealNodes-1)
	s.WatchRoutes()
	quiet := s.WaitStatusQuiet(ctx, scaleWindow, 90*time.Second)
	t.Logf("mesh of %d simulated + %d real nodes settled in %s (status quiet after %s)", scaleSimNodes, scaleRealNodes,
		time.Since(began).Round(time.Second), quiet.Round(time.Second))

	// Status-only updates of other nodes' MeshPeers: counted once every
	// agent and the operator has seen all of them (a barrier, not a sleep).
	const updates = 12
	alive := s.Alive()
	a := s.Snap(ctx)
	for k := range updates {
		if err := s.WriteOtherStatus(ctx, alive[50+k], k+1); err != nil {
			t.Fatal(err)
		}
	}
	s.AwaitMeshPeerUpdates(ctx, a, updates, 30*time.Second)
	status := s.Snap(ctx).Since(a)
	t.Logf("%d status-only MeshPeer updates in %s: MeshPeer events per agent %v, of which woke a reconcile %v; reconciles per agent %v (by trigger, all agents: %v), operator writes %.0f, API writes: %s",
		updates, status.D.Round(time.Millisecond), status.MeshPeerEvents, status.MeshPeerWakes, status.Reconciles, status.ByTrigger, status.OperatorWrites, meshsim.Rates(status.APIWrites, 1))
	for i, w := range status.MeshPeerWakes {
		if w > 0 {
			t.Errorf("agent on %s: %.0f of %d status-only updates of other MeshPeers woke a reconcile, want 0 (reconciles by trigger, all agents: %v)",
				real[i].Name, w, updates, status.ByTrigger)
		}
	}
	if status.OperatorWrites > 0 {
		t.Errorf("operator: %.0f writes for status-only updates of MeshPeers, want 0", status.OperatorWrites)
	}

	// A real node joins (its agent answers probes): the others' status may
	// change only in its counts, which waits (--status-membership-delay).
	// JoinReal returns once every agent has routed it (the barrier); the
	// window then counts what follows.
	a = s.Snap(ctx)
	joined, took := s.JoinReal(ctx, "wgm-node-4", args...)
	time.Sleep(scaleWindow)
	rj := s.Snap(ctx).Since(a)
	t.Logf("real node join (routed everywhere in %s, %s window): operator writes %.0f, agents' status writes %v, agents' writes %v, reconciles %v; API writes: %s",
		took.Round(time.Millisecond), rj.D.Round(time.Millisecond), rj.OperatorWrites, rj.StatusWrites, rj.AgentWrites, rj.Reconciles, meshsim.Rates(rj.APIWrites, 1))
	if rj.OperatorWrites > maxOpWritesPerJoin {
		t.Errorf("operator: %.0f writes for one node join, want at most %d", rj.OperatorWrites, maxOpWritesPerJoin)
	}
	for i, w := range rj.StatusWrites {
		if w > maxStatusWritesAgent {
			t.Errorf("agent on %s: %.0f status writes for one node join, want at most %d (membership-only changes are delayed and coalesced; every agent writing on every join is O(N) writes per join)",
				real[i].Name, w, maxStatusWritesAgent)
		}
	}

	// That node fails: data plane gone, Ready=Unknown. The operator's
	// NodeNotReady condition is the barrier; the window counts what follows.
	a = s.Snap(ctx)
	s.FailReal(ctx, joined)
	markErr := wait.Poll(ctx, 10*time.Second, func() error {
		mp := &wgv1.MeshPeer{}
		if err := s.Client().Get(ctx, client.ObjectKey{Name: joined.Name}, mp); err != nil {
			return err
		}
		if !apimeta.IsStatusConditionTrue(mp.Status.Conditions, "NodeNotReady") {
			return fmt.Errorf("MeshPeer %s has no NodeNotReady=True condition", joined.Name)
		}
		return nil
	})
	time.Sleep(time.Until(a.At.Add(scaleWindow)))
	fail := s.Snap(ctx).Since(a)
	t.Logf("real node failure (%s window): NodeNotReady set %v, operator writes %.0f, agents' status writes %v, agents' writes %v, reconciles %v, simulation's writes %d; API writes: %s",
		fail.D.Round(time.Millisecond), markErr == nil, fail.OperatorWrites, fail.StatusWrites, fail.AgentWrites, fail.Reconciles, fail.OwnTotal, meshsim.Rates(fail.APIWrites, 1))
	if markErr != nil {
		t.Errorf("operator: Node %s went Ready=Unknown: %v", joined.Name, markErr)
	}
	if fail.OperatorWrites > maxOpWritesPerFail {
		t.Errorf("operator: %.0f writes for one node failure, want at most %d", fail.OperatorWrites, maxOpWritesPerFail)
	}
	for i, w := range fail.StatusWrites {
		if w > maxStatusWritesAgent {
			t.Errorf("agent on %s: %.0f status writes for one node failure, want at most %d", real[i].Name, w, maxStatusWritesAgent)
		}
	}

	// Simulated node joins (last: each one's membership change and, after
	// the hold-down, its unreachability are status changes of their own,
	// since a simulated peer never answers probes): the operator's writes,
	// the reconciles they wake, and the peers programmed (JoinLatencies is
	// the barrier: every join routed on every agent).
	a = s.Snap(ctx)
	var joins []meshsim.Join
	for range 3 {
		j := s.Join(ctx)
		if j.Err != nil {
			t.Fatal(j.Err)
		}
		joins = append(joins, j)
		time.Sleep(time.Second) // paced: one join at a time
	}
	lat, _, missing := s.JoinLatencies(ctx, joins, 20*time.Second)
	if missing > 0 {
		t.Errorf("%d of %d joins x agents never programmed on wgmesh0", missing, len(joins)*scaleRealNodes)
	}
	time.Sleep(time.Until(a.At.Add(scaleWindow)))
	join := s.Snap(ctx).Since(a)
	t.Logf("3 simulated joins (%s window): operator writes %.0f, agents' status writes %v, agents' writes %v, reconciles %v, simulation's writes %d, latencies %v; API writes: %s",
		join.D.Round(time.Millisecond), join.OperatorWrites, join.StatusWrites, join.AgentWrites, join.Reconciles, join.OwnTotal, lat, meshsim.Rates(join.APIWrites, 1))
	if join.OperatorWrites > 3*maxOpWritesPerJoin {
		t.Errorf("operator: %.0f writes for 3 node joins, want at most %d (a constant per join, not per node)", join.OperatorWrites, 3*maxOpWritesPerJoin)
	}
	// One reconcile per agent per join, woken by the new MeshPeer: not one
	// more for the Node (which appears first and changes nothing), nor for
	// a MeshPeer published empty and updated when its pod CIDR comes.
	for i, w := range join.WatchReconciles {
		if w > 3 {
			t.Errorf("agent on %s: %.0f reconciles woken by watch events for 3 node joins, want at most 3 (all agents by trigger: %v)",
				real[i].Name, w, join.ByTrigger)
		}
	}
}

// testLog writes the cluster's progress lines to the test's log.
type testLog struct{ tb testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
