package keyrotation

import (
	"errors"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

func mustKey(t *testing.T) wgtypes.Key {
	t.Helper()
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDecide(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	cur, nxt, other := mustKey(t), mustKey(t), mustKey(t)
	curPub, nextPub := cur.PublicKey().String(), nxt.PublicKey().String()
	pending := &Next{PrivateKey: nxt, Token: "t1", Started: now.Add(-time.Second), Previous: cur.PublicKey()}
	promoted := &Next{PrivateKey: cur, Token: "t1", Started: now.Add(-time.Second), Previous: other.PublicKey()}
	p := Policy{PublishTimeout: 2 * time.Minute, NodeName: "n1"}
	base := Observed{Current: cur, CurrentSince: now.Add(-time.Hour), Announced: curPub, Published: curPub, Now: now}

	tests := []struct {
		name     string
		mod      func(o *Observed, p *Policy)
		want     Action
		device   wgtypes.Key
		announce wgtypes.Key
		token    string
	}{
		{"nothing requested", func(*Observed, *Policy) {}, Idle, cur, cur, ""},
		{"request already recorded", func(o *Observed, _ *Policy) { o.Requested, o.Recorded = "t1", "t1" }, Idle, cur, cur, ""},
		{"new request", func(o *Observed, _ *Policy) { o.Requested, o.Recorded = "t2", "t1" }, Start, cur, cur, "t2"},
		{"period not reached", func(o *Observed, p *Policy) { p.Period = 2 * time.Hour }, Idle, cur, cur, ""},
		{"period reached", func(o *Observed, p *Policy) { p.Period = 30 * time.Minute }, Start, cur, cur, AutoToken(now)},
		{"pending, not announced yet", func(o *Observed, _ *Policy) { o.Next = pending }, AwaitPublish, cur, nxt, "t1"},
		{"pending, announced, not published", func(o *Observed, _ *Policy) { o.Next, o.Announced = pending, nextPub }, AwaitPublish, cur, nxt, "t1"},
		{"published: switch", func(o *Observed, _ *Policy) { o.Next, o.Announced, o.Published = pending, nextPub, nextPub }, Switch, nxt, nxt, "t1"},
		{"device switched: promote", func(o *Observed, _ *Policy) { o.Next, o.Published, o.DeviceKey = pending, nextPub, &nxt }, Promote, nxt, nxt, "t1"},
		{"device switched, MeshPeer not seen: still promote", func(o *Observed, _ *Policy) { o.Next, o.Published, o.DeviceKey = pending, "", &nxt }, Promote, nxt, nxt, "t1"},
		{"publish timeout: roll back", func(o *Observed, _ *Policy) {
			o.Next, o.Announced, o.Now = pending, nextPub, now.Add(3*time.Minute)
		}, RollBack, cur, cur, "t1"},
		{"published after the timeout: still switch", func(o *Observed, _ *Policy) {
			o.Next, o.Published, o.Now = pending, nextPub, now.Add(3*time.Minute)
		}, Switch, nxt, nxt, "t1"},
		{"roll-back recorded: discard", func(o *Observed, _ *Policy) { o.Next, o.Recorded, o.Published = pending, "t1", nextPub }, Discard, cur, cur, "t1"},
		{"promoted: confirm", func(o *Observed, _ *Policy) { o.Next = promoted }, Confirm, cur, cur, "t1"},
		{"promoted and recorded: finish", func(o *Observed, _ *Policy) { o.Next, o.Recorded = promoted, "t1" }, Finish, cur, cur, "t1"},
		{"unreadable next: roll back", func(o *Observed, _ *Policy) { o.NextErr = errors.New("bad") }, RollBack, cur, cur, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, pol := base, p
			tc.mod(&o, &pol)
			d := Decide(o, pol)
			if d.Action != tc.want || d.DeviceKey != tc.device || d.Announce != tc.announce.PublicKey() || d.Token != tc.token {
				t.Errorf("Decide = %v token %q device-is-next %v announce-is-next %v; want %v token %q device-is-next %v announce-is-next %v",
					d.Action, d.Token, d.DeviceKey == nxt, d.Announce == nxt.PublicKey(), tc.want, tc.token, tc.device == nxt, tc.announce == nxt)
			}
		})
	}
}

func TestDueSpreadsNodes(t *testing.T) {
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seen := map[time.Time]bool{}
	for _, n := range []string{"a", "b", "c", "d"} {
		due := Due(since, Policy{Period: 100 * time.Hour, NodeName: n})
		if due.Before(since.Add(90*time.Hour)) || due.After(since.Add(100*time.Hour)) {
			t.Errorf("node %s due %s after the key, want within the last tenth of the period", n, due.Sub(since))
		}
		seen[due] = true
	}
	if len(seen) < 3 {
		t.Errorf("4 nodes got only %d distinct due times", len(seen))
	}
}
