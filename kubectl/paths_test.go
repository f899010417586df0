package kubectl

import (
	"bytes"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func nodePeer(name, location string, cands ...string) wgmeshv1.MeshPeer {
	yes := true
	p := wgmeshv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "v1", Kind: "Node", Name: name, Controller: &yes}}},
		Spec: wgmeshv1.MeshPeerSpec{NodeName: name, Location: wgmeshv1.Location(location)}}
	for i := 0; i+1 < len(cands); i += 2 {
		p.Spec.Candidates = append(p.Spec.Candidates, wgmeshv1.Candidate{Kind: wgmeshv1.CandidateKind(cands[i]), Endpoint: wgmeshv1.Endpoint(cands[i+1])})
	}
	return p
}

// TestPairPaths: the status counts node pairs by path, each pair once, and
// names those punched, relayed (with the relay) or needing a relay that
// none can be; external peers are not pairs.
func TestPairPaths(t *testing.T) {
	peers := []wgmeshv1.MeshPeer{
		nodePeer("c1", "cloud-a", "private", "198.18.10.1:51820", "public", "198.18.100.1:51820"),
		nodePeer("c2", "cloud-a", "private", "198.18.10.2:51820", "public", "198.18.100.2:51820"),
		nodePeer("o1", "office-1", "private", "198.18.20.1:51820", "observed", "198.18.100.20:40001"),
		nodePeer("o2", "office-2", "private", "198.18.21.1:51820", "observed", "198.18.100.21:40002"),
		nodePeer("o3", "office-3", "private", "198.18.22.1:51820"),
		{ObjectMeta: metav1.ObjectMeta{Name: "laptop"}, Spec: wgmeshv1.MeshPeerSpec{Location: "office-1"}},
	}
	// c1-c2 private; c*-o* public (6); o1-o2 punched; o1-o3, o2-o3 relayed
	// by c1 (preferred).
	peers[0].Spec.Relay = wgmeshv1.RelayPrefer
	sum := pairPaths(peers)
	if got := sum.Counts; got["private"] != 1 || got["public"] != 6 || got["punched"] != 1 || got["relayed"] != 2 || len(got) != 4 {
		t.Errorf("counts %v", got)
	}
	var out bytes.Buffer
	if err := writePaths(&out, sum); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Paths between node pairs: private 1, public 6, punched 1, relayed 2",
		"o1    o2    punched  o1 sends to 198.18.100.21:40002, o2 to 198.18.100.20:40001",
		"o1    o3    relayed  through c1: relay needed (office-1 to office-3): neither has a public candidate and the peer has no observed endpoint"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// Neither cloud node may relay: the pairs need a relay and have none.
	peers[0].Spec.Relay, peers[1].Spec.Relay = wgmeshv1.RelayNever, wgmeshv1.RelayNever
	out.Reset()
	if err := writePaths(&out, pairPaths(peers)); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"punched 1, relay-needed 2", "o2    o3    relay-needed  relay needed (office-2 to office-3)", "no node can relay"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := writePaths(&out, pairPaths([]wgmeshv1.MeshPeer{nodePeer("a", ""), nodePeer("b", "")})); err != nil || out.Len() != 0 {
		t.Errorf("without locations the section is left out, got %q (%v)", out.String(), err)
	}
}
