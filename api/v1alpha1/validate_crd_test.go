package v1alpha1_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// TestCRDMessagesUseTheValidatorsWords: the CRD's CEL messages describe what
// is accepted in the same words as the Go validators (one input, one
// description).
func TestCRDMessagesUseTheValidatorsWords(t *testing.T) {
	crd, err := os.ReadFile(filepath.Join("..", "..", "charts", "wgmesh", "crds", "wgmesh.io_meshpeers.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(crd)), " ") // YAML folds long lines
	for _, want := range []string{wgv1.WantPublicKey, wgv1.WantEndpoint, wgv1.WantCIDR, wgv1.WantLocation, wgv1.WantEndpointIP} {
		if !strings.Contains(text, want) {
			t.Errorf("the CRD has no message with %q", want)
		}
	}
}

// TestCRDAndValidatorsAgree asks the real API server (the CRD's CEL rules)
// and the Go validators the agent and operator use about the same inputs:
// both accept or both refuse.
func TestCRDAndValidatorsAgree(t *testing.T) {
	needAPI(t)
	const key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	endpoints := []string{"198.18.0.1:51820", "[2001:db8::1]:51820", "gw.example.org:443", "a:1", "198.18.0.1:65535",
		"198.18.0.1:0", "198.18.0.1:65536", "198.18.0.1", "2001:db8::1:51820", "[198.18.0.1]:51820", "-bad.example:1",
		"bad-.example:1", "gw..example:1", "300.1.1.1:51820", "gw:https", ":51820", "[::ffff:198.18.0.1]:1", "[fe80::1%eth0]:1",
		"gw.example.org:0051820", strings.Repeat("a", 64) + ".example:1", "1.2.3:1", "a_b.example:1"}
	for i, ep := range endpoints {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{GenerateName: "wgm-diff-ep-"}, Spec: wgv1.MeshPeerSpec{PublicKey: key, Endpoint: wgv1.Endpoint(ep)}}
		apiErr := testClient.Create(context.Background(), mp, client.DryRunAll)
		_, goErr := wgv1.ParseEndpoint(ep, true)
		if (apiErr == nil) != (goErr == nil) {
			t.Errorf("endpoint %d %q: API server says %v, wgv1.ParseEndpoint says %v", i, ep, apiErr, goErr)
		}
	}
	cidrs := []string{"198.18.0.0/24", "198.18.0.1/24", "2001:db8::/64", "2001:db8::1/64", "0.0.0.0/0", "::/0", "198.18.0.0/33",
		"198.18.0.0", "::ffff:198.18.0.0/120", "2001:DB8::/64", "198.018.0.0/24", "198.18.0.0/024"}
	for i, c := range cidrs {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{GenerateName: "wgm-diff-cidr-"}, Spec: wgv1.MeshPeerSpec{PublicKey: key, AllowedIPs: []wgv1.CIDR{wgv1.CIDR(c)}}}
		apiErr := testClient.Create(context.Background(), mp, client.DryRunAll)
		_, goErr := wgv1.ParseCIDR(c)
		if (apiErr == nil) != (goErr == nil) {
			t.Errorf("CIDR %d %q: API server says %v, wgv1.ParseCIDR says %v", i, c, apiErr, goErr)
		}
	}
	keys := []string{key, "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh=", "AAAA", strings.Repeat("A", 43) + "=", strings.Repeat("!", 43) + "="}
	for i, k := range keys {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{GenerateName: "wgm-diff-key-"}, Spec: wgv1.MeshPeerSpec{PublicKey: wgv1.PublicKey(k)}}
		apiErr := testClient.Create(context.Background(), mp, client.DryRunAll)
		goErr := wgv1.ParsePublicKey(k)
		if (apiErr == nil) != (goErr == nil) {
			t.Errorf("key %d %q: API server says %v, wgv1.ParsePublicKey says %v", i, k, apiErr, goErr)
		}
	}
}

// TestCRDAndValidatorsAgreeOnLocationsAndCandidates: spec.location and
// spec.candidates are judged alike by the CRD and by wgv1.ParseLocation and
// wgv1.ParseCandidate.
func TestCRDAndValidatorsAgreeOnLocationsAndCandidates(t *testing.T) {
	needAPI(t)
	const key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
	locations := []string{"eu-west-1", "office.berlin", "a", "A_b-c.d", strings.Repeat("a", 63), strings.Repeat("a", 64),
		"-a", "a-", "a b", "a/b", "ä", ".a", "a_"}
	for i, l := range locations {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{GenerateName: "wgm-diff-loc-"}, Spec: wgv1.MeshPeerSpec{PublicKey: key, Location: wgv1.Location(l)}}
		apiErr := testClient.Create(context.Background(), mp, client.DryRunAll)
		goErr := wgv1.ParseLocation(l)
		if (apiErr == nil) != (goErr == nil) {
			t.Errorf("location %d %q: API server says %v, wgv1.ParseLocation says %v", i, l, apiErr, goErr)
		}
	}
	cands := []wgv1.Candidate{
		{Kind: "private", Endpoint: "198.18.10.5:51820"}, {Kind: "public", Endpoint: "gw.example.org:51820"},
		{Kind: "observed", Endpoint: "[2001:db8::5]:40000"}, {Kind: "private", Endpoint: "gw.example.org:51820"},
		{Kind: "observed", Endpoint: "gw.example.org:1"}, {Kind: "relay", Endpoint: "198.18.10.5:51820"},
		{Kind: "public", Endpoint: "198.18.10.5:0"}, {Kind: "private", Endpoint: "300.1.1.1:1"}, {Kind: "", Endpoint: "198.18.10.5:1"},
	}
	for i, c := range cands {
		mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{GenerateName: "wgm-diff-cand-"}, Spec: wgv1.MeshPeerSpec{PublicKey: key, Candidates: []wgv1.Candidate{c}}}
		apiErr := testClient.Create(context.Background(), mp, client.DryRunAll)
		_, goErr := wgv1.ParseCandidate(c)
		if (apiErr == nil) != (goErr == nil) {
			t.Errorf("candidate %d %+v: API server says %v, wgv1.ParseCandidate says %v", i, c, apiErr, goErr)
		}
	}
	many := make([]wgv1.Candidate, 17)
	for i := range many {
		many[i] = wgv1.Candidate{Kind: wgv1.CandidatePrivate, Endpoint: wgv1.Endpoint(fmt.Sprintf("198.18.10.%d:51820", i+1))}
	}
	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{GenerateName: "wgm-diff-cand-"}, Spec: wgv1.MeshPeerSpec{PublicKey: key, Candidates: many}}
	if err := testClient.Create(context.Background(), mp, client.DryRunAll); err == nil {
		t.Errorf("17 candidates accepted; the CRD allows at most 16")
	}
	mp.Spec.Candidates = many[:1]
	mp.Spec.Candidates[0].Endpoint = "gw.example.org:51820"
	err := testClient.Create(context.Background(), mp, client.DryRunAll)
	if err == nil || !strings.Contains(err.Error(), "candidates endpoint gw.example.org:51820 of kind private") {
		t.Errorf("a private candidate with a DNS name: got %v, want a message naming the field, kind and value", err)
	}
}
