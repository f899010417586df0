package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/meshsim"
)

// meshBenchConfig is BenchmarkMesh1000's size, from WGMESH_BENCH_MESH_*.
type meshBenchConfig struct {
	nodes, agents, joins, events, churnRate int
	steady, churn, window, settle           time.Duration
}

func envInt(tb testing.TB, name string, def, lo, hi int) int {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		tb.Fatalf("%s=%q: want an integer in %d..%d", name, v, lo, hi)
	}
	return n
}

func envDur(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		tb.Fatalf("%s=%q: want a duration such as 30s", name, v)
	}
	return d
}

func meshBenchSize(tb testing.TB) meshBenchConfig {
	return meshBenchConfig{
		nodes:     envInt(tb, "WGMESH_BENCH_MESH_NODES", 1000, 10, 3000),
		agents:    envInt(tb, "WGMESH_BENCH_MESH_AGENTS", 3, 1, 10),
		joins:     envInt(tb, "WGMESH_BENCH_MESH_JOINS", 50, 1, 1000),
		events:    envInt(tb, "WGMESH_BENCH_MESH_EVENTS", 5, 1, 100),
		churnRate: envInt(tb, "WGMESH_BENCH_MESH_CHURN_RATE", 10, 1, 100),
		steady:    envDur(tb, "WGMESH_BENCH_MESH_STEADY", 60*time.Second),
		churn:     envDur(tb, "WGMESH_BENCH_MESH_CHURN", 60*time.Second),
		window:    envDur(tb, "WGMESH_BENCH_MESH_WINDOW", 12*time.Second),
		settle:    envDur(tb, "WGMESH_BENCH_MESH_SETTLE", 240*time.Second),
	}
}

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mesh1000: "+format+"\n", args...)
}

// perEvent is the cost of one kind of event, averaged over the events of
// one phase: writes by whom, and the real agents' reconciles.
type perEvent struct {
	n                                   int
	opWrites, statusWrites, agentWrites float64 // per event; agents' per agent
	reconciles                          float64 // per event and agent: woken by a watch event
	allReconciles                       float64 // per event and agent, any trigger
	simWrites                           float64 // the simulation's own
	apiWrites                           float64
	d                                   meshsim.Delta
}

func eventCost(d meshsim.Delta, n int) perEvent {
	pe := perEvent{n: n, d: d}
	if n == 0 || len(d.Reconciles) == 0 {
		return pe
	}
	per := float64(len(d.Reconciles)) * float64(n) // agents x events
	pe.opWrites = d.OperatorWrites / float64(n)
	pe.statusWrites = sumF(d.StatusWrites) / per
	pe.agentWrites = sumF(d.AgentWrites) / per
	pe.reconciles = sumF(d.WatchReconciles) / per
	pe.allReconciles = sumF(d.Reconciles) / per
	pe.simWrites = float64(d.OwnTotal) / float64(n)
	pe.apiWrites = d.APIWriteTotal / float64(n)
	return pe
}

// BenchmarkMesh1000 is the 1,000-node simulation (issue 11): a real API
// server, the real operator, 1,000 simulated nodes (API objects whose
// kubelets and agents the bench plays) and three real agents in network
// namespaces that configure all of them. See doc.go for what it reports and
// the WGMESH_BENCH_MESH_* variables.
func BenchmarkMesh1000(b *testing.B) {
	meshsim.Need(b)
	cfg := meshBenchSize(b)
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Minute)
	defer cancel()
	began := time.Now()
	s := meshsim.Start(ctx, b, meshsim.Options{RealNodes: cfg.agents, LogDir: os.Getenv("WGMESH_BENCH_LOGS")})
	progress("cluster up with %d real nodes (%s)", cfg.agents, time.Since(began).Round(time.Millisecond))

	// 1. The simulated nodes register and announce their keys before the
	// operator starts, so that its time is its own.
	t0 := time.Now()
	if _, err := s.JoinMany(ctx, cfg.nodes, 32); err != nil {
		b.Fatal(err)
	}
	registerDur := time.Since(t0)
	progress("%d simulated Nodes registered and annotated in %s", cfg.nodes, registerDur.Round(time.Millisecond))

	// 2. The operator assigns every pod CIDR and publishes every MeshPeer.
	s.StartOperator(ctx)
	var cidrDur, publishDur time.Duration
	s.WaitFor(ctx, 5*time.Minute, "the operator to publish every MeshPeer", func() error {
		withCIDR, published, sim, err := s.Published(ctx)
		if err != nil {
			return err
		}
		if cidrDur == 0 && withCIDR == sim {
			cidrDur = time.Since(s.OperatorStarted())
		}
		if published == sim && sim == cfg.nodes {
			publishDur = time.Since(s.OperatorStarted())
			return nil
		}
		return fmt.Errorf("%d/%d with a pod CIDR, %d published", withCIDR, sim, published)
	})
	progress("operator: CIDRs in %s, MeshPeers in %s (from its start)", cidrDur.Round(time.Millisecond), publishDur.Round(time.Millisecond))
	s.WaitRealCIDRs(ctx, time.Minute)

	s.WatchPublished(ctx)

	// 3. The real agents start and configure every peer.
	var agentArgs []string
	t0 = time.Now()
	memLimit := os.Getenv("WGMESH_BENCH_MESH_AGENT_GOMEMLIMIT")
	if memLimit != "" {
		os.Setenv("GOMEMLIMIT", memLimit)
	}
	s.StartAgents(ctx, agentArgs...)
	os.Unsetenv("GOMEMLIMIT")
	s.WaitPeers(ctx, 5*time.Minute, cfg.nodes+cfg.agents-1)
	agentsUp := time.Since(t0)
	s.WatchRoutes()
	progress("real agents: %d peers each on wgmesh0 in %s", cfg.nodes+cfg.agents-1, agentsUp.Round(time.Millisecond))

	// 4. Settle: the first probe rounds (hold-down) and status writes pass.
	settled := s.WaitStatusQuiet(ctx, 20*time.Second, cfg.settle)
	progress("settled after %s", settled.Round(time.Second))

	// 5. Steady state.
	rs := s.SampleRSS()
	a := s.Snap(ctx)
	time.Sleep(cfg.steady)
	z := s.Snap(ctx)
	steady := z.Since(a)
	steadyRSS, steadyWGRSS := rs.Stop()
	steadyAnon, steadyFile := rs.Split()
	progress("steady state measured (%s)", steady.D.Round(time.Millisecond))

	// 6. Status-only updates of other MeshPeers (as their agents write).
	alive := s.Alive()
	a = s.Snap(ctx)
	updates := 0
	for k := range 20 {
		if err := s.WriteOtherStatus(ctx, alive[(100+k)%len(alive)], k+1); err != nil {
			b.Fatal(err)
		}
		updates++
		time.Sleep(cfg.window / 20)
	}
	s.AwaitMeshPeerUpdates(ctx, a, updates, cfg.window)
	statusOnly := eventCost(s.Snap(ctx).Since(a), updates)
	progress("status-only updates counted")

	// 7. A real node joins (its agent answers the others' probes, as a
	// joining node's does), then 8. fails: agent, WireGuard and node runtime
	// killed, Ready=Unknown and the unreachable taints as the node lifecycle
	// controller writes them. The bench marks it at once; the lifecycle
	// controller takes its grace period (40-50 s), still shorter than the
	// probes' hold-down (3 rounds of 30 s).
	a = s.Snap(ctx)
	joined, realJoinTook := s.JoinReal(ctx, fmt.Sprintf("wgm-node-%d", cfg.agents+1), agentArgs...)
	time.Sleep(cfg.window)
	realJoin := eventCost(s.Snap(ctx).Since(a), 1)
	progress("real node join counted (routed on every agent after %s)", realJoinTook.Round(time.Millisecond))
	a = s.Snap(ctx)
	s.FailReal(ctx, joined)
	time.Sleep(cfg.window)
	realFail := eventCost(s.Snap(ctx).Since(a), 1)
	progress("real node failure counted")

	// 9. Isolated failures and 10. joins of simulated nodes, one per
	// window. Failed nodes sort after the first 32 (the real agents'
	// unreachable lists hold the first 32 names).
	failed := map[string]bool{}
	a = s.Snap(ctx)
	for k := range cfg.events {
		name := alive[(200+k)%len(alive)]
		if err := s.Fail(ctx, name); err != nil {
			b.Fatal(err)
		}
		failed[name] = true
		time.Sleep(cfg.window)
	}
	failure := eventCost(s.Snap(ctx).Since(a), cfg.events)
	progress("simulated failures counted")
	a = s.Snap(ctx)
	for range cfg.events {
		if j := s.Join(ctx); j.Err != nil {
			b.Fatal(j.Err)
		}
		time.Sleep(cfg.window)
	}
	join := eventCost(s.Snap(ctx).Since(a), cfg.events)
	progress("simulated joins counted")

	// 11. Join-to-programmed latency, joins 500 ms apart.
	var quietJoins []meshsim.Join
	for range cfg.joins {
		j := s.Join(ctx)
		if j.Err != nil {
			b.Fatal(j.Err)
		}
		quietJoins = append(quietJoins, j)
		time.Sleep(500 * time.Millisecond)
	}
	quietLat, quietPub, quietMissing := s.JoinLatencies(ctx, quietJoins, 30*time.Second)
	progress("%d timed joins: p50 %s p99 %s, %d never programmed", cfg.joins, percentile(quietLat, 50), percentile(quietLat, 99), quietMissing)

	// 12. Churn: churnRate joins and churnRate leaves a second. Leaving
	// nodes are the newest of those there before (not in the first 32,
	// not failed).
	var leaving []string
	alive = s.Alive()
	for k := len(alive) - 1; k >= 0 && len(leaving) < int(cfg.churn.Seconds()+1)*cfg.churnRate; k-- {
		if !failed[alive[k]] {
			leaving = append(leaving, alive[k])
		}
	}
	rs = s.SampleRSS()
	a = s.Snap(ctx)
	var (
		wg         sync.WaitGroup
		jmu        sync.Mutex
		churnJoins []meshsim.Join
		churnErrs  []error
		sem        = make(chan struct{}, 64)
	)
	tick := time.NewTicker(time.Second / time.Duration(cfg.churnRate))
	churnEnd := time.Now().Add(cfg.churn)
	events := 0
	for time.Now().Before(churnEnd) && events < len(leaving) {
		<-tick.C
		leave := leaving[events]
		events++
		wg.Add(2)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			j := s.Join(ctx)
			jmu.Lock()
			churnJoins = append(churnJoins, j)
			if j.Err != nil {
				churnErrs = append(churnErrs, j.Err)
			}
			jmu.Unlock()
		}()
		go func() {
			defer wg.Done()
			if err := s.Leave(ctx, leave); err != nil {
				jmu.Lock()
				churnErrs = append(churnErrs, err)
				jmu.Unlock()
			}
		}()
	}
	tick.Stop()
	wg.Wait()
	churnWall := time.Since(a.At)
	churnSnap := s.Snap(ctx)
	churn := churnSnap.Since(a)
	churnRSS, churnWGRSS := rs.Stop()
	churnAnon, churnFile := rs.Split()
	if len(churnErrs) > 0 {
		b.Fatalf("churn: %d errors, first: %v", len(churnErrs), churnErrs[0])
	}
	churnLat, churnPub, churnMissing := s.JoinLatencies(ctx, churnJoins, 90*time.Second)
	t0 = time.Now()
	s.WaitPeers(ctx, 3*time.Minute, len(s.Alive())-len(failed)+cfg.agents-1)
	converge := time.Since(t0)
	after := s.Snap(ctx).Since(churnSnap)
	objBytes, mfBytes, err := s.MeshPeerBytes(ctx)
	if err != nil {
		b.Fatal(err)
	}
	progress("churn: %d joins and %d leaves in %s; converged %s later", events, events, churnWall.Round(time.Millisecond), converge.Round(time.Millisecond))
	b.StopTimer()

	// Report.
	per := func(x float64) float64 { return x / float64(cfg.agents) }
	mibf := func(kib int64) float64 { return float64(kib) / 1024 }
	joinP50, joinP99 := percentile(quietLat, 50), percentile(quietLat, 99)
	churnP50, churnP99 := percentile(churnLat, 50), percentile(churnLat, 99)
	steadyCPU := cpuPercent(time.Duration(per(float64(sumDur(steady.AgentCPU)))), steady.D)
	churnCPU := cpuPercent(time.Duration(per(float64(sumDur(churn.AgentCPU)))), churn.D)
	b.ReportMetric(publishDur.Seconds(), "publish-s")
	b.ReportMetric(ms(joinP50), "join-p50-ms")
	b.ReportMetric(ms(joinP99), "join-p99-ms")
	b.ReportMetric(ms(churnP99), "churn-join-p99-ms")
	b.ReportMetric(mibf(steadyRSS), "agent-rss-MiB")
	b.ReportMetric(mibf(churnRSS), "agent-rss-churn-MiB")
	b.ReportMetric(steadyCPU, "agent-cpu-%")
	b.ReportMetric(churnCPU, "agent-cpu-churn-%")
	b.ReportMetric(steady.APIAll/steady.D.Seconds(), "apiserver-req/s")
	b.ReportMetric(churn.APIAll/churn.D.Seconds(), "apiserver-req/s-churn")
	b.ReportMetric(realJoin.opWrites, "op-writes/join")
	b.ReportMetric(realJoin.statusWrites, "agent-status-writes/join")
	b.ReportMetric(realJoin.reconciles, "agent-reconciles/join")
	b.ReportMetric(realFail.opWrites, "op-writes/failure")
	b.ReportMetric(realFail.statusWrites, "agent-status-writes/failure")
	b.ReportMetric(realFail.reconciles, "agent-reconciles/failure")
	b.ReportMetric(statusOnly.reconciles, "agent-reconciles/status-update")

	ok := func(met bool) string {
		if met {
			return "met"
		}
		return "MISSED"
	}
	w := os.Stdout
	fmt.Fprintf(w, "\nwgmesh %d-node simulation: %d simulated nodes (API objects; the bench writes their agents' annotations) + %d real agents\n", cfg.nodes+cfg.agents, cfg.nodes, cfg.agents)
	fmt.Fprintf(w, "(userspace WireGuard, network namespaces), real etcd, kube-apiserver and wgmesh-operator; simulated endpoints lead nowhere,\n")
	fmt.Fprintf(w, "so every simulated peer is configured but unreachable. Reconciles from wgmesh_reconciles_total; status writes from wgmesh_status_writes_total.\n\n")
	row := func(what, measured, target string) { fmt.Fprintf(w, "  %-58s %-30s %s\n", what, measured, target) }
	row("what", "measured", "target")
	row(fmt.Sprintf("bench: register + annotate %d Nodes (32 writers)", cfg.nodes), registerDur.Round(time.Millisecond).String(), "")
	row("operator: every pod CIDR assigned (from process start)", cidrDur.Round(time.Millisecond).String(), "")
	row("operator: every MeshPeer published (from process start)", publishDur.Round(time.Millisecond).String(), "<= 10s: "+ok(publishDur <= 10*time.Second))
	row(fmt.Sprintf("real agents: start to %d peers on wgmesh0", cfg.nodes+cfg.agents-1), agentsUp.Round(time.Millisecond).String(), "")
	row(fmt.Sprintf("join to programmed, p50/p99 (%d joins 0.5s apart, x%d agents)", len(quietJoins), cfg.agents),
		fmt.Sprintf("%s / %s (%d missing)", fmtMS(joinP50), fmtMS(joinP99), quietMissing), "p99 <= 1s: "+ok(joinP99 <= time.Second && quietMissing == 0))
	row("  of which join to MeshPeer published (operator), p50/p99", fmt.Sprintf("%s / %s", fmtMS(percentile(quietPub, 50)), fmtMS(percentile(quietPub, 99))), "")
	row(fmt.Sprintf("join to programmed during churn, p50/p99 (%d joins)", len(churnJoins)),
		fmt.Sprintf("%s / %s (%d missing)", fmtMS(churnP50), fmtMS(churnP99), churnMissing), "p99 <= 1s: "+ok(churnP99 <= time.Second && churnMissing == 0))
	row("  of which join to MeshPeer published (operator), p50/p99", fmt.Sprintf("%s / %s", fmtMS(percentile(churnPub, 50)), fmtMS(percentile(churnPub, 99))), "")
	row("agent RSS, steady (largest agent)", fmt.Sprintf("%.1f MiB", mibf(steadyRSS)), "<= 64 MiB: "+ok(mibf(steadyRSS) <= 64))
	row("agent RSS, churn (largest agent, peak)", fmt.Sprintf("%.1f MiB", mibf(churnRSS)), "<= 64 MiB: "+ok(mibf(churnRSS) <= 64))
	row("  of which anonymous (heap, stacks) / the binary's pages, steady", fmt.Sprintf("%.1f / %.1f MiB", mibf(steadyAnon), mibf(steadyFile)), "")
	row("  of which anonymous / the binary's pages, churn", fmt.Sprintf("%.1f / %.1f MiB", mibf(churnAnon), mibf(churnFile)), "")
	if memLimit != "" {
		row("  (agents ran with GOMEMLIMIT="+memLimit+")", "", "")
	}
	row("MeshPeers as JSON (what each agent caches), of which managedFields", fmt.Sprintf("%.1f MiB, %.1f MiB", float64(objBytes)/(1<<20), float64(mfBytes)/(1<<20)), "")
	row("agent CPU, steady / churn (mean per agent)", fmt.Sprintf("%.1f%% / %.1f%% of a core", steadyCPU, churnCPU), "")
	row("userspace WireGuard RSS, steady / churn (largest)", fmt.Sprintf("%.1f / %.1f MiB", mibf(steadyWGRSS), mibf(churnWGRSS)), "")
	row("userspace WireGuard CPU, steady / churn (mean)", fmt.Sprintf("%.1f%% / %.1f%% of a core",
		cpuPercent(time.Duration(per(float64(sumDur(steady.WireGuardCPU)))), steady.D), cpuPercent(time.Duration(per(float64(sumDur(churn.WireGuardCPU)))), churn.D)), "")
	row("operator CPU, steady / churn", fmt.Sprintf("%.1f%% / %.1f%% of a core", cpuPercent(steady.OperatorCPU, steady.D), cpuPercent(churn.OperatorCPU, churn.D)), "")
	row("API server requests/s, steady / churn (all verbs)", fmt.Sprintf("%.1f / %.1f", steady.APIAll/steady.D.Seconds(), churn.APIAll/churn.D.Seconds()), "")
	row("API server writes/s, steady / churn", fmt.Sprintf("%.2f / %.1f", steady.APIWriteTotal/steady.D.Seconds(), churn.APIWriteTotal/churn.D.Seconds()), "")
	row("  of which the bench's own (simulated kubelets/agents)", fmt.Sprintf("%.2f / %.1f", float64(steady.OwnTotal)/steady.D.Seconds(), float64(churn.OwnTotal)/churn.D.Seconds()), "")
	row("  of which the operator's", fmt.Sprintf("%.2f / %.1f", steady.OperatorWrites/steady.D.Seconds(), churn.OperatorWrites/churn.D.Seconds()), "")
	row("  of which the real agents' (all agents)", fmt.Sprintf("%.2f / %.1f", sumF(steady.AgentWrites)/steady.D.Seconds(), sumF(churn.AgentWrites)/churn.D.Seconds()), "")
	row("agent reconciles/s, steady (per agent, any trigger)", fmt.Sprintf("%.2f", per(sumF(steady.Reconciles))/steady.D.Seconds()), "")
	row("  by trigger (per agent)", triggerLine(steady.ByTrigger, float64(cfg.agents)*steady.D.Seconds()), "")
	row("agent reconciles/s, churn (per agent, any trigger)", fmt.Sprintf("%.2f", per(sumF(churn.Reconciles))/churn.D.Seconds()), "")
	row("  by trigger (per agent)", triggerLine(churn.ByTrigger, float64(cfg.agents)*churn.D.Seconds()), "")
	row("agent Go heap in use, end of steady / end of churn (largest)", fmt.Sprintf("%.1f / %.1f MiB", maxHeap(z)/(1<<20), maxHeap(churnSnap)/(1<<20)), "")
	row("agent Go runtime memory from the OS (go_memstats_sys_bytes)", fmt.Sprintf("%.1f / %.1f MiB", maxSys(z)/(1<<20), maxSys(churnSnap)/(1<<20)), "")
	row("agent status writes/s, steady (per agent)", fmt.Sprintf("%.3f", per(sumF(steady.StatusWrites))/steady.D.Seconds()), "")
	fmt.Fprintln(w)
	ev := func(name string, e perEvent) {
		row(fmt.Sprintf("per %s (%d, %s windows):", name, e.n, cfg.window), "", "")
		row("  operator writes", fmt.Sprintf("%.2f", e.opWrites), "O(1)")
		row("  status writes by each real agent", fmt.Sprintf("%.2f", e.statusWrites), "O(1), ~0")
		row("  all writes by each real agent", fmt.Sprintf("%.2f", e.agentWrites), "")
		row("  reconciles by each real agent woken by a watch event", fmt.Sprintf("%.2f", e.reconciles), "O(1)")
		row("  reconciles by each real agent, any trigger (probes, resync)", fmt.Sprintf("%.2f", e.allReconciles), "")
		row("  the bench's own writes (simulated kubelet/agent/lifecycle)", fmt.Sprintf("%.2f", e.simWrites), "")
		row("  API server writes, all writers", fmt.Sprintf("%.2f", e.apiWrites), "")
		fmt.Fprintf(w, "      by resource: %s\n", meshsim.Rates(e.d.APIWrites, float64(e.n)))
		if e.n <= 20 {
			for i, c := range e.d.StatusChanges {
				fmt.Fprintf(w, "      %s's status over the windows: %s\n", s.Real()[i].Name, c)
			}
		}
	}
	ev("status-only update of another MeshPeer", statusOnly)
	ev(fmt.Sprintf("real node join (%s; routed on every agent after %s)", joined.Name, realJoinTook.Round(time.Millisecond)), realJoin)
	ev("real node failure (killed; Ready=Unknown + unreachable taints)", realFail)
	fmt.Fprintf(w, "  simulated nodes never answer probes: each one joining becomes an unreachable peer after the hold-down, each one failing\n")
	fmt.Fprintf(w, "  leaves the unreachable count, both significant status changes a real node's join or failure is not:\n")
	ev("simulated node failure (Ready=Unknown + unreachable taints)", failure)
	ev("simulated node join", join)
	churnPer := eventCost(churn, events)
	ev("churn second's join+leave pair", churnPer)
	fmt.Fprintf(w, "\n  after churn: mesh converged in %s; the following %s saw %.0f agent status writes, %.0f operator writes\n\n",
		converge.Round(time.Millisecond), after.D.Round(time.Second), sumF(after.StatusWrites), after.OperatorWrites)
}

func triggerLine(m map[string]float64, per float64) string {
	if m == nil {
		return "(no trigger label)"
	}
	return meshsim.Rates(m, per)
}

func maxHeap(sn meshsim.Snapshot) float64 {
	var m float64
	for _, a := range sn.Agents {
		m = max(m, a.HeapInuse)
	}
	return m
}

func maxSys(sn meshsim.Snapshot) float64 {
	var m float64
	for _, a := range sn.Agents {
		m = max(m, a.GoSys)
	}
	return m
}

func sumF(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

// cpuPercent is CPU time over wall time, in percent of one core.
func cpuPercent(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(cpu) / float64(wall)
}

func sumDur(ds []time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		s += d
	}
	return s
}
