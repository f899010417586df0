package kubectl

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./plugin -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the output:\n--- got ---\n%s\n--- want ---\n%s", path, got, want)
	}
}

// Keys of the test peers (public keys; the private one is the laptop's).
const (
	keyN0     = "195o3xy/nVV+h0ONJATXmDRqXglnopEYc7G8a+dQMwE="
	keyN1     = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	keyN2     = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
	keyN3     = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
	keyN4     = "gN65BkIKy1eCE9pP1wdc8ROUtkHLF2PfAqYdyYBz6EA="
	laptopKey = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
)

// nodePeer is a node MeshPeer as the operator writes it, with an agent's
// Ready condition.
func meshNodePeer(name, key, endpoint string, cidrs ...string) wgmeshv1.MeshPeer {
	mp := wgmeshv1.MeshPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: name, UID: types.UID("uid-" + name), Controller: ptr(true)}}},
		Spec: wgmeshv1.MeshPeerSpec{NodeName: name, PublicKey: wgmeshv1.PublicKey(key), Endpoint: wgmeshv1.Endpoint(endpoint)},
		Status: wgmeshv1.MeshPeerStatus{Conditions: []metav1.Condition{
			{Type: wgmeshv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Configured"}}},
	}
	for _, c := range cidrs {
		mp.Spec.AllowedIPs = append(mp.Spec.AllowedIPs, wgmeshv1.CIDR(c))
	}
	return mp
}

func ptr[T any](v T) *T { return &v }

func withCondition(mp wgmeshv1.MeshPeer, typ, msg string) wgmeshv1.MeshPeer {
	mp.Status.Conditions = append(mp.Status.Conditions, metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: typ, Message: msg})
	return mp
}

func nodeUIDsOf(peers []wgmeshv1.MeshPeer) func(string) (types.UID, bool) {
	return func(name string) (types.UID, bool) {
		for _, p := range peers {
			if p.Name == name && p.Spec.NodeName == name {
				return types.UID("uid-" + name), true
			}
		}
		return "", false
	}
}

func testMesh() []wgmeshv1.MeshPeer {
	n2 := meshNodePeer("n2", keyN2, "198.18.0.12:51820", "198.19.2.0/24", "2001:db8:100:2::/64")
	n2.Status.Conditions = nil // its agent has not reported yet
	n0 := meshNodePeer("n0", keyN0, "198.18.1.11:51820", "198.19.0.0/24")
	n0.Spec.PersistentKeepalive = ptr(int32(5)) // behind NAT, announcing its private address
	return []wgmeshv1.MeshPeer{
		n2,
		n0,
		meshNodePeer("n1", keyN1, "198.18.0.11:51820", "198.19.1.0/24", "2001:db8:100:1::/64"),
		meshNodePeer("n3", keyN3, "", "198.19.3.0/24"),
		withCondition(meshNodePeer("n4", keyN4, "198.18.0.14:51820", "198.19.4.0/24"), wgmeshv1.ConditionKeyConflict, "the same key is announced by MeshPeers n4, x"),
		{ObjectMeta: metav1.ObjectMeta{Name: "other-laptop"}, Spec: wgmeshv1.MeshPeerSpec{PublicKey: keyN4, AllowedIPs: []wgmeshv1.CIDR{"198.18.201.1/32"}}},
	}
}

func laptop(endpoint string, allowed ...string) *wgmeshv1.MeshPeer {
	pub, _ := publicKeyOf(laptopKey)
	mp := &wgmeshv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "laptop"},
		Spec: wgmeshv1.MeshPeerSpec{PublicKey: wgmeshv1.PublicKey(pub), Endpoint: wgmeshv1.Endpoint(endpoint)}}
	for _, a := range allowed {
		mp.Spec.AllowedIPs = append(mp.Spec.AllowedIPs, wgmeshv1.CIDR(a))
	}
	return mp
}

var testServices = serviceCIDRs{CIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.128.0/20"), netip.MustParsePrefix("2001:db8:200::/112")},
	Source: "from ServiceCIDR kubernetes"}

func TestRenderConf(t *testing.T) {
	peers := testMesh()
	base := confInput{Peers: peers, NodeUIDs: nodeUIDsOf(peers), Services: testServices, Keepalive: 25, PrivateKey: laptopKey}

	// A laptop without endpoint: the NAT node n3 and the excluded n4 are
	// left out with the reason; services go via n1, the first Ready node
	// with an endpoint that does not keep a NAT mapping open (n0 does, n2
	// has not reported Ready).
	in := base
	in.Peer = laptop("", "198.18.200.1/32", "2001:db8:300::1/128")
	got, err := renderConf(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "laptop.conf", got)

	// A gateway with an endpoint and a subnet: the NAT node is a peer
	// without Endpoint (it starts the handshake); --service-via n2.
	in = base
	in.Peer = laptop("gw.example.org:51821", "198.18.200.0/24")
	in.ServiceVia, in.PrivateKey, in.Keepalive = "n2", "", 0
	got, err = renderConf(in)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "gateway.conf", got)
}

func TestRenderConfRefuses(t *testing.T) {
	peers := testMesh()
	base := confInput{Peer: laptop("", "198.18.200.1/32"), Peers: peers, NodeUIDs: nodeUIDsOf(peers), Services: testServices}
	for _, tc := range []struct {
		name string
		mod  func(*confInput)
		want string
	}{
		{"via NAT node", func(in *confInput) { in.ServiceVia = "n3" }, "--service-via=n3: node n3 is left out of this peer's configuration: no endpoint"},
		{"via excluded node", func(in *confInput) { in.ServiceVia = "n4" }, "--service-via=n4: node n4 is left out of this peer's configuration: excluded from the mesh by condition KeyConflict"},
		{"via unknown node", func(in *confInput) { in.ServiceVia = "n9" }, "--service-via=n9: no node MeshPeer n9 (nodes: n0, n1, n2, n3, n4)"},
		{"via an external peer", func(in *confInput) { in.ServiceVia = "other-laptop" }, "--service-via=other-laptop: no node MeshPeer other-laptop"},
		{"no usable node", func(in *confInput) { in.Peers = []wgmeshv1.MeshPeer{peers[3]} }, "no node MeshPeer can be a peer of laptop: n3: no endpoint"},
		{"no nodes", func(in *confInput) { in.Peers = nil }, "there are no node MeshPeers yet"},
		{"excluded peer", func(in *confInput) {
			p := withCondition(*in.Peer, wgmeshv1.ConditionAllowedIPsConflict, "198.18.200.1/32 overlaps ...")
			in.Peer = &p
		}, "MeshPeer laptop is left out of the mesh by condition AllowedIPsConflict"},
	} {
		in := base
		tc.mod(&in)
		_, err := renderConf(in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestRenderConfNoServices(t *testing.T) {
	peers := testMesh()
	got, err := renderConf(confInput{Peer: laptop("", "198.18.200.1/32"), Peers: peers, NodeUIDs: nodeUIDsOf(peers),
		Services: serviceCIDRs{Source: "no agent DaemonSet argument or ServiceCIDR object found"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Service CIDRs: none routed (no agent DaemonSet argument or ServiceCIDR object found); pass --service-cidrs",
		"AllowedIPs = 198.19.1.0/24, 2001:db8:100:1::/64\n", "PrivateKey = " + privateKeyPlaceholder} {
		if !strings.Contains(got, want) {
			t.Errorf("configuration lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "PersistentKeepalive") {
		t.Errorf("keepalive 0 still writes PersistentKeepalive:\n%s", got)
	}
}

func TestInterfaceAddress(t *testing.T) {
	for in, want := range map[string]string{"198.18.200.1/32": "198.18.200.1/32", "198.18.200.0/24": "198.18.200.1/24",
		"2001:db8:300::/64": "2001:db8:300::1/64", "2001:db8:300::5/128": "2001:db8:300::5/128"} {
		if got := interfaceAddress(netip.MustParsePrefix(in)).String(); got != want {
			t.Errorf("interfaceAddress(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestRenderConfWithLocations: a peer with a location and candidates is
// configured with the endpoint its path to each node takes (the node
// chooses the same): a node's public candidate across locations, its
// private one inside the peer's location, never a private address across.
func TestRenderConfWithLocations(t *testing.T) {
	n1 := meshNodePeer("n1", keyN1, "198.18.10.1:51820", "198.19.1.0/24")
	n1.Spec.Location = "cloud-a"
	n1.Spec.Candidates = []wgmeshv1.Candidate{{Kind: "private", Endpoint: "198.18.10.1:51820"}, {Kind: "public", Endpoint: "198.18.100.1:51820"}}
	n2 := meshNodePeer("n2", keyN2, "198.18.20.2:51820", "198.19.2.0/24")
	n2.Spec.Location = "office-1"
	n2.Spec.Candidates = []wgmeshv1.Candidate{{Kind: "private", Endpoint: "198.18.20.2:51820"}}
	peers := []wgmeshv1.MeshPeer{n1, n2}
	lp := laptop("", "198.18.200.1/32")
	lp.Spec.Location = "office-1"
	lp.Spec.Candidates = []wgmeshv1.Candidate{{Kind: "private", Endpoint: "198.18.20.50:51820"}}
	got, err := renderConf(confInput{Peer: lp, Peers: peers, NodeUIDs: nodeUIDsOf(peers), Services: serviceCIDRs{Source: "none"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Endpoint = 198.18.100.1:51820\n", "Endpoint = 198.18.20.2:51820\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("configuration lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "198.18.10.1:51820") {
		t.Errorf("a private address across locations:\n%s", got)
	}
}
