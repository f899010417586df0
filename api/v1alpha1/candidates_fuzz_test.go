package v1alpha1

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FuzzCheckOwnCandidates: never panics; what it accepts is at most
// MaxAnnouncedCandidates private or public candidates, each IP:port (as
// ParseCandidate and the CRD take it) whose address is one of the Node's
// InternalIP or ExternalIP addresses or whose endpoint is its
// force-endpoint; formatting them and parsing again gives them back; a
// refusal names the Node and the annotation.
func FuzzCheckOwnCandidates(f *testing.F) {
	f.Add("private=198.18.10.5:51820,public=198.18.100.5:51820", "198.18.10.5", "198.18.100.5", "")
	f.Add("public=[2001:db8::5]:51820", "198.18.10.5", "2001:db8:0::5", "")
	f.Add("private=198.18.10.6:51820", "198.18.10.5", "", "198.18.10.6:51820")
	f.Add("observed=198.18.10.5:1", "198.18.10.5", "", "")
	f.Add("private=[::ffff:198.18.10.5]:1,,", "::ffff:198.18.10.5", "", "")
	f.Fuzz(func(t *testing.T, value, internal, external, force string) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
		if force != "" {
			n.Annotations = map[string]string{AnnotationForceEndpoint: force}
		}
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internal}, {Type: corev1.NodeExternalIP, Address: external}}
		cs, err := CheckOwnCandidates(n, value)
		if err != nil {
			if !strings.Contains(err.Error(), "Node n1 annotation "+AnnotationCandidates) {
				t.Fatalf("refusal does not name the Node and annotation: %v", err)
			}
			return
		}
		if len(cs) > MaxAnnouncedCandidates {
			t.Fatalf("accepted %d candidates", len(cs))
		}
		own := NodeAddrs(n)
		for _, c := range cs {
			if c.Kind != CandidatePrivate && c.Kind != CandidatePublic {
				t.Fatalf("accepted kind %q", c.Kind)
			}
			hp, err := ParseCandidate(c)
			if err != nil || !hp.Addr.IsValid() {
				t.Fatalf("accepted %+v, which ParseCandidate refuses or is no IP: %v", c, err)
			}
			if string(c.Endpoint) != force && !slices.Contains(own, hp.Addr.Unmap()) {
				t.Fatalf("accepted %s, not among the Node's own %v", c.Endpoint, own)
			}
			if _, err := netip.ParseAddrPort(string(c.Endpoint)); err != nil {
				t.Fatalf("accepted %s, which is not IP:port: %v", c.Endpoint, err)
			}
		}
		back, err := ParseCandidatesAnnotation(FormatCandidatesAnnotation(cs))
		if err != nil || !slices.Equal(back, cs) {
			t.Fatalf("%v formats and parses back as %v (%v)", cs, back, err)
		}
	})
}
