package agent

import "testing"

func TestTriggerReasons(t *testing.T) {
	tr := newTrigger()
	tr.fireFor("resync")
	tr.fireFor("probe")
	tr.fireFor("watch")
	tr.fireFor("probe")
	<-tr.c
	if r := tr.take(); r != "watch" {
		t.Fatalf("coalesced wake-up counted as %q, want the most specific, watch", r)
	}
	select {
	case <-tr.c:
		t.Fatal("four fires left more than one wake-up")
	default:
	}
	if r := tr.take(); r != "resync" {
		t.Fatalf("a wake-up with no recorded reason (the ticker) is %q, want resync", r)
	}
	tr.fire()
	if r := tr.take(); r != "other" {
		t.Fatalf("fire() is %q, want other", r)
	}
}

// TestTriggerDrain: a wake-up that arrived while the agent paced is covered
// by the reconcile that follows (drain, then take): no second reconcile for
// it, and its reason counts.
func TestTriggerDrain(t *testing.T) {
	tr := newTrigger()
	tr.fireFor("start")
	<-tr.c
	tr.fireFor("watch") // during the pause
	tr.drain()
	if r := tr.take(); r != "watch" {
		t.Fatalf("reason after the pause = %q, want watch", r)
	}
	select {
	case <-tr.c:
		t.Fatal("a wake-up covered by the reconcile was left for another")
	default:
	}
	tr.drain() // nothing pending: no block
}
