package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/wait"
)

var agentReasons = []string{"watch", "netlink", "probe", "retry", "start", "other", "resync"}

func TestReasons(t *testing.T) {
	r := New(Options{Reasons: agentReasons})
	r.Wake("resync")
	r.Wake("probe")
	r.Wake("watch")
	r.Wake("probe")
	<-r.c
	if got := r.take(); got != "watch" {
		t.Fatalf("coalesced wake-up counted as %q, want the most specific, watch", got)
	}
	select {
	case <-r.c:
		t.Fatal("four wake-ups left more than one run")
	default:
	}
	if got := r.take(); got != ReasonPeriod {
		t.Fatalf("a run with no recorded reason (the period) is %q, want %s", got, ReasonPeriod)
	}
	r.Wake("not-listed")
	if got := r.take(); got != ReasonPeriod {
		t.Fatalf("an unlisted reason is %q, want %s", got, ReasonPeriod)
	}
}

// TestDrain: a wake-up that arrived while the runner rested is covered by
// the run that follows (drain, then take): no second run for it, and its
// reason counts.
func TestDrain(t *testing.T) {
	r := New(Options{Reasons: agentReasons})
	r.Wake("start")
	<-r.c
	r.Wake("watch") // during the rest
	r.drain()
	if got := r.take(); got != "watch" {
		t.Fatalf("reason after the rest = %q, want watch", got)
	}
	select {
	case <-r.c:
		t.Fatal("a wake-up covered by the run was left for another")
	default:
	}
	r.drain() // nothing pending: no block
}

// runs records the runs of a Runner and lets the test answer each.
type runs struct {
	mu     sync.Mutex
	causes []Cause
	at     []time.Time
	c      chan Cause
}

func newRuns() *runs { return &runs{c: make(chan Cause, 100)} }

func (rs *runs) fn(result func(n int) error) func(context.Context, Cause) error {
	return func(_ context.Context, c Cause) error {
		rs.mu.Lock()
		rs.causes = append(rs.causes, c)
		rs.at = append(rs.at, time.Now())
		n := len(rs.causes)
		rs.mu.Unlock()
		err := result(n)
		rs.c <- c
		return err
	}
}

func (rs *runs) next(t *testing.T) Cause {
	t.Helper()
	select {
	case c := <-rs.c:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no run")
		return Cause{}
	}
}

func (rs *runs) times() []time.Time {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Clone(rs.at)
}

func start(t *testing.T, r *Runner, fn func(context.Context, Cause) error) chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, fn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	})
	return done
}

func TestPeriod(t *testing.T) {
	rs := newRuns()
	r := New(Options{Period: 20 * time.Millisecond, Reasons: agentReasons})
	start(t, r, rs.fn(func(int) error { return nil }))
	if c := rs.next(t); c != (Cause{Reason: ReasonPeriod, Periodic: true}) {
		t.Fatalf("run woken by the period: %+v", c)
	}
	r.Wake("watch")
	for {
		// A tick may come first; the wake-up's run follows.
		if c := rs.next(t); c.Reason == "watch" {
			if c.Periodic {
				t.Logf("the wake-up's run was also the period's")
			}
			break
		}
	}
}

// TestRetryWhileWoken (the agent): a wake-up during a failure's back-off
// runs at once (here the back-off is an hour: nothing else could run it).
func TestRetryWhileWoken(t *testing.T) {
	rs := newRuns()
	r := New(Options{Reasons: agentReasons, MinBackoff: time.Hour})
	start(t, r, rs.fn(func(n int) error {
		if n == 1 {
			return errors.New("apply failed")
		}
		return nil
	}))
	r.Wake("start")
	rs.next(t)
	r.Wake("watch")
	if c := rs.next(t); c.Reason != "watch" {
		t.Fatalf("the wake-up during the back-off ran as %+v", c)
	}
}

// TestBackoff (the agent): a failure is retried after the back-off, which
// doubles up to the maximum and starts over after a success.
func TestBackoff(t *testing.T) {
	rs := newRuns()
	var mu sync.Mutex
	var backoffs []time.Duration
	r := New(Options{Reasons: agentReasons, MinBackoff: 100 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnFailure: func(err error, after time.Duration) {
			mu.Lock()
			backoffs = append(backoffs, after)
			mu.Unlock()
		}})
	// Runs 1 to 3 fail, 4 works, 5 fails again.
	start(t, r, rs.fn(func(n int) error {
		if n == 4 || n > 5 {
			return nil
		}
		return errors.New("apply failed")
	}))
	r.Wake("start")
	rs.next(t)
	for run := 2; run <= 4; run++ {
		if c := rs.next(t); c.Reason != ReasonRetry {
			t.Fatalf("run %d: %+v, want the retry", run, c)
		}
	}
	r.Wake("watch")
	rs.next(t)
	// The fifth run's failure is reported after it returns.
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond}
	wait.For(t, 10*time.Second, "the fifth run's back-off", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(backoffs) < len(want) || !slices.Equal(backoffs[:len(want)], want) {
			return fmt.Errorf("back-offs %v, want %v first", backoffs, want)
		}
		return nil
	})
}

// TestHoldOnFailure (the service NAT): after a failure nothing runs until
// the back-off has passed, however often the runner is woken; then one run.
func TestHoldOnFailure(t *testing.T) {
	rs := newRuns()
	const backoff = 300 * time.Millisecond
	r := New(Options{HoldOnFailure: true, MinBackoff: backoff})
	start(t, r, rs.fn(func(n int) error {
		if n == 1 {
			return errors.New("kernel busy")
		}
		return nil
	}))
	r.Wake("")
	rs.next(t)
	for range 5 {
		r.Wake("")
	}
	rs.next(t)
	at := rs.times()
	if d := at[1].Sub(at[0]); d < backoff {
		t.Errorf("ran again %s after a failure, within the back-off %s", d, backoff)
	}
}

// TestPace (the agent): after a run the runner rests as long as it took;
// the wake-ups meanwhile are one run.
func TestPace(t *testing.T) {
	rs := newRuns()
	const took = 200 * time.Millisecond
	r := New(Options{Pace: true, Reasons: agentReasons})
	start(t, r, rs.fn(func(n int) error {
		if n == 1 {
			time.Sleep(took)
		}
		return nil
	}))
	r.Wake("start")
	rs.next(t)
	ended := time.Now()
	r.Wake("watch")
	r.Wake("probe")
	if c := rs.next(t); c.Reason != "watch" {
		t.Fatalf("run after the rest %+v, want the wake-ups' most specific reason", c)
	}
	if d := rs.times()[1].Sub(ended); d < took-20*time.Millisecond {
		t.Errorf("next run %s after a run that took %s", d, took)
	}
	r.Wake("watch") // a barrier: its run comes after any other the wake-ups caused
	if c := rs.next(t); c.Reason != "watch" {
		t.Fatalf("run %+v", c)
	}
	if n := len(rs.times()); n != 3 {
		t.Errorf("%d runs, want 3: the two wake-ups during the rest were one run", n)
	}
}

func TestFatal(t *testing.T) {
	stop := errors.New("refusing to run")
	r := New(Options{Fatal: func(err error) bool { return errors.Is(err, stop) }})
	r.Wake("")
	err := r.Run(context.Background(), func(context.Context, Cause) error { return stop })
	if !errors.Is(err, stop) {
		t.Fatalf("Run = %v, want the fatal failure", err)
	}
}

// TestMinInterval (the network policy): a lone wake-up runs at once; a
// burst of wake-ups within MinInterval of a run's start is one more run,
// MinInterval after it.
func TestMinInterval(t *testing.T) {
	rs := newRuns()
	const interval = 300 * time.Millisecond
	r := New(Options{MinInterval: interval, Reasons: agentReasons})
	start(t, r, rs.fn(func(int) error { return nil }))
	woken := time.Now()
	r.Wake("start")
	rs.next(t)
	if d := rs.times()[0].Sub(woken); d > interval/2 {
		t.Errorf("the first run came %s after its wake-up, want at once", d)
	}
	for range 5 {
		r.Wake("watch")
		time.Sleep(10 * time.Millisecond)
	}
	if c := rs.next(t); c.Reason != "watch" {
		t.Fatalf("run %+v", c)
	}
	at := rs.times()
	if d := at[1].Sub(at[0]); d < interval {
		t.Errorf("the burst's run started %s after the first, want at least %s", d, interval)
	}
	r.Wake("probe") // a barrier: its run comes after any other the burst caused
	if c := rs.next(t); c.Reason != "probe" {
		t.Fatalf("run %+v", c)
	}
	if n := len(rs.times()); n != 3 {
		t.Errorf("%d runs, want 3: the five wake-ups of the burst were one run", n)
	}
}
