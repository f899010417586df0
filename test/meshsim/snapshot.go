package meshsim

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/proc"
)

// operatorPeerController is the operator's controller that writes node
// MeshPeers (operator.meshPeerControllerName): a status-only update of a
// MeshPeer it owns makes it reconcile that MeshPeer's Node, and write
// nothing.
const operatorPeerController = "node-meshpeer"

// Snapshot is every counter Sim compares, at one moment.
type Snapshot struct {
	At     time.Time
	API    map[string]float64 // apiserver_request_total by "VERB resource[/subresource]"
	APIAll float64            // every request
	// OperatorWrites is the operator's write requests (client-go's
	// rest_client_requests_total); Operator its process.
	OperatorWrites float64
	Operator       proc.Stat
	Agents         []AgentSnapshot  // Real's, in order
	Own            map[string]int64 // Sim's own writes (OwnWrites)

	opReconciles float64 // the operator's node-meshpeer controller: reconciles done
	opBusy       float64 // and queued or running
}

// AgentSnapshot is one real agent's counters at a moment.
type AgentSnapshot struct {
	Reconciles   float64            // wgmesh_reconciles_total
	ByTrigger    map[string]float64 // the same by trigger
	WatchEvents  map[string]float64 // wgmesh_watch_events_total by "kind/effect"
	HeapInuse    float64            // go_memstats_heap_inuse_bytes
	GoSys        float64            // go_memstats_sys_bytes: all the Go runtime holds from the OS
	StatusWrites float64            // wgmesh_status_writes_total
	Writes       float64            // every write request (client-go's rest_client_requests_total)
	Status       wgv1.MeshPeerStatus
	Agent        proc.Stat
	WireGuard    proc.Stat // its userspace WireGuard
}

// Delta is what happened between two snapshots (Snapshot.Since). Slices
// hold one value per real agent, in Real's order.
type Delta struct {
	D               time.Duration
	APIAll          float64            // API server requests, every verb
	APIWrites       map[string]float64 // API server writes by "VERB resource[/subresource]"
	APIWriteTotal   float64
	OperatorWrites  float64
	OperatorCPU     time.Duration
	Reconciles      []float64          // any trigger
	WatchReconciles []float64          // woken by a watch event
	ByTrigger       map[string]float64 // reconciles by trigger, all agents
	MeshPeerEvents  []float64          // MeshPeer watch events received
	MeshPeerWakes   []float64          // of them, those that woke a reconcile
	StatusWrites    []float64
	AgentWrites     []float64
	AgentCPU        []time.Duration
	WireGuardCPU    []time.Duration
	Own             map[string]int64 // Sim's own writes
	OwnTotal        int64
	StatusChanges   []string // what changed in each agent's own MeshPeer status
}

// Snap reads every counter now; it fails the test when one cannot be read.
func (s *Sim) Snap(ctx context.Context) Snapshot {
	s.tb.Helper()
	sn, err := s.snap(ctx)
	if err != nil {
		s.tb.Fatalf("snapshot of the simulated mesh's counters: %v", err)
	}
	return sn
}

func (s *Sim) snap(ctx context.Context) (Snapshot, error) {
	sn := Snapshot{At: time.Now(), API: map[string]float64{}, Own: s.OwnWrites()}
	raw, err := s.kc.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return sn, fmt.Errorf("kube-apiserver /metrics: %w", err)
	}
	for _, x := range parseProm(string(raw)) {
		if x.name != "apiserver_request_total" {
			continue
		}
		res := x.labels["resource"]
		if sub := x.labels["subresource"]; sub != "" {
			res += "/" + sub
		}
		sn.API[x.labels["verb"]+" "+res] += x.value
		sn.APIAll += x.value
	}
	if s.op != nil {
		if err := s.snapOperator(&sn); err != nil {
			return sn, err
		}
	}
	for _, n := range s.real {
		a, err := s.snapAgent(ctx, n.Name, fmt.Sprintf("http://%s:%d/metrics", n.UnderlayIP, agentMetricsPort))
		if err != nil {
			return sn, err
		}
		if a.Agent, err = proc.Read(n.AgentPID()); err != nil {
			return sn, fmt.Errorf("agent on %s: %w", n.Name, err)
		}
		if a.WireGuard, err = proc.Read(wireGuardPID(n)); err != nil {
			return sn, fmt.Errorf("userspace WireGuard on %s: %w", n.Name, err)
		}
		sn.Agents = append(sn.Agents, a)
	}
	return sn, nil
}

func (s *Sim) snapOperator(sn *Snapshot) error {
	ss, err := s.scrape(s.opMetrics)
	if err != nil {
		return fmt.Errorf("the operator's metrics: %w", err)
	}
	const who = "the operator"
	if sn.OperatorWrites, err = mustSum(ss, who, "rest_client_requests_total", writes); err != nil {
		return err
	}
	ours := func(l map[string]string) bool { return l["controller"] == operatorPeerController }
	if sn.opReconciles, err = mustSum(ss, who, "controller_runtime_reconcile_total", ours); err != nil {
		return fmt.Errorf("%w{controller=%q}", err, operatorPeerController)
	}
	active, _ := sumProm(ss, "controller_runtime_active_workers", ours)
	queued, _ := sumProm(ss, "workqueue_depth", func(l map[string]string) bool { return l["name"] == operatorPeerController })
	sn.opBusy = active + queued
	if sn.Operator, err = proc.Read(s.op.Process.Pid); err != nil {
		return fmt.Errorf("the operator: %w", err)
	}
	return nil
}

// snapAgent reads a real agent's metrics and MeshPeer status. Every metric
// it reads must be there: a missing one fails, it is not worked around.
func (s *Sim) snapAgent(ctx context.Context, node, url string) (AgentSnapshot, error) {
	var a AgentSnapshot
	ss, err := s.scrape(url)
	if err != nil {
		return a, fmt.Errorf("agent on %s: metrics: %w", node, err)
	}
	who := "agent on " + node
	for _, m := range []struct {
		name string
		v    *float64
		keep func(map[string]string) bool
	}{
		{"wgmesh_reconciles_total", &a.Reconciles, nil},
		{"wgmesh_status_writes_total", &a.StatusWrites, nil},
		{"go_memstats_heap_inuse_bytes", &a.HeapInuse, nil},
		{"go_memstats_sys_bytes", &a.GoSys, nil},
		{"rest_client_requests_total", &a.Writes, writes},
	} {
		if *m.v, err = mustSum(ss, who, m.name, m.keep); err != nil {
			return a, err
		}
	}
	a.ByTrigger = byLabel(ss, "wgmesh_reconciles_total", "trigger")
	if _, ok := a.ByTrigger["watch"]; !ok {
		return a, fmt.Errorf("%s exports no wgmesh_reconciles_total{trigger=\"watch\"}", who)
	}
	a.WatchEvents = map[string]float64{}
	for _, x := range ss {
		if x.name == "wgmesh_watch_events_total" {
			a.WatchEvents[x.labels["kind"]+"/"+x.labels["effect"]] += x.value
		}
	}
	for _, k := range []string{"MeshPeer/reconcile", "MeshPeer/ignored"} {
		if _, ok := a.WatchEvents[k]; !ok {
			return a, fmt.Errorf("%s exports no wgmesh_watch_events_total for %s", who, k)
		}
	}
	mp := &wgv1.MeshPeer{}
	if err := s.cl.Get(ctx, client.ObjectKey{Name: node}, mp); err != nil {
		return a, fmt.Errorf("MeshPeer %s: %w", node, err)
	}
	a.Status = mp.Status
	return a, nil
}

// Since is what happened from a to b.
func (b Snapshot) Since(a Snapshot) Delta {
	d := Delta{D: b.At.Sub(a.At), APIAll: b.APIAll - a.APIAll, APIWrites: map[string]float64{}, Own: map[string]int64{},
		OperatorWrites: b.OperatorWrites - a.OperatorWrites, OperatorCPU: b.Operator.CPU - a.Operator.CPU}
	for k, v := range b.API {
		verb, _, _ := strings.Cut(k, " ")
		if isWriteVerb(verb) && v-a.API[k] > 0 {
			d.APIWrites[k] = v - a.API[k]
			d.APIWriteTotal += v - a.API[k]
		}
	}
	for i := range min(len(a.Agents), len(b.Agents)) {
		x, y := a.Agents[i], b.Agents[i]
		d.Reconciles = append(d.Reconciles, y.Reconciles-x.Reconciles)
		d.WatchReconciles = append(d.WatchReconciles, y.ByTrigger["watch"]-x.ByTrigger["watch"])
		if d.ByTrigger == nil {
			d.ByTrigger = map[string]float64{}
		}
		for k, v := range y.ByTrigger {
			d.ByTrigger[k] += v - x.ByTrigger[k]
		}
		events := y.WatchEvents["MeshPeer/reconcile"] + y.WatchEvents["MeshPeer/ignored"] -
			x.WatchEvents["MeshPeer/reconcile"] - x.WatchEvents["MeshPeer/ignored"]
		d.MeshPeerEvents = append(d.MeshPeerEvents, events)
		d.MeshPeerWakes = append(d.MeshPeerWakes, y.WatchEvents["MeshPeer/reconcile"]-x.WatchEvents["MeshPeer/reconcile"])
		d.StatusWrites = append(d.StatusWrites, y.StatusWrites-x.StatusWrites)
		d.AgentWrites = append(d.AgentWrites, y.Writes-x.Writes)
		d.AgentCPU = append(d.AgentCPU, y.Agent.CPU-x.Agent.CPU)
		d.WireGuardCPU = append(d.WireGuardCPU, y.WireGuard.CPU-x.WireGuard.CPU)
		d.StatusChanges = append(d.StatusChanges, statusChange(x.Status, y.Status))
	}
	for k, v := range b.Own {
		if v-a.Own[k] > 0 {
			d.Own[k] = v - a.Own[k]
			d.OwnTotal += v - a.Own[k]
		}
	}
	return d
}

// statusChange says what differs between two statuses of a MeshPeer ("-":
// nothing).
func statusChange(a, b wgv1.MeshPeerStatus) string {
	var out []string
	if a.Connected != b.Connected {
		out = append(out, fmt.Sprintf("connected %s->%s", a.Connected, b.Connected))
	}
	if strings.Join(a.UnreachablePeers, ",") != strings.Join(b.UnreachablePeers, ",") {
		out = append(out, fmt.Sprintf("unreachablePeers changed (%d->%d names)", len(a.UnreachablePeers), len(b.UnreachablePeers)))
	}
	for _, c := range b.Conditions {
		var old *metav1.Condition
		for i := range a.Conditions {
			if a.Conditions[i].Type == c.Type {
				old = &a.Conditions[i]
			}
		}
		if old == nil || old.Status != c.Status || old.Message != c.Message {
			msg := c.Message
			if len(msg) > 80 {
				msg = msg[:80] + "..."
			}
			out = append(out, fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, msg))
		}
	}
	if a.MTU != b.MTU || a.ObservedGeneration != b.ObservedGeneration {
		out = append(out, "mtu/observedGeneration")
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, "; ")
}

// Rates formats counts by key divided by per, largest first (ties by key):
// "PATCH nodes 2.0, POST events 1.0".
func Rates(m map[string]float64, per float64) string {
	type kv struct {
		k string
		v float64
	}
	xs := make([]kv, 0, len(m))
	for k, v := range m {
		xs = append(xs, kv{k, v / per})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].v > xs[j].v || (xs[i].v == xs[j].v && xs[i].k < xs[j].k) })
	parts := make([]string, 0, len(xs))
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%s %.1f", x.k, x.v))
	}
	return strings.Join(parts, ", ")
}

// WaitStatusQuiet waits until the real agents' first probe rounds are
// over: until each agent's status counts every healthy simulated peer
// unreachable (none ever answers; that takes the probes' hold-down, three
// probe intervals), and then until no agent has written its status for
// quiet. It returns how long that took, and fails the test after timeout.
func (s *Sim) WaitStatusQuiet(ctx context.Context, quiet, timeout time.Duration) time.Duration {
	s.tb.Helper()
	began := time.Now()
	last := s.Snap(ctx)
	lastChange := time.Now()
	s.await(ctx, timeout, time.Second, "the real agents' status to settle", func() error {
		now, err := s.snap(ctx)
		if err != nil {
			return err
		}
		if sum(now.Since(last).StatusWrites) > 0 {
			lastChange = now.At
		}
		last = now
		sims := s.healthy()
		for i, a := range now.Agents {
			if unreachable := int(a.Status.TotalPeers - a.Status.ConnectedPeers); unreachable < sims {
				lastChange = now.At
				return fmt.Errorf("%s counts %d peers unreachable, want at least the %d simulated ones", s.real[i].Name, unreachable, sims)
			}
		}
		if q := time.Since(lastChange); q < quiet {
			return fmt.Errorf("the last status write was %s ago, want %s without", q.Round(time.Second), quiet)
		}
		return nil
	})
	return time.Since(began)
}

// AwaitMeshPeerUpdates is the barrier after n updates of MeshPeers the
// real agents do not own (WriteOtherStatus) made since the snapshot was
// taken: it waits until every real agent has received them (its MeshPeer
// watch events cover them and the agents' own status writes meanwhile) and
// the operator's node-meshpeer controller has reconciled them (as many more
// reconciles done, none queued or running). What they caused can then be
// counted, and nothing more can come of them.
func (s *Sim) AwaitMeshPeerUpdates(ctx context.Context, since Snapshot, n int, timeout time.Duration) {
	s.tb.Helper()
	s.await(ctx, timeout, 250*time.Millisecond, fmt.Sprintf("the real agents and the operator to see %d MeshPeer updates", n), func() error {
		now, err := s.snap(ctx)
		if err != nil {
			return err
		}
		d := now.Since(since)
		want := float64(n) + sum(d.StatusWrites)
		for i, got := range d.MeshPeerEvents {
			if got < want {
				return fmt.Errorf("agent on %s has received %.0f MeshPeer events, want %.0f", s.real[i].Name, got, want)
			}
		}
		if s.op == nil {
			return nil
		}
		if done := now.opReconciles - since.opReconciles; done < float64(n) || now.opBusy > 0 {
			return fmt.Errorf("the operator's %s controller has done %.0f reconciles, want %d, and has %.0f queued or running",
				operatorPeerController, done, n, now.opBusy)
		}
		return nil
	})
}

func sum(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}
