package probe

import (
	"math/rand/v2"
	"net/netip"
	"time"
)

// Target is a peer to probe: its MeshPeer name and the address that answers
// (its bridge gateway).
type Target struct {
	Peer string
	Addr netip.Addr
}

// State is what the probes have found about one peer.
type State struct {
	// Probed: at least one probe finished.
	Probed bool
	// Reachable: the last probe was answered.
	Reachable bool
	// RTT of the last answered echo.
	RTT time.Duration
	// LastAnswer is when a probe was last answered (zero: never).
	LastAnswer time.Time
	// FailingSince is when the first of the current run of failed probes
	// started (zero while the last probe was answered).
	FailingSince time.Time
}

// Record folds one probe result into the state. started is when the probe
// began (its first echo), done when it ended.
func Record(s State, answered bool, rtt time.Duration, started, done time.Time) State {
	s.Probed = true
	s.Reachable = answered
	if answered {
		s.RTT = rtt
		s.LastAnswer = done
		s.FailingSince = time.Time{}
		return s
	}
	if s.FailingSince.IsZero() {
		s.FailingSince = started
	}
	return s
}

// Attempts is how many echoes the next probe of a peer in this state
// sends, of at most max: one while its probes are failing. The extra
// attempts are for a healthy peer's idle session, whose first echo waits
// for a handshake; to a peer that does not answer, each echo only waits in
// WireGuard's queue for a handshake that does not come (userspace
// WireGuard holds a 64 KiB buffer for each such packet for up to 90 s,
// hundreds of MiB when a thousand peers are down at once).
func (s State) Attempts(max int) int {
	if !s.FailingSince.IsZero() {
		return min(1, max)
	}
	return max
}

// Unreachable reports whether probes have failed without a break for at
// least holdDown at now: the view the MeshPeer status takes.
func (s State) Unreachable(now time.Time, holdDown time.Duration) bool {
	return !s.FailingSince.IsZero() && now.Sub(s.FailingSince) >= holdDown
}

// nextDue is when a peer is probed next after a probe at now: one interval
// later, ±10% so that probes of many peers (and many nodes) never line up.
func nextDue(now time.Time, interval time.Duration, r *rand.Rand) time.Time {
	j := time.Duration((r.Float64()*0.2 - 0.1) * float64(interval))
	return now.Add(interval + j)
}

// firstDue is when a new peer is first probed: soon, spread over
// min(interval, 10 ms per peer, at least 1 s), so that the first round after
// a start with a thousand peers is a ramp, not a burst of handshakes.
func firstDue(now time.Time, interval time.Duration, peers int, r *rand.Rand) time.Time {
	spread := max(time.Second, time.Duration(peers)*10*time.Millisecond)
	spread = min(spread, interval)
	return now.Add(time.Duration(r.Int64N(int64(spread))))
}
