// Package runner runs one level-based function (the agent's reconcile, the
// service NAT's sync, the network policy's) whenever something wakes it, on a
// period, and again after a failure with back-off, one run at a time:
// wake-ups that arrive while it runs (or rests) coalesce into one more run.
// Each user keeps its own pacing: the agent rests as long as a reconcile
// took and retries a failure while wake-ups still run; the service NAT holds
// every sync off during a failure's back-off; the network policy runs at
// most once per MinInterval (a bounded-frequency runner).
package runner

import (
	"context"
	"sync"
	"time"
)

// Defaults of the back-off after a failure: doubling from Min up to Max,
// back to Min after a success.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 30 * time.Second
)

// Reasons the runner itself wakes for.
const (
	// ReasonPeriod is a run's reason when nothing but the period woke it.
	ReasonPeriod = "resync"
	// ReasonRetry wakes the run that retries a failure.
	ReasonRetry = "retry"
)

// Options configure a Runner.
type Options struct {
	// Period: a run at least this often (0: only when woken).
	Period time.Duration
	// Reasons are the wake-up reasons that count, most specific first: a
	// run woken for several counts under the first (Cause.Reason). A run
	// woken for none of them counts as ReasonPeriod.
	Reasons []string
	// Pace: after each run, rest as long as it took before the next, so
	// that runs hold at most half a core however fast wake-ups come.
	Pace bool
	// MinInterval: at least this long from one run's start to the next's,
	// so that a burst of wake-ups is one run per interval while a lone
	// wake-up runs at once (a bounded-frequency runner).
	MinInterval time.Duration
	// HoldOnFailure: after a failure, no run until the back-off has passed,
	// whatever wakes the runner meanwhile; then a retry. Without it the
	// retry is due after the back-off, and a wake-up meanwhile runs at once.
	HoldOnFailure bool
	// MinBackoff and MaxBackoff: DefaultMinBackoff, DefaultMaxBackoff when 0.
	MinBackoff, MaxBackoff time.Duration
	// Fatal reports whether a failure ends Run, which then returns it (nil:
	// none does).
	Fatal func(error) bool
	// OnFailure is told of every other failure and of the back-off before
	// its retry (logging).
	OnFailure func(err error, retryAfter time.Duration)
}

// Cause is why a run happens.
type Cause struct {
	// Reason is the most specific reason it was woken for (Options.Reasons),
	// ReasonPeriod when none.
	Reason string
	// Periodic: the period woke it.
	Periodic bool
}

// Runner is one coalescing, paced, back-off runner.
type Runner struct {
	o       Options
	c       chan struct{}
	mu      sync.Mutex
	reasons map[string]bool
}

// New returns a Runner; Wake may be called before Run.
func New(o Options) *Runner {
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	return &Runner{o: o, c: make(chan struct{}, 1), reasons: map[string]bool{}}
}

// Wake asks for a run, for reason. Many wake-ups before the run starts are
// one run.
func (r *Runner) Wake(reason string) {
	r.mu.Lock()
	r.reasons[reason] = true
	r.mu.Unlock()
	select {
	case r.c <- struct{}{}:
	default:
	}
}

// Run calls fn for every run until ctx ends (then it returns nil) or a
// failure is fatal (then it returns the failure).
func (r *Runner) Run(ctx context.Context, fn func(context.Context, Cause) error) error {
	var tick <-chan time.Time
	if r.o.Period > 0 {
		t := time.NewTicker(r.o.Period)
		defer t.Stop()
		tick = t.C
	}
	backoff := r.o.MinBackoff
	var notBefore, lastStart time.Time
	for {
		periodic := false
		select {
		case <-ctx.Done():
			return nil
		case <-r.c:
		case <-tick:
			periodic = true
		}
		// Paced, or bounded in frequency: the wake-ups that arrive
		// meanwhile join this run.
		wait := time.Until(notBefore)
		if r.o.MinInterval > 0 && !lastStart.IsZero() {
			wait = max(wait, time.Until(lastStart.Add(r.o.MinInterval)))
		}
		if !sleep(ctx, wait) {
			return nil
		}
		r.drain()
		cause := Cause{Reason: r.take(), Periodic: periodic}
		start := time.Now()
		lastStart = start
		err := fn(ctx, cause)
		if r.o.Pace {
			notBefore = time.Now().Add(time.Since(start))
		}
		if err == nil {
			backoff = r.o.MinBackoff
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if r.o.Fatal != nil && r.o.Fatal(err) {
			return err
		}
		if r.o.OnFailure != nil {
			r.o.OnFailure(err, backoff)
		}
		if r.o.HoldOnFailure {
			if !sleep(ctx, backoff) {
				return nil
			}
			r.Wake(ReasonRetry)
		} else {
			time.AfterFunc(backoff, func() { r.Wake(ReasonRetry) })
		}
		backoff = min(2*backoff, r.o.MaxBackoff)
	}
}

// drain drops a pending wake-up: called before take, whose run covers it.
// (A wake-up between the two leaves its reason to this run and its signal
// for one more: never lost.)
func (r *Runner) drain() {
	select {
	case <-r.c:
	default:
	}
}

// take returns the reason of the wake-up and forgets them all.
func (r *Runner) take() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer clear(r.reasons)
	for _, reason := range r.o.Reasons {
		if r.reasons[reason] {
			return reason
		}
	}
	return ReasonPeriod
}

// sleep waits d; false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
