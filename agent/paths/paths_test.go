package paths

import (
	"strings"
	"testing"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func c(kind wgv1.CandidateKind, ep string) wgv1.Candidate {
	return wgv1.Candidate{Kind: kind, Endpoint: wgv1.Endpoint(ep)}
}

// Four sites: two clouds with public addresses, two offices behind NAT
// (one seen by others at its NAT's mapping, one not yet).
var (
	cloudA1 = Peer{Location: "cloud-a", Endpoint: "198.18.10.1:51820", Candidates: []wgv1.Candidate{
		c("private", "198.18.10.1:51820"), c("public", "198.18.100.1:51820")}}
	cloudA2 = Peer{Location: "cloud-a", Endpoint: "198.18.10.2:51820", Candidates: []wgv1.Candidate{
		c("public", "198.18.100.2:51820"), c("private", "198.18.10.2:51820")}}
	cloudB = Peer{Location: "cloud-b", Endpoint: "198.18.11.1:51820", Candidates: []wgv1.Candidate{
		c("private", "198.18.11.1:51820"), c("public", "198.18.100.3:51820")}}
	office1 = Peer{Location: "office-1", Endpoint: "198.18.20.1:51820", Candidates: []wgv1.Candidate{
		c("private", "198.18.20.1:51820"), c("observed", "198.18.100.20:40001")}}
	office2 = Peer{Location: "office-2", Endpoint: "198.18.21.1:51820", Candidates: []wgv1.Candidate{
		c("private", "198.18.21.1:51820"), c("observed", "198.18.100.21:40002")}}
	office3 = Peer{Location: "office-3", Endpoint: "198.18.22.1:51820", Candidates: []wgv1.Candidate{
		c("private", "198.18.22.1:51820")}}
	unlabelled  = Peer{Endpoint: "198.18.0.9:51820", Candidates: []wgv1.Candidate{c("private", "198.18.0.9:51820")}}
	oldOperator = Peer{Location: "cloud-a", Endpoint: "198.18.10.7:51820"}
)

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name            string
		local, remote   Peer
		kind            Kind
		endpoint        string
		keepalive       bool
		reasonSubstring string
	}{
		{name: "same location: private", local: cloudA1, remote: cloudA2, kind: KindPrivate, endpoint: "198.18.10.2:51820"},
		{name: "clouds: public", local: cloudA1, remote: cloudB, kind: KindPublic, endpoint: "198.18.100.3:51820"},
		{name: "office to cloud: the cloud's public", local: office1, remote: cloudB, kind: KindPublic, endpoint: "198.18.100.3:51820", keepalive: true},
		{name: "cloud to office: wait for its handshake", local: cloudB, remote: office1, kind: KindPublic},
		{name: "office to office: punched", local: office1, remote: office2, kind: KindPunched, endpoint: "198.18.100.21:40002", keepalive: true},
		{name: "office to office: punched, other side", local: office2, remote: office1, kind: KindPunched, endpoint: "198.18.100.20:40001", keepalive: true},
		{name: "no observed endpoint: relay", local: office1, remote: office3, kind: KindRelayNeeded, reasonSubstring: "the peer has no observed endpoint"},
		{name: "no observed endpoint: relay, other side", local: office3, remote: office1, kind: KindRelayNeeded, reasonSubstring: "this node has no observed endpoint"},
		{name: "no location: spec.endpoint", local: cloudA1, remote: unlabelled, kind: KindEndpoint, endpoint: "198.18.0.9:51820"},
		{name: "no location here: spec.endpoint", local: unlabelled, remote: cloudA1, kind: KindEndpoint, endpoint: "198.18.10.1:51820"},
		{name: "no candidates: spec.endpoint", local: cloudA1, remote: oldOperator, kind: KindEndpoint, endpoint: "198.18.10.7:51820"},
		{name: "same location, other family: public", local: cloudA1,
			remote: Peer{Location: "cloud-a", Candidates: []wgv1.Candidate{c("private", "[2001:db8:10::5]:51820"), c("public", "gw.example.org:51820")}},
			kind:   KindPublic, endpoint: "gw.example.org:51820"},
		{name: "observed equal to a private address is not used", local: office1,
			remote: Peer{Location: "office-9", Candidates: []wgv1.Candidate{c("private", "198.18.23.1:51820"), c("observed", "198.18.23.1:51820")}},
			kind:   KindRelayNeeded},
	} {
		got := Choose(tc.local, tc.remote)
		if got.Kind != tc.kind || got.Endpoint != tc.endpoint || got.Keepalive != tc.keepalive || !strings.Contains(got.Reason, tc.reasonSubstring) {
			t.Errorf("%s: got %+v, want kind %s endpoint %q keepalive %v reason with %q", tc.name, got, tc.kind, tc.endpoint, tc.keepalive, tc.reasonSubstring)
		}
		if back := Choose(tc.remote, tc.local); back.Kind != got.Kind {
			t.Errorf("%s: the other side chooses %s, this one %s", tc.name, back.Kind, got.Kind)
		}
	}
}

// TestWithoutLocationsNothingChanges: with no location labels every peer is
// reached at its spec.endpoint, whatever candidates say.
func TestWithoutLocationsNothingChanges(t *testing.T) {
	for _, p := range []Peer{cloudA1, cloudB, office1, office3} {
		local, remote := p, cloudA2
		local.Location, remote.Location = "", ""
		if got := Choose(local, remote); got != (Path{Kind: KindEndpoint, Endpoint: remote.Endpoint}) {
			t.Errorf("without locations: %+v, want spec.endpoint %s", got, remote.Endpoint)
		}
	}
}
