package operator

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

func TestNodeLocation(t *testing.T) {
	node := func(labels map[string]string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: labels}}
	}
	fromRegion := LocationOptions{FromRegion: true, RegionsNotOneNetwork: []string{"us-east-1"}}
	for _, tc := range []struct {
		labels map[string]string
		o      LocationOptions
		want   string
	}{
		{labels: nil, want: ""},
		{labels: map[string]string{wgv1.LabelRegion: "eu-west-1"}, want: ""},
		{labels: map[string]string{wgv1.LabelRegion: "eu-west-1"}, o: fromRegion, want: "eu-west-1"},
		{labels: map[string]string{wgv1.LabelRegion: "us-east-1"}, o: fromRegion, want: ""},
		{labels: map[string]string{wgv1.LabelRegion: "us-east-1", wgv1.LabelLocation: "vpc-a"}, o: fromRegion, want: "vpc-a"},
		{labels: map[string]string{wgv1.LabelRegion: "eu-west-1", wgv1.LabelLocation: ""}, o: fromRegion, want: ""},
		{labels: map[string]string{wgv1.LabelLocation: "office-berlin"}, want: "office-berlin"},
	} {
		if got := NodeLocation(node(tc.labels), tc.o); got != tc.want {
			t.Errorf("labels %v, %+v: location %q, want %q", tc.labels, tc.o, got, tc.want)
		}
	}
}

// TestNodeRelay: wgmesh.io/relay=true prefers the node as a relay,
// =false forbids it, anything else says nothing.
func TestNodeRelay(t *testing.T) {
	for v, want := range map[string]wgv1.RelayPreference{"true": wgv1.RelayPrefer, "false": wgv1.RelayNever, "": "", "yes": ""} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{wgv1.LabelRelay: v}}}
		if got := NodeRelay(n); got != want {
			t.Errorf("wgmesh.io/relay=%q: %q, want %q", v, got, want)
		}
	}
	if got := NodeRelay(&corev1.Node{}); got != "" {
		t.Errorf("no label: %q", got)
	}
}

// reporter is node MeshPeer name (owned by its Node) reporting learned
// endpoints of others as addr:port.
func reporter(name string, learned ...string) wgv1.MeshPeer {
	mp := wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: name,
		UID: types.UID("uid-" + name), Controller: ptrTo(true)}}}, Spec: wgv1.MeshPeerSpec{NodeName: name}}
	for _, l := range learned {
		peer, ep, _ := strings.Cut(l, "=")
		i := strings.LastIndexByte(ep, ':')
		host, port := strings.Trim(ep[:i], "[]"), ep[i+1:]
		var p int32
		fmt.Sscan(port, &p)
		mp.Status.LearnedEndpoints = append(mp.Status.LearnedEndpoints, wgv1.LearnedEndpoint{Peer: peer, Address: host, Port: p})
	}
	return mp
}

func ptrTo[T any](v T) *T { return &v }

func TestObservedCandidates(t *testing.T) {
	nodes := func(n string) (types.UID, bool) { return types.UID("uid-" + n), n != "gone" }
	own := []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: "198.18.20.1:51820"}}
	for _, tc := range []struct {
		name  string
		peers []wgv1.MeshPeer
		want  string
	}{
		{name: "one observer", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.100.20:40001")}, want: "observed=198.18.100.20:40001"},
		{name: "two agree, one lies", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.100.20:40001"), reporter("p2", "b=198.18.100.20:40001"),
			reporter("liar", "b=198.18.100.66:1")}, want: "observed=198.18.100.20:40001"},
		{name: "a tie publishes both", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.100.20:40001"), reporter("liar", "b=198.18.100.66:1")},
			want: "observed=198.18.100.20:40001,observed=198.18.100.66:1"},
		{name: "a liar repeating itself is one vote", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.100.20:40001"), reporter("p2", "b=198.18.100.20:40001"),
			reporter("liar", "b=198.18.100.66:1", "b=198.18.100.66:1", "b=198.18.100.66:1")}, want: "observed=198.18.100.20:40001"},
		{name: "a liar listing many addresses is one vote: the honest one survives the tie", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.100.20:40001"),
			reporter("liar", "b=1.0.0.1:1", "b=1.0.0.2:1", "b=1.0.0.3:1")}, want: "observed=1.0.0.1:1,observed=198.18.100.20:40001"},
		{name: "own report, other peers' reports, no port, a private address, a gone node's report: nothing",
			peers: []wgv1.MeshPeer{reporter("b", "b=198.18.100.9:9"), reporter("p1", "c=198.18.100.20:40001", "b=198.18.100.21:0", "b=198.18.20.1:51820"),
				reporter("gone", "b=198.18.100.22:1")}, want: ""},
		{name: "an address an external peer routes", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.200.7:40001"),
			{ObjectMeta: metav1.ObjectMeta{Name: "laptop"}, Spec: wgv1.MeshPeerSpec{AllowedIPs: []wgv1.CIDR{"198.18.200.0/24"}}}}, want: ""},
		{name: "per family", peers: []wgv1.MeshPeer{reporter("p1", "b=198.18.100.20:40001", "b=2001:db8:100::20:40001")},
			want: "observed=198.18.100.20:40001,observed=[2001:db8:100::20]:40001"},
	} {
		got := wgv1.FormatCandidatesAnnotation(ObservedCandidates("b", tc.peers, nodes, own))
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestLocationsAndCandidates: the operator publishes a node's location (its
// label, or its region with --location-from-region) and candidates (the
// agent's own addresses, the force-endpoint, what other nodes observe); a
// candidate that is not the node's own is an InvalidAnnotation with an
// Event, and the last good candidates stay.
func TestLocationsAndCandidates(t *testing.T) {
	needAPI(t)
	cleanCluster(t)
	startOperator(t, testOperatorOptions{clusterCIDRs: "198.19.0.0/16", name: "op",
		locations: LocationOptions{FromRegion: true, RegionsNotOneNetwork: []string{"region-many-vpcs"}}})
	ctx := context.Background()
	mk := func(name string, labels map[string]string, internal, external string, ann map[string]string) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: ann}}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internal}}
		if external != "" {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: external})
		}
		if err := testClient.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	mk("wgm-loc-a", map[string]string{wgv1.LabelRegion: "cloud-a"}, "198.18.10.1", "198.18.100.1", map[string]string{wgv1.AnnotationPublicKey: keyA,
		wgv1.AnnotationEndpoint: "198.18.10.1:51820", wgv1.AnnotationCandidates: "private=198.18.10.1:51820,public=198.18.100.1:51820"})
	mk("wgm-loc-o", map[string]string{wgv1.LabelLocation: "office-1", wgv1.LabelRegion: "region-many-vpcs"}, "198.18.20.1", "", map[string]string{wgv1.AnnotationPublicKey: keyB,
		wgv1.AnnotationEndpoint: "198.18.20.1:51820", wgv1.AnnotationCandidates: "private=198.18.20.1:51820"})
	mk("wgm-loc-v", map[string]string{wgv1.LabelRegion: "region-many-vpcs"}, "198.18.11.1", "", map[string]string{wgv1.AnnotationPublicKey: "CKnd9Pqs4bXKIw5I0oTKdQw8uK1bB2Zgp0b4l8sQ2Gg=",
		wgv1.AnnotationCandidates: "private=198.18.11.1:51820", wgv1.AnnotationForceEndpoint: "gw.example.org:51820"})

	waitPeer(t, "wgm-loc-a", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Location != "cloud-a" || wgv1.FormatCandidatesAnnotation(mp.Spec.Candidates) != "private=198.18.10.1:51820,public=198.18.100.1:51820" {
			return "location from the region, candidates from the annotation"
		}
		return ""
	})
	waitPeer(t, "wgm-loc-v", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Location != "" || wgv1.FormatCandidatesAnnotation(mp.Spec.Candidates) != "private=198.18.11.1:51820,public=gw.example.org:51820" {
			return "no location in a region that is not one network; the force-endpoint a public candidate"
		}
		return ""
	})

	// wgm-loc-a sees the office's handshakes come from its NAT.
	a, err := getPeer("wgm-loc-a")
	if err != nil {
		t.Fatal(err)
	}
	a.Status.LearnedEndpoints = []wgv1.LearnedEndpoint{{Peer: "wgm-loc-o", Address: "198.18.100.20", Port: 40001}}
	if err := testClient.Status().Update(ctx, a, client.FieldOwner("wgmesh-agent")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-loc-o", func(mp *wgv1.MeshPeer) string {
		if mp.Spec.Location != "office-1" || wgv1.FormatCandidatesAnnotation(mp.Spec.Candidates) != "private=198.18.20.1:51820,observed=198.18.100.20:40001" {
			return "the label's location, the observed endpoint"
		}
		return ""
	})

	// The office's agent claims another machine's address: refused, said,
	// and the last good candidates stay.
	annotate(t, "wgm-loc-o", map[string]string{wgv1.AnnotationCandidates: "private=198.18.20.1:51820,public=198.18.100.1:51820"})
	mp := waitPeer(t, "wgm-loc-o", func(mp *wgv1.MeshPeer) string {
		return condIs(mp, wgv1.ConditionInvalidAnnotation, metav1.ConditionTrue, `wgmesh.io/candidates="private=198.18.20.1:51820,public=198.18.100.1:51820"`)
	})
	if got := wgv1.FormatCandidatesAnnotation(mp.Spec.Candidates); got != "private=198.18.20.1:51820,observed=198.18.100.20:40001" {
		t.Errorf("candidates after a foreign claim: %s, want the last good ones", got)
	}
	wait.For(t, 10*time.Second, "a Warning InvalidAnnotation Event naming the candidates", func() error {
		e := findEvent(t, "Node", "wgm-loc-o", ReasonInvalidAnnotation)
		if e == nil || !strings.Contains(e.Note, wgv1.AnnotationCandidates) || !strings.Contains(e.Note, "198.18.100.1:51820") {
			return errors.New("no InvalidAnnotation Event naming wgmesh.io/candidates and the value")
		}
		return nil
	})

	// The report goes: so does the observed candidate.
	a, _ = getPeer("wgm-loc-a")
	a.Status.LearnedEndpoints = nil
	if err := testClient.Status().Update(ctx, a, client.FieldOwner("wgmesh-agent")); err != nil {
		t.Fatal(err)
	}
	waitPeer(t, "wgm-loc-o", func(mp *wgv1.MeshPeer) string {
		if wgv1.FormatCandidatesAnnotation(mp.Spec.Candidates) != "private=198.18.20.1:51820" {
			return "observed candidate still there without a report"
		}
		return ""
	})
}

// FuzzObservedCandidates checks the aggregation an attacker meets: never a
// private address of the node or a report without a port; per family at
// most MaxObservedPerFamily, each with the most votes; an endpoint with
// strictly more reporters than any other of its family is the only one
// published (so m liars never displace more than m honest observers); a
// reporter counts once per family; the reporters' order does not matter.
func FuzzObservedCandidates(f *testing.F) {
	f.Add([]byte{0, 1, 1, 1, 2, 2, 3, 1})
	f.Add([]byte{0, 0, 1, 0, 2, 5, 3, 5, 4, 6})
	f.Fuzz(func(t *testing.T, data []byte) {
		eps := []string{"198.18.100.20:40001", "198.18.100.20:40002", "198.18.100.66:1", "[2001:db8:100::20]:40001",
			"[2001:db8:100::66]:1", "198.18.20.1:51820", "198.18.100.21:0"}
		own := []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: "198.18.20.1:51820"}}
		var peers []wgv1.MeshPeer
		for i := 0; i+1 < len(data) && len(peers) < 12; i += 2 {
			name := fmt.Sprintf("r%d", data[i]%8)
			if slices.ContainsFunc(peers, func(p wgv1.MeshPeer) bool { return p.Name == name }) {
				continue
			}
			peers = append(peers, reporter(name, "b="+eps[int(data[i+1])%len(eps)], "b="+eps[int(data[i+1]/16)%len(eps)]))
		}
		nodes := func(n string) (types.UID, bool) { return types.UID("uid-" + n), true }
		got := ObservedCandidates("b", peers, nodes, own)
		votes := map[string]int{}
		for _, p := range peers {
			voted := map[bool]bool{} // one vote per reporter and family: its first usable entry
			for _, l := range p.Status.LearnedEndpoints {
				ap := netip.AddrPortFrom(netip.MustParseAddr(l.Address), uint16(l.Port))
				if l.Port > 0 && !voted[ap.Addr().Is4()] && ap.String() != "198.18.20.1:51820" {
					voted[ap.Addr().Is4()] = true
					votes[ap.String()]++
				}
			}
		}
		for _, v4 := range []bool{true, false} {
			most, leaders := 0, 0
			for ep, n := range votes {
				if netip.MustParseAddrPort(ep).Addr().Is4() != v4 {
					continue
				}
				switch {
				case n > most:
					most, leaders = n, 1
				case n == most:
					leaders++
				}
			}
			var fam []wgv1.Candidate
			for _, c := range got {
				if netip.MustParseAddrPort(string(c.Endpoint)).Addr().Is4() == v4 {
					fam = append(fam, c)
				}
			}
			if len(fam) != min(leaders, MaxObservedPerFamily) {
				t.Fatalf("family v4=%v: %d published (%v), want %d of %d leaders (votes %v)", v4, len(fam), fam, min(leaders, MaxObservedPerFamily), leaders, votes)
			}
			for _, c := range fam {
				if c.Kind != wgv1.CandidateObserved || votes[string(c.Endpoint)] != most {
					t.Fatalf("published %+v with %d votes, the most is %d", c, votes[string(c.Endpoint)], most)
				}
			}
		}
		slices.Reverse(peers)
		if back := ObservedCandidates("b", peers, nodes, own); !slices.Equal(back, got) {
			t.Fatalf("reporters' order matters: %v vs %v", got, back)
		}
	})
}
