package netpol

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// TestExplain: every rule of the isolating policies judged, what matched
// named as the policy writes it, what missed said.
func TestExplain(t *testing.T) {
	xa, yb := testPod("x/a"), testPod("y/b")
	o := Objects{
		Namespaces: []corev1.Namespace{testNamespace("x"), testNamespace("y")},
		Pods:       []corev1.Pod{xa, yb},
		Policies: []networkingv1.NetworkPolicy{
			*policy("x", "web", []string{"pod", "a"}, ingress(
				in(peers(podPeer(labelSel("pod", "c"))), port(pTCP, 80)),
				in(peers(blockPeer("10.244.0.0/16", "10.244.2.0/24"), podNsPeer(labelSel("pod", "b"), labelSel(nsName, "y"))), port(pTCP, 81), port(pTCP, "serve-80-tcp")),
			)),
			*policy("x", "deny", nil, ingress()),
		},
	}
	c := FromAPI(o)
	conn := Conn{Src: podIP("y", "b", false), Dst: podIP("x", "a", false), Proto: TCP, DPort: 80}
	e := Explain(c, conn)
	if !e.Allowed || e.Ingress.Match == nil || e.Ingress.Match.String() != "x/web ingress rule 1 (from[1], ports[1])" {
		t.Fatalf("verdict %v", e.Verdict)
	}
	var got []string
	pols := map[string]*Policy{}
	for _, p := range c.Policies {
		pols[p.Key()] = p
	}
	for _, rc := range e.IngressRules {
		got = append(got, rc.Policy+" "+rc.Describe(pols[rc.Policy].Rules(Ingress)[rc.Rule]))
	}
	want := []string{
		"x/web no from entry matches (podSelector pod=c), ports[0] (TCP/80)",
		"x/web from[1] (namespaceSelector kubernetes.io/metadata.name=y, podSelector pod=b), ports[1] (TCP/serve-80-tcp)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("ingress rules:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e.EgressRules != nil || e.Egress.Reason != NotIsolated {
		t.Errorf("egress: %v, rules %v; want not isolated and no rules", e.Egress, e.EgressRules)
	}
	if s := pols["x/web"].IngressRules[1].Peers[0].String(); s != "ipBlock 10.244.0.0/16 except 10.244.2.0/24" {
		t.Errorf("ipBlock peer shows as %q", s)
	}
	if s := pols["x/web"].IngressRules[0].Peers[0].String(); s != "podSelector pod=c" {
		t.Errorf("podSelector peer shows as %q", s)
	}

	// On port 82: rule 1's selector matches y/b (its ipBlock does not:
	// except), no port does.
	conn.DPort = 82
	e = Explain(c, conn)
	if e.Allowed || e.Ingress.Reason != Denied || len(e.IngressRules) != 2 || e.IngressRules[1].PeerMatches != true || e.IngressRules[1].PortMatches {
		t.Errorf("port 82: %v %+v", e.Verdict, e.IngressRules)
	}
}
