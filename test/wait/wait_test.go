package wait

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPollReturnsOnceTheCheckPasses(t *testing.T) {
	n := 0
	if err := Poll(context.Background(), time.Second, func() error {
		if n++; n < 3 {
			return errors.New("not yet")
		}
		return nil
	}); err != nil || n != 3 {
		t.Fatalf("err %v after %d checks, want nil after 3", err, n)
	}
}

func TestPollIsBoundedAndSaysTheLastError(t *testing.T) {
	start := time.Now()
	n := 0
	err := Poll(context.Background(), 50*time.Millisecond, func() error { n++; return errors.New("still 3 of 4") })
	if err == nil || !strings.Contains(err.Error(), "still 3 of 4") || !strings.Contains(err.Error(), "after 50ms") {
		t.Fatalf("err %v, want the last error and the timeout", err)
	}
	if took := time.Since(start); took > 2*time.Second || n < 2 {
		t.Fatalf("%d checks in %s", n, took)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Poll(ctx, time.Hour, True(func() bool { return false })); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled context: %v", err)
	}
}
