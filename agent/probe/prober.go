package probe

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Pinger sends one echo and waits for its answer.
type Pinger interface {
	// Ping returns the round-trip time, or an error when no answer came
	// within timeout.
	Ping(ctx context.Context, t Target, timeout time.Duration) (time.Duration, error)
}

// Options configure a Prober.
type Options struct {
	// Interval between probes of one peer (jittered ±10%).
	Interval time.Duration
	// Timeout of one echo.
	Timeout time.Duration
	// Attempts per probe (echoes, each Timeout; default 3).
	Attempts int
	// MaxInFlight bounds concurrent probes (default 64).
	MaxInFlight int
	Pinger      Pinger
	Metrics     *Metrics // nil: none
	Log         logr.Logger
	// OnRecovery is called, outside the Prober's lock, when an answer ends
	// a run of failed probes: the one result that changes the held view at
	// once (a run becomes Unreachable only as time passes, which the
	// agent's periodic resync sees). First results and plain flips call
	// nothing: a thousand peers' first round must not be a thousand
	// reconciles.
	OnRecovery func()
}

type peer struct {
	target   Target
	state    State
	due      time.Time
	inFlight bool
}

// Prober probes every target on its schedule.
type Prober struct {
	o     Options
	mu    sync.Mutex
	peers map[string]*peer
	rand  *rand.Rand
	wake  chan struct{}
}

// New makes a Prober; Run starts it.
func New(o Options) *Prober {
	if o.Attempts <= 0 {
		o.Attempts = 3
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	return &Prober{o: o, peers: map[string]*peer{}, rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), wake: make(chan struct{}, 1)}
}

// SetTargets replaces the set of peers to probe. A peer whose address is
// unchanged keeps its state and schedule; new ones are probed soon; gone
// ones lose their state.
func (p *Prober) SetTargets(ts []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	keep := make(map[string]bool, len(ts))
	added := false
	for _, t := range ts {
		keep[t.Peer] = true
		if old, ok := p.peers[t.Peer]; ok && old.target.Addr == t.Addr {
			continue
		}
		p.peers[t.Peer] = &peer{target: t, due: firstDue(now, p.o.Interval, len(ts), p.rand)}
		added = true
	}
	for name := range p.peers {
		if !keep[name] {
			delete(p.peers, name)
		}
	}
	if added {
		p.poke()
	}
}

// Kick probes every peer now (after a key change, say, so that sessions
// are set up at once rather than at the next interval).
func (p *Prober) Kick() {
	p.mu.Lock()
	now := time.Now()
	for _, pe := range p.peers {
		pe.due = now
	}
	p.mu.Unlock()
	p.poke()
}

// States is a copy of every peer's state, by MeshPeer name.
func (p *Prober) States() map[string]State {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]State, len(p.peers))
	for name, pe := range p.peers {
		out[name] = pe.state
	}
	return out
}

func (p *Prober) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run probes until ctx ends.
func (p *Prober) Run(ctx context.Context) error {
	sem := make(chan struct{}, p.o.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-p.wake:
		}
		now := time.Now()
		type job struct {
			pe       *peer
			attempts int
		}
		var start []job
		next := now.Add(time.Second)
		p.mu.Lock()
		for _, pe := range p.peers {
			switch {
			case pe.inFlight:
			case !pe.due.After(now):
				pe.inFlight = true
				start = append(start, job{pe, pe.state.Attempts(p.o.Attempts)})
			case pe.due.Before(next):
				next = pe.due
			}
		}
		p.mu.Unlock()
		for _, j := range start {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func(j job) {
				defer wg.Done()
				defer func() { <-sem }()
				p.probe(ctx, j.pe, j.attempts)
			}(j)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(time.Until(next), 10*time.Millisecond))
	}
}

// probe runs one probe of a peer: attempts echoes at most (State.Attempts,
// decided when Run started it).
func (p *Prober) probe(ctx context.Context, pe *peer, attempts int) {
	started := time.Now()
	var rtt time.Duration
	var err error
	for i := 0; i < attempts; i++ {
		if rtt, err = p.o.Pinger.Ping(ctx, pe.target, p.o.Timeout); err == nil || ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return
	}
	done := time.Now()
	answered := err == nil
	p.mu.Lock()
	before := pe.state
	pe.state = Record(pe.state, answered, rtt, started, done)
	pe.inFlight = false
	pe.due = nextDue(done, p.o.Interval, p.rand)
	// Only a peer still in the set reports (SetTargets may have replaced it).
	current := p.peers[pe.target.Peer] == pe
	p.mu.Unlock()
	if !current {
		return
	}
	if m := p.o.Metrics; m != nil {
		result := "lost"
		if answered {
			result = "answered"
			m.RTT.Observe(rtt.Seconds())
		}
		m.Probes.WithLabelValues(result).Inc()
	}
	if before.Probed && before.Reachable == answered {
		return
	}
	if answered {
		p.o.Log.V(1).Info("peer reachable", "peer", pe.target.Peer, "address", pe.target.Addr, "rtt", rtt)
	} else {
		p.o.Log.Info("peer unreachable: probe through the tunnel not answered", "peer", pe.target.Peer, "address", pe.target.Addr,
			"attempts", attempts, "timeout", p.o.Timeout, "error", err.Error())
	}
	if answered && !before.FailingSince.IsZero() && p.o.OnRecovery != nil {
		p.o.OnRecovery()
	}
}
