// Package wait is the one way tests wait for the system to reach a state:
// poll a check with a deadline and, when it never passes, say what was
// awaited and the check's last error. Every poll is bounded. A negative
// check ("nothing happened") must not be a wait that times out: wait for a
// barrier that proves the system saw the change instead (a later event, a
// generation reached).
package wait

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// The interval between checks starts short, for the fast common case, and
// grows to maxInterval.
const (
	firstInterval = 5 * time.Millisecond
	maxInterval   = 200 * time.Millisecond
)

// errNotYet is what True's checks return while the condition is false.
var errNotYet = errors.New("condition not met")

// Poll runs check until it returns nil, and then returns nil; when timeout
// passes or ctx ends first, it returns the last error check gave.
func Poll(ctx context.Context, timeout time.Duration, check func() error) error {
	return poll(ctx, timeout, firstInterval, maxInterval, check)
}

// Every is Poll at a fixed interval, for a wait that is also a measurement
// (the time until check passes is only as precise as the interval).
func Every(ctx context.Context, timeout, interval time.Duration, check func() error) error {
	return poll(ctx, timeout, interval, interval, check)
}

func poll(ctx context.Context, timeout, interval, maxInterval time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		}
		t := time.NewTimer(min(interval, left))
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		interval = min(interval*3/2, maxInterval)
	}
}

// For is Poll that fails tb, naming what it awaited and the last error.
func For(tb testing.TB, timeout time.Duration, what string, check func() error) {
	tb.Helper()
	if err := Poll(context.Background(), timeout, check); err != nil {
		tb.Fatalf("waiting for %s: %v", what, err)
	}
}

// True makes a check of a condition.
func True(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}
