package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/probe"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestDesiredStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	hold := 90 * time.Second
	peers := []wgtypes.Peer{{LastHandshakeTime: now.Add(-time.Minute)}, {LastHandshakeTime: now.Add(-10 * time.Minute)}, {}}
	probes := map[string]probe.State{
		"a": {Probed: true, Reachable: true},
		"b": {Probed: true, Reachable: false, FailingSince: now.Add(-2 * time.Minute)},  // past the hold-down
		"c": {Probed: true, Reachable: false, FailingSince: now.Add(-30 * time.Second)}, // not yet
		// d: never probed yet (just joined): not unreachable
	}
	in := StatusInput{Generation: 3, MTU: 1420, Peers: peers, Now: now, Expected: []string{"a", "b", "c", "d"}, Probes: probes, HoldDown: hold}
	st := DesiredStatus(in, wgv1.MeshPeerStatus{})
	if st.Connected != "3/4" || st.ConnectedPeers != 3 || st.TotalPeers != 4 || st.MTU != 1420 || st.ObservedGeneration != 3 ||
		!slices.Equal(st.UnreachablePeers, []string{"b"}) {
		t.Fatalf("status = %+v", st)
	}
	if st.LatestHandshake == nil || !st.LatestHandshake.Time.Equal(now.Add(-time.Minute)) {
		t.Fatalf("latestHandshake = %v", st.LatestHandshake)
	}
	if c := meta.FindStatusCondition(st.Conditions, wgv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Fatalf("Ready = %+v", c)
	}
	if c := meta.FindStatusCondition(st.Conditions, wgv1.ConditionDegraded); c == nil || c.Status != metav1.ConditionFalse {
		t.Fatalf("Degraded = %+v", c)
	}

	// Same state later: nothing worth writing, transition times kept.
	in.Now = now.Add(5 * time.Second)
	later := DesiredStatus(in, st)
	if classifyStatus(st, later) != statusSame {
		t.Fatal("identical state reported as changed")
	}
	if !meta.FindStatusCondition(later.Conditions, wgv1.ConditionReady).LastTransitionTime.Equal(&meta.FindStatusCondition(st.Conditions, wgv1.ConditionReady).LastTransitionTime) {
		t.Fatal("transition time moved without a transition")
	}

	// Only the handshake time moves: no write.
	in.Peers = []wgtypes.Peer{{LastHandshakeTime: now.Add(20 * time.Second)}, peers[1], peers[2]}
	if c := classifyStatus(st, DesiredStatus(in, st)); c != statusSame {
		t.Fatalf("a handshake-only change is %v, want no write", c)
	}
	in.Peers = peers

	// c passes the hold-down: significant.
	in.Now = now.Add(time.Minute)
	cst := DesiredStatus(in, st)
	if !slices.Equal(cst.UnreachablePeers, []string{"b", "c"}) || cst.Connected != "2/4" || classifyStatus(st, cst) != statusSignificant {
		t.Fatalf("after c's hold-down: %+v (%v)", cst, classifyStatus(st, cst))
	}
	in.Now = now

	// A healthy peer joins: counts only, a membership change.
	in.Expected = []string{"a", "b", "c", "d", "e"}
	if c := classifyStatus(st, DesiredStatus(in, st)); c != statusMembership {
		t.Fatalf("a healthy join is %v, want membership", c)
	}
	// A NodeNotReady peer leaves the expected set: membership too (b was
	// unreachable and is no longer expected, so the unreachable set
	// changes: significant).
	in.Expected = []string{"a", "c", "d"}
	if c := classifyStatus(st, DesiredStatus(in, st)); c != statusSignificant {
		t.Fatalf("dropping the unreachable b is %v, want significant", c)
	}
	in.Expected = []string{"a", "b", "c"}
	if c := classifyStatus(st, DesiredStatus(in, st)); c != statusMembership {
		t.Fatalf("dropping the reachable d is %v, want membership", c)
	}
	in.Expected = []string{"a", "b", "c", "d"}

	// More than 32 unreachable: names capped, counts exact.
	var many []string
	manyProbes := map[string]probe.State{}
	for i := 0; i < 40; i++ {
		n := fmt.Sprintf("n%02d", i)
		many = append(many, n)
		manyProbes[n] = probe.State{Probed: true, FailingSince: now.Add(-time.Hour)}
	}
	big := DesiredStatus(StatusInput{Now: now, Expected: many, Probes: manyProbes, HoldDown: hold}, wgv1.MeshPeerStatus{})
	if len(big.UnreachablePeers) != 32 || big.Connected != "0/40" {
		t.Fatalf("40 unreachable: %d names, connected %s", len(big.UnreachablePeers), big.Connected)
	}

	// Probes off: a handshake within 3 minutes counts.
	off := DesiredStatus(StatusInput{Now: now, Expected: []string{"a", "b"}, Handshakes: map[string]time.Time{"a": now.Add(-time.Minute), "b": now.Add(-10 * time.Minute)}}, wgv1.MeshPeerStatus{})
	if off.Connected != "1/2" || !slices.Equal(off.UnreachablePeers, []string{"b"}) {
		t.Fatalf("probes off: %+v", off)
	}

	// Problems: Degraded True, naming peer and value.
	pr := DesiredStatus(StatusInput{Generation: 3, MTU: 1420, Peers: peers, Now: now, Expected: in.Expected, Probes: probes, HoldDown: hold,
		Problems: []mesh.Problem{{Peer: "ext", Field: "spec.endpoint", Value: "nx.invalid:51820", Detail: "cannot resolve"}}}, st)
	c := meta.FindStatusCondition(pr.Conditions, wgv1.ConditionDegraded)
	if c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "ext") || !strings.Contains(c.Message, "nx.invalid:51820") {
		t.Fatalf("Degraded = %+v", c)
	}
	if classifyStatus(st, pr) != statusSignificant {
		t.Fatal("problem not detected as a significant change")
	}

	// Link failure: Ready False.
	lf := DesiredStatus(StatusInput{Generation: 3, LinkErr: errors.New("boom"), Now: now}, st)
	if c := meta.FindStatusCondition(lf.Conditions, wgv1.ConditionReady); c.Status != metav1.ConditionFalse || c.Message != "boom" {
		t.Fatalf("Ready = %+v", c)
	}
}

func TestStatusPolicy(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	p := statusPolicy{MinInterval: 10 * time.Second, MembershipDelay: 5 * time.Minute, rand: func(n int64) int64 { return n - 1 }}
	ready := []metav1.Condition{{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonLinkConfigured}}
	cur := wgv1.MeshPeerStatus{Conditions: ready, Connected: "3/3", ConnectedPeers: 3, TotalPeers: 3}

	// The first write is at once.
	if !p.decide(wgv1.MeshPeerStatus{}, cur, now) {
		t.Fatal("first status not written at once")
	}
	p.wrote(now)

	// A significant change within MinInterval waits, then goes.
	bad := cur
	bad.Connected, bad.ConnectedPeers, bad.UnreachablePeers = "2/3", 2, []string{"x"}
	if p.decide(cur, bad, now.Add(5*time.Second)) {
		t.Fatal("written twice within the minimum interval")
	}
	if !p.decide(cur, bad, now.Add(10*time.Second)) {
		t.Fatal("significant change not written after the minimum interval")
	}
	p.wrote(now.Add(10 * time.Second))
	t0 := now.Add(time.Minute)

	// A join (membership only) in a 1,000-node mesh waits for the jittered
	// delay (here its maximum, 5 min), whatever else happens meanwhile.
	cur.Connected, cur.ConnectedPeers, cur.TotalPeers = "999/999", 999, 999
	join := cur
	join.Connected, join.ConnectedPeers, join.TotalPeers = "1000/1000", 1000, 1000
	if p.decide(cur, join, t0) || p.decide(cur, join, t0.Add(4*time.Minute)) {
		t.Fatal("membership-only change written before its delay")
	}
	join2 := join
	join2.Connected, join2.ConnectedPeers, join2.TotalPeers = "1001/1001", 1001, 1001
	if p.decide(cur, join2, t0.Add(4*time.Minute+59*time.Second)) {
		t.Fatal("a second join restarted or shortened the delay")
	}
	if !p.decide(cur, join2, t0.Add(5*time.Minute)) {
		t.Fatal("membership change not written after its delay")
	}
	p.wrote(t0.Add(5 * time.Minute))
	// Back to the same: nothing pending.
	if p.decide(join2, join2, t0.Add(6*time.Minute)) || !p.membershipDue.IsZero() {
		t.Fatal("no change, yet a write or a pending delay")
	}
	// Delays are jittered within [d/2, d].
	q := statusPolicy{MinInterval: time.Second, MembershipDelay: 5 * time.Minute, rand: func(int64) int64 { return 0 }}
	q.decide(cur, join, t0)
	if d := q.membershipDue.Sub(t0); d != 150*time.Second {
		t.Fatalf("shortest membership delay %s, want 2m30s", d)
	}
	// A small mesh: d grows 0.3 s per node from MinInterval, so a 3-node
	// mesh shows a join within 10 s and 100 nodes within 30 s.
	for _, c := range []struct {
		total int32
		max   time.Duration
	}{{2, 10 * time.Second}, {98, 30 * time.Second}, {5000, 5 * time.Minute}} {
		small := statusPolicy{MinInterval: 10 * time.Second, MembershipDelay: 5 * time.Minute, rand: func(n int64) int64 { return n - 1 }}
		from := wgv1.MeshPeerStatus{Conditions: ready, TotalPeers: c.total, ConnectedPeers: c.total, Connected: "x"}
		to := from
		to.TotalPeers, to.ConnectedPeers, to.Connected = c.total+1, c.total+1, "y"
		small.decide(from, to, t0)
		if d := small.membershipDue.Sub(t0); d != c.max {
			t.Errorf("membership delay with %d peers: %s, want %s", c.total+1, d, c.max)
		}
	}
}

func TestMeshPeerChanged(t *testing.T) {
	base := wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "n1", Generation: 1}, Spec: wgv1.MeshPeerSpec{PublicKey: "k"}}
	statusOnly := *base.DeepCopy()
	statusOnly.ResourceVersion = "9"
	statusOnly.Status = wgv1.MeshPeerStatus{Connected: "999/1000", ConnectedPeers: 999, TotalPeers: 1000, UnreachablePeers: []string{"x"},
		Conditions: []metav1.Condition{{Type: wgv1.ConditionReady, Status: metav1.ConditionFalse}, {Type: wgv1.ConditionInvalidAnnotation, Status: metav1.ConditionTrue}}}
	if meshPeerChanged(&base, &statusOnly) {
		t.Fatal("a status-only update (counts, Ready, InvalidAnnotation) triggers a reconcile")
	}
	for name, mutate := range map[string]func(*wgv1.MeshPeer){
		"spec":     func(m *wgv1.MeshPeer) { m.Generation = 2; m.Spec.Endpoint = "198.18.0.9:51820" },
		"owner":    func(m *wgv1.MeshPeer) { m.OwnerReferences = []metav1.OwnerReference{{Name: "n1", UID: "u"}} },
		"deletion": func(m *wgv1.MeshPeer) { ts := metav1.Now(); m.DeletionTimestamp = &ts },
		"KeyConflict": func(m *wgv1.MeshPeer) {
			m.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionKeyConflict, Status: metav1.ConditionTrue}}
		},
		"NodeNotReady": func(m *wgv1.MeshPeer) {
			m.Status.Conditions = []metav1.Condition{{Type: wgv1.ConditionNodeNotReady, Status: metav1.ConditionTrue}}
		},
	} {
		n := base.DeepCopy()
		mutate(n)
		if !meshPeerChanged(&base, n) {
			t.Errorf("%s change does not trigger a reconcile", name)
		}
	}
}

// TestReportedLearned: the agent reports, for node peers only, the address
// WireGuard reaches them at when it is not their spec endpoint's (a node
// behind NAT); the report is part of the status and a change is a
// significant write.
func TestReportedLearned(t *testing.T) {
	learned := []learnedEndpoint{
		{Peer: "nat-1", Addr: netip.MustParseAddr("198.18.100.1"), Port: 40001},   // behind NAT: reported, with its port
		{Peer: "n2", Addr: netip.MustParseAddr("198.18.0.12"), Port: 51820},       // its chosen endpoint: not
		{Peer: "n3", Addr: netip.MustParseAddr("198.18.0.14"), Port: 40003},       // its address, another port (NAT): reported
		{Peer: "laptop", Addr: netip.MustParseAddr("198.18.50.7"), Port: 1},       // external: not
		{Peer: "dns-node", Addr: netip.MustParseAddr("198.18.0.13"), Port: 51820}, // spec is a DNS name: reported
	}
	peers := []mesh.Peer{{Name: "nat-1", NodeName: "nat-1", Endpoint: "198.18.1.11:51820"}, {Name: "n2", NodeName: "n2", Endpoint: "198.18.0.12:51820"},
		{Name: "n3", NodeName: "n3", Endpoint: "198.18.0.14:51820"}, {Name: "laptop"}, {Name: "dns-node", NodeName: "dns-node", Endpoint: "n3.example.org:51820"}}
	got := reportedLearned(learned, peers)
	want := []wgv1.LearnedEndpoint{{Peer: "dns-node", Address: "198.18.0.13", Port: 51820}, {Peer: "n3", Address: "198.18.0.14", Port: 40003},
		{Peer: "nat-1", Address: "198.18.100.1", Port: 40001}}
	if !slices.Equal(got, want) {
		t.Fatalf("reportedLearned = %+v, want %+v", got, want)
	}
	var many []learnedEndpoint
	var manyPeers []mesh.Peer
	for i := range 40 {
		name := fmt.Sprintf("nat-%02d", i)
		many = append(many, learnedEndpoint{Peer: name, Addr: netip.AddrFrom4([4]byte{198, 18, 100, byte(i)})})
		manyPeers = append(manyPeers, mesh.Peer{Name: name, NodeName: name})
	}
	if n := len(reportedLearned(many, manyPeers)); n != maxLearnedEndpoints {
		t.Errorf("%d reported, want at most %d (the CRD's maxItems)", n, maxLearnedEndpoints)
	}
	st := DesiredStatus(StatusInput{Learned: got, Now: time.Now()}, wgv1.MeshPeerStatus{})
	if !slices.Equal(st.LearnedEndpoints, want) {
		t.Fatalf("status learnedEndpoints = %+v", st.LearnedEndpoints)
	}
	before := st
	before.LearnedEndpoints = nil
	if c := classifyStatus(before, st); c != statusSignificant {
		t.Errorf("a new learned endpoint is change %v, want significant", c)
	}
	if c := classifyStatus(st, st); c != statusSame {
		t.Errorf("the same learned endpoints are change %v, want none", c)
	}
}
