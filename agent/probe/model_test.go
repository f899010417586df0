package probe

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/wgmesh/wgmesh/test/wait"
)

func TestAttempts(t *testing.T) {
	var s State
	if n := s.Attempts(3); n != 3 {
		t.Errorf("unprobed peer: %d attempts, want 3", n)
	}
	now := time.Now()
	s = Record(s, true, time.Millisecond, now, now)
	if n := s.Attempts(3); n != 3 {
		t.Errorf("answering peer: %d attempts, want 3 (an idle session's first echo waits for a handshake)", n)
	}
	s = Record(s, false, 0, now, now)
	if n := s.Attempts(3); n != 1 {
		t.Errorf("failing peer: %d attempts, want 1", n)
	}
	s = Record(s, true, time.Millisecond, now, now)
	if n := s.Attempts(3); n != 3 {
		t.Errorf("recovered peer: %d attempts, want 3", n)
	}
}

func TestRecordAndHoldDown(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC)
	hold := 90 * time.Second
	var s State
	if s.Unreachable(t0, hold) || s.Probed {
		t.Fatal("a peer never probed is not unreachable")
	}
	s = Record(s, true, 3*time.Millisecond, t0, t0.Add(3*time.Millisecond))
	if !s.Reachable || s.RTT != 3*time.Millisecond || !s.FailingSince.IsZero() {
		t.Fatalf("answered: %+v", s)
	}
	// Failures: the run starts at the first failed probe's start.
	s = Record(s, false, 0, t0.Add(30*time.Second), t0.Add(33*time.Second))
	s = Record(s, false, 0, t0.Add(60*time.Second), t0.Add(63*time.Second))
	if s.Reachable || !s.FailingSince.Equal(t0.Add(30*time.Second)) {
		t.Fatalf("after two losses: %+v", s)
	}
	if s.Unreachable(t0.Add(119*time.Second), hold) {
		t.Fatal("unreachable before the hold-down has passed")
	}
	if !s.Unreachable(t0.Add(120*time.Second), hold) {
		t.Fatal("not unreachable once the hold-down has passed")
	}
	// One answer ends the run at once.
	s = Record(s, true, time.Millisecond, t0.Add(121*time.Second), t0.Add(121*time.Second))
	if s.Unreachable(t0.Add(500*time.Second), hold) || s.RTT != time.Millisecond {
		t.Fatalf("answer did not clear the failure run: %+v", s)
	}
}

func TestSchedule(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	for i := 0; i < 1000; i++ {
		d := nextDue(now, 30*time.Second, r).Sub(now)
		if d < 27*time.Second || d > 33*time.Second {
			t.Fatalf("next probe in %s, want 30s ±10%%", d)
		}
		// 1000 peers: the first round is spread over 10 s, never a burst.
		f := firstDue(now, 30*time.Second, 1000, r).Sub(now)
		if f < 0 || f >= 10*time.Second {
			t.Fatalf("first probe of 1000 peers in %s, want within 10s", f)
		}
		// 3 peers: within a second; a 500 ms interval caps it.
		if f := firstDue(now, 30*time.Second, 3, r).Sub(now); f >= time.Second {
			t.Fatalf("first probe of 3 peers in %s", f)
		}
		if f := firstDue(now, 500*time.Millisecond, 1000, r).Sub(now); f >= 500*time.Millisecond {
			t.Fatalf("first probe in %s with a 500ms interval", f)
		}
	}
}

// fakePinger answers for the addresses in up (a pure unit test of the
// scheduler; the real ICMP path is tested in icmp_netns_test.go).
type fakePinger struct {
	mu    sync.Mutex
	up    map[netip.Addr]bool
	count map[netip.Addr]int
}

func (f *fakePinger) Ping(ctx context.Context, t Target, timeout time.Duration) (time.Duration, error) {
	f.mu.Lock()
	f.count[t.Addr]++
	up := f.up[t.Addr]
	f.mu.Unlock()
	if up {
		return 2 * time.Millisecond, nil
	}
	select {
	case <-time.After(timeout):
	case <-ctx.Done():
	}
	return 0, errors.New("lost")
}

func (f *fakePinger) set(a netip.Addr, up bool) {
	f.mu.Lock()
	f.up[a] = up
	f.mu.Unlock()
}

func (f *fakePinger) pings(a netip.Addr) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.count[a]
}

func TestProber(t *testing.T) {
	a, b := netip.MustParseAddr("198.19.1.1"), netip.MustParseAddr("198.19.2.1")
	fp := &fakePinger{up: map[netip.Addr]bool{a: true}, count: map[netip.Addr]int{}}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	recoveries := make(chan struct{}, 100)
	p := New(Options{Interval: 200 * time.Millisecond, Timeout: 20 * time.Millisecond, Pinger: fp, Metrics: m, Log: logr.Discard(),
		OnRecovery: func() { recoveries <- struct{}{} }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	p.SetTargets([]Target{{Peer: "node-a", Addr: a}, {Peer: "node-b", Addr: b}})
	wait.For(t, 5*time.Second, "both peers probed", wait.True(func() bool { s := p.States(); return s["node-a"].Probed && s["node-b"].Probed }))
	s := p.States()
	if !s["node-a"].Reachable || s["node-b"].Reachable {
		t.Fatalf("states: %+v", s)
	}
	// A lost probe is three echoes.
	if n := fp.pings(b); n < 3 {
		t.Fatalf("node-b pinged %d times for one lost probe, want 3 attempts", n)
	}
	if s["node-a"].RTT != 2*time.Millisecond {
		t.Fatalf("node-a RTT %v, want the pinger's 2ms", s["node-a"].RTT)
	}
	// Answers' round trips go into one histogram, not a series per peer:
	// node-a's 2 ms, all between the 1 ms and 2.5 ms bounds.
	var h dto.Metric
	if err := m.RTT.Write(&h); err != nil {
		t.Fatal(err)
	}
	answers := h.GetHistogram().GetSampleCount()
	for _, b := range h.GetHistogram().GetBucket() {
		if want := map[bool]uint64{true: answers, false: 0}[b.GetUpperBound() >= 0.002]; answers == 0 || b.GetCumulativeCount() != want {
			t.Fatalf("wgmesh_peer_probe_rtt_seconds: %d answers, bucket le=%v has %d, want %d", answers, b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	// While failing, a probe is one echo: three more lost probes are about
	// three echoes (one may be in flight at either end), not nine.
	before, lost := fp.pings(b), testutil.ToFloat64(m.Probes.WithLabelValues("lost"))
	wait.For(t, 5*time.Second, "three more lost probes counted", wait.True(func() bool { return testutil.ToFloat64(m.Probes.WithLabelValues("lost")) >= lost+3 }))
	if n := fp.pings(b) - before; n > 4 {
		t.Fatalf("node-b pinged %d times in 3 lost probes, want one echo each while failing", n)
	}
	// First results (node-a answered, node-b lost) wake nobody.
	if len(recoveries) != 0 {
		t.Fatalf("OnRecovery called %d times before any recovery", len(recoveries))
	}
	// Recovery is seen at the next probe; Kick makes it now, and it is the
	// one result reported at once.
	fp.set(b, true)
	p.Kick()
	wait.For(t, 5*time.Second, "node-b reachable", wait.True(func() bool { return p.States()["node-b"].Reachable }))
	wait.For(t, 5*time.Second, "one recovery reported", wait.True(func() bool { return len(recoveries) == 1 }))
	// Periodic: more probes follow on the interval.
	n := fp.pings(a)
	wait.For(t, 5*time.Second, "two more pings", wait.True(func() bool { return fp.pings(a) >= n+2 }))
	// A removed peer loses its state and its series.
	p.SetTargets([]Target{{Peer: "node-a", Addr: a}})
	if _, ok := p.States()["node-b"]; ok {
		t.Fatal("node-b still has a state after removal")
	}
	if testutil.ToFloat64(m.Probes.WithLabelValues("lost")) < 1 || testutil.ToFloat64(m.Probes.WithLabelValues("answered")) < 3 {
		t.Fatal("wgmesh_peer_probes_total not counted")
	}
}
