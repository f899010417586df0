package kubectl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// The trace world: nodes n1 (198.18.0.11, pods 198.19.1.0/24) and n2
// (198.18.0.12, pods 198.19.2.0/24); web/client on n1; db/server-1 on n1 and
// db/server-2 on n2, each serving the container port named pg on its own
// number (5432, 6432) behind Service db/postgres (port 5432 "pg", targetPort
// pg); other/stranger on n2; kube-system/host a host-network pod on n2.
// db isolates its pods for ingress and lets web's clients in on pg;
// web/client may send to namespace db on TCP/5432 only, and to
// 198.18.64.0/24 except 198.18.64.128/25 on TCP/443.

func tracePod(ns, name, node, ip string, labels map[string]string, ports ...corev1.ContainerPort) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "x", Ports: ports}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}},
	}
}

func traceNode(name, addr, cidr string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: addr}}},
	}
}

func traceNamespace(name string, labels map[string]string) *corev1.Namespace {
	l := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

func tcpPort(p intstr.IntOrString) networkingv1.NetworkPolicyPort {
	tcp := corev1.ProtocolTCP
	return networkingv1.NetworkPolicyPort{Protocol: &tcp, Port: &p}
}

func traceSlice(name string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	pg, tcp := "pg", corev1.ProtocolTCP
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "db", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "postgres"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pg, Protocol: &tcp, Port: &port}},
		Endpoints:   eps,
	}
}

func traceEndpoint(ip, pod string, ready bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready},
		TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "db", Name: pod}}
}

// traceWorld is the objects above.
func traceWorld() []client.Object {
	pg := func(n int32) corev1.ContainerPort {
		return corev1.ContainerPort{Name: "pg", Protocol: corev1.ProtocolTCP, ContainerPort: n}
	}
	host := tracePod("kube-system", "host", "n2", "198.18.0.12", map[string]string{"app": "host"})
	host.Spec.HostNetwork = true
	return []client.Object{
		traceNode("n1", "198.18.0.11", "198.19.1.0/24"),
		traceNode("n2", "198.18.0.12", "198.19.2.0/24"),
		traceNamespace("web", map[string]string{"team": "web"}),
		traceNamespace("db", nil),
		traceNamespace("other", nil),
		traceNamespace("kube-system", nil),
		tracePod("web", "client", "n1", "198.19.1.10", map[string]string{"app": "client"}),
		tracePod("db", "server-1", "n1", "198.19.1.20", map[string]string{"app": "db"}, pg(5432)),
		tracePod("db", "server-2", "n2", "198.19.2.20", map[string]string{"app": "db"}, pg(6432)),
		tracePod("other", "stranger", "n2", "198.19.2.30", map[string]string{"app": "client"}),
		host,
		&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "default-deny"},
			Spec:       networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}},
		},
		&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "allow-web"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
				Ingress: []networkingv1.NetworkPolicyIngressRule{{
					From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "web"}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
					}},
					Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromString("pg"))},
				}},
			},
		},
		&networkingv1.NetworkPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "egress"},
			Spec: networkingv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "client"}},
				PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
				Egress: []networkingv1.NetworkPolicyEgressRule{
					{
						To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: "db"}}}},
						Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromInt32(5432))},
					},
					{
						To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "198.18.64.0/24", Except: []string{"198.18.64.128/25"}}}},
						Ports: []networkingv1.NetworkPolicyPort{tcpPort(intstr.FromInt32(443))},
					},
				},
			},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "postgres"},
			Spec: corev1.ServiceSpec{ClusterIP: "198.18.128.10", IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
				Ports: []corev1.ServicePort{{Name: "pg", Protocol: corev1.ProtocolTCP, Port: 5432, TargetPort: intstr.FromString("pg")}}},
		},
		// The EndpointSlice controller makes one slice per resolved port.
		traceSlice("postgres-a", 5432, traceEndpoint("198.19.1.20", "server-1", true)),
		traceSlice("postgres-b", 6432, traceEndpoint("198.19.2.20", "server-2", true), traceEndpoint("198.19.2.99", "server-3", false)),
	}
}

func fakeTraceClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
}

// runTrace parses args as `policy trace` does and traces over c.
func runTrace(t *testing.T, c client.Reader, args ...string) (*traceResult, error) {
	t.Helper()
	_, req, err := parseTrace(args)
	if err != nil {
		return nil, err
	}
	return trace(context.Background(), c, req)
}

func traceText(t *testing.T, res *traceResult) string {
	t.Helper()
	var b bytes.Buffer
	if err := writeTrace(&b, res, ""); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func wantLines(t *testing.T, what, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, text)
		}
	}
}

func TestPolicyTrace(t *testing.T) {
	c := fakeTraceClient(t, traceWorld()...)
	for _, tc := range []struct {
		name    string
		args    []string
		verdict string
		check   func(t *testing.T, res *traceResult)
		text    []string
	}{
		{
			name:    "both sides allow, the named port resolved on the destination pod",
			args:    []string{"--from", "web/client", "--to", "db/server-1", "--port", "pg"},
			verdict: "allowed",
			check: func(t *testing.T, res *traceResult) {
				p := res.Paths[0]
				if p.Port != 5432 || p.Egress.AllowedBy == nil || p.Egress.AllowedBy.Policy != "web/egress" || p.Egress.AllowedBy.Rule != 0 ||
					p.Ingress.AllowedBy == nil || p.Ingress.AllowedBy.Policy != "db/allow-web" || *p.Ingress.AllowedBy.Peer != 0 || *p.Ingress.AllowedBy.Port != 0 {
					t.Errorf("path %+v", p)
				}
				if p.Egress.Node != "n1" || p.Ingress.Node != "n1" || p.Ingress.Pod != "db/server-1" {
					t.Errorf("judged at egress %s/%s, ingress %s/%s", p.Egress.Pod, p.Egress.Node, p.Ingress.Pod, p.Ingress.Node)
				}
			},
			text: []string{
				"Allowed: TCP/pg from pod web/client to pod db/server-1\n",
				"pod web/client (198.19.1.10, node n1) -> pod db/server-1 (198.19.1.20, node n1) TCP/5432: ALLOWED",
				`port: container port "pg" of pod db/server-1 is TCP/5432`,
				"egress: web/client on node n1 is isolated for egress by web/egress: allowed by web/egress egress rule 0",
				"* web/egress egress rule 0: to[0] (namespaceSelector kubernetes.io/metadata.name=db, podSelector {}), ports[0] (TCP/5432)",
				"  web/egress egress rule 1: no to entry matches (ipBlock 198.18.64.0/24 except 198.18.64.128/25), no port matches (TCP/443)",
				"ingress: db/server-1 on node n1 is isolated for ingress by db/allow-web, db/default-deny: allowed by db/allow-web ingress rule 0",
				"* db/allow-web ingress rule 0: from[0] (namespaceSelector team=web, podSelector app=client), ports[0] (TCP/pg)",
				"db/default-deny: no ingress rules (it only isolates)",
			},
		},
		{
			name:    "ingress denied: no rule allows another namespace's pod",
			args:    []string{"--from", "other/stranger", "--to", "db/server-2", "--port", "6432/tcp"},
			verdict: "denied",
			check: func(t *testing.T, res *traceResult) {
				p := res.Paths[0]
				if p.Egress.Reason != "not-isolated" || !p.Egress.Allowed || p.Ingress.Reason != "denied" || p.Ingress.Allowed || p.Ingress.AllowedBy != nil {
					t.Errorf("path %+v", p)
				}
				if len(p.Ingress.Rules) != 1 || p.Ingress.Rules[0].Peer != nil || p.Ingress.Rules[0].Port == nil {
					t.Errorf("rules %+v: want allow-web's rule, its port matching and its peer not", p.Ingress.Rules)
				}
			},
			text: []string{
				"Denied: TCP/6432 from pod other/stranger to pod db/server-2\n",
				"egress: other/stranger on node n2 is not isolated: no NetworkPolicy of namespace other selects it for egress: allowed",
				"ingress: db/server-2 on node n2 is isolated for ingress by db/allow-web, db/default-deny: no rule allows it: denied (dropped by the pod's ingress chain on node n2",
				"  db/allow-web ingress rule 0: no from entry matches (namespaceSelector team=web, podSelector app=client), ports[0] (TCP/pg)",
			},
		},
		{
			name:    "egress denied at the source",
			args:    []string{"--from", "web/client", "--to", "other/stranger", "--port", "80"},
			verdict: "denied",
			text: []string{
				"egress: web/client on node n1 is isolated for egress by web/egress: no rule allows it: denied",
				"ingress: other/stranger on node n2 is not isolated: no NetworkPolicy of namespace other selects it for ingress",
			},
		},
		{
			name:    "a Service: each endpoint judged on its own address and port",
			args:    []string{"--from", "web/client", "--to", "svc/db/postgres", "--port", "5432"},
			verdict: "allowed to 1 of 2 endpoints",
			check: func(t *testing.T, res *traceResult) {
				if s := res.Service; s == nil || s.ClusterIP != "198.18.128.10" || s.TargetPort != "pg" || s.NotReady != 1 {
					t.Errorf("service %+v", res.Service)
				}
				if len(res.Paths) != 2 {
					t.Fatalf("%d paths, want one per ready endpoint", len(res.Paths))
				}
				a, b := res.Paths[0], res.Paths[1]
				if a.Destination.Pod != "db/server-1" || a.Port != 5432 || !a.Allowed {
					t.Errorf("first endpoint %+v", a)
				}
				if b.Destination.Pod != "db/server-2" || b.Port != 6432 || b.Allowed || b.Egress.Allowed || !b.Ingress.Allowed {
					t.Errorf("second endpoint %+v: want egress denied (web/egress allows 5432 only), ingress allowed (pg is 6432 there)", b)
				}
			},
			text: []string{
				"Allowed to 1 of 2 endpoints: TCP/5432 from pod web/client to service db/postgres\n",
				"Service db/postgres: ClusterIP 198.18.128.10, port 5432/TCP (pg) -> targetPort pg; 2 ready endpoints traced after the service NAT (1 not ready)",
				"port: service port 5432/TCP (pg) -> targetPort pg -> TCP/6432 on pod db/server-2",
				"pod web/client (198.19.1.10, node n1) -> pod db/server-2 (198.19.2.20, node n2) TCP/6432: DENIED",
				"Service db/postgres: 1 endpoint not ready",
			},
		},
		{
			name:    "a ClusterIP is traced as its Service",
			args:    []string{"--from", "web/client", "--to", "198.18.128.10", "--port", "5432"},
			verdict: "allowed to 1 of 2 endpoints",
			text: []string{
				"Allowed to 1 of 2 endpoints: TCP/5432 from pod web/client to service db/postgres\n",
				"198.18.128.10 is Service db/postgres's ClusterIP: traced as --to svc/db/postgres",
				"port: service port 5432/TCP (pg) -> targetPort pg -> TCP/6432 on pod db/server-2",
			},
		},
		{
			name:    "an address outside pods: ipBlock",
			args:    []string{"--from", "web/client", "--to", "198.18.64.10", "--port", "443/TCP"},
			verdict: "allowed",
			check: func(t *testing.T, res *traceResult) {
				if in := res.Paths[0].Ingress; in.Reason != "not-a-pod" || in.Rules != nil {
					t.Errorf("ingress %+v: want no ingress side", in)
				}
			},
			text: []string{
				"* web/egress egress rule 1: to[0] (ipBlock 198.18.64.0/24 except 198.18.64.128/25), ports[0] (TCP/443)",
				"ingress: 198.18.64.10 is no pod's address: no NetworkPolicy applies",
			},
		},
		{
			name:    "an address in ipBlock's except",
			args:    []string{"--from", "web/client", "--to", "198.18.64.200", "--port", "443"},
			verdict: "denied",
			text:    []string{"  web/egress egress rule 1: no to entry matches (ipBlock 198.18.64.0/24 except 198.18.64.128/25), ports[0] (TCP/443)"},
		},
		{
			name:    "an address that is a pod's is judged as the pod",
			args:    []string{"--from", "web/client", "--to", "198.19.1.20", "--port", "5432"},
			verdict: "allowed",
			text:    []string{"198.19.1.20 is pod db/server-1's address: judged as that pod", "pod db/server-1 (198.19.1.20, node n1)"},
		},
		{
			name:    "a host-network source is its node: no egress side, its own node's pods always reachable",
			args:    []string{"--from", "kube-system/host", "--to", "db/server-2", "--port", "5432"},
			verdict: "allowed",
			text: []string{
				"egress: host-network pod kube-system/host (node n2's address): NetworkPolicy never selects it; nothing to judge",
				"ingress: traffic between db/server-2 and its own node n2: always allowed",
				"pod kube-system/host uses the host network: NetworkPolicy never selects it, its traffic is node n2's",
			},
		},
		{
			name:    "a host-network source to another node's pod is judged by address",
			args:    []string{"--from", "kube-system/host", "--to", "db/server-1", "--port", "5432"},
			verdict: "denied",
			text: []string{
				"pod kube-system/host (198.19.2.1, node n2, host network) -> pod db/server-1 (198.19.1.20, node n1) TCP/5432: DENIED",
				"ingress: db/server-1 on node n1 is isolated for ingress by db/allow-web, db/default-deny: no rule allows it",
				"node n2's host reaches other nodes' pods from its pod bridge gateway 198.19.2.1 (the source address of its routes through wgmesh0), not 198.18.0.12",
			},
		},
		{
			name:    "a host-network destination has no ingress side",
			args:    []string{"--from", "web/client", "--to", "kube-system/host", "--port", "10250"},
			verdict: "denied",
			text: []string{
				"pod web/client (198.19.1.10, node n1) -> pod kube-system/host (198.18.0.12, node n2, host network) TCP/10250: DENIED",
				"ingress: host-network pod kube-system/host (node n2's address): NetworkPolicy never selects it",
			},
		},
		{
			name:    "a pod reaching itself through its Service",
			args:    []string{"--from", "db/server-1", "--to", "svc/db/postgres", "--port", "pg"},
			verdict: "allowed to 1 of 2 endpoints",
			text:    []string{"ingress: db/server-1 reaches itself: always allowed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := runTrace(t, c, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Verdict != tc.verdict {
				t.Errorf("verdict %q, want %q\n%s", res.Verdict, tc.verdict, traceText(t, res))
			}
			if tc.check != nil {
				tc.check(t, res)
			}
			text := traceText(t, res)
			t.Log("\n" + text)
			wantLines(t, tc.name, text, tc.text...)
		})
	}
}

// TestPolicyTraceJSON: -o json carries the same answer.
func TestPolicyTraceJSON(t *testing.T) {
	res, err := runTrace(t, fakeTraceClient(t, traceWorld()...), "--from", "web/client", "--to", "svc/db/postgres", "--port", "pg/TCP", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := writeTrace(&b, res, "json"); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Verdict string
		Service struct{ TargetPort string }
		Paths   []struct {
			Allowed     bool
			Port        int
			Destination struct{ Pod, Node string }
			Egress      struct {
				Reason     string
				IsolatedBy []string
				AllowedBy  *struct {
					Policy     string
					Rule, Port int
				}
			}
			Ingress struct{ Reason string }
		}
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	if got.Verdict != "allowed to 1 of 2 endpoints" || got.Service.TargetPort != "pg" || len(got.Paths) != 2 {
		t.Fatalf("json %s", b.String())
	}
	p := got.Paths[0]
	if !p.Allowed || p.Port != 5432 || p.Destination.Pod != "db/server-1" || p.Egress.Reason != "allowed-by-rule" ||
		p.Egress.AllowedBy == nil || p.Egress.AllowedBy.Policy != "web/egress" || p.Ingress.Reason != "allowed-by-rule" {
		t.Errorf("first path %+v\n%s", p, b.String())
	}
	if got.Paths[1].Allowed || got.Paths[1].Egress.Reason != "denied" || got.Paths[1].Egress.AllowedBy != nil {
		t.Errorf("second path %+v", got.Paths[1])
	}
}

// TestPolicyTraceErrors: each error names the flag, the object and the
// field.
func TestPolicyTraceErrors(t *testing.T) {
	pending := tracePod("web", "pending", "n1", "", nil)
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	done := tracePod("web", "done", "n1", "198.19.1.50", nil)
	done.Status.Phase = corev1.PodSucceeded
	ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "db", Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example"}}
	c := fakeTraceClient(t, append(traceWorld(), pending, done, ext)...)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "web/nobody", "--to", "db/server-1", "--port", "80"}, "--from: pod web/nobody not found"},
		{[]string{"--from", "web/client", "--to", "db/nobody", "--port", "80"}, "--to: pod db/nobody not found"},
		{[]string{"--from", "web/pending", "--to", "db/server-1", "--port", "80"}, "--from: pod web/pending has no address yet (status.podIPs is empty, status.phase Pending)"},
		{[]string{"--from", "web/client", "--to", "web/done", "--port", "80"}, "--to: pod web/done has finished (status.phase Succeeded)"},
		{[]string{"--from", "web/client", "--to", "db/server-1", "--port", "80/ICMP"}, `--port 80/ICMP: protocol "ICMP" is not supported: want TCP, UDP or SCTP`},
		{[]string{"--from", "web/client", "--to", "db/server-1", "--port", "70000"}, "--port 70000: 70000 is out of range: want 1-65535 or a port name"},
		{[]string{"--from", "web/client", "--to", "db/server-1", "--port", "http_x"}, `--port http_x: "http_x" is neither a port number nor a port name`},
		{[]string{"--from", "web/client", "--to", "db/server-1", "--port", "http"}, `--port TCP/http: pod db/server-1 has no TCP container port named "http" (spec.containers[*].ports: pg=TCP/5432)`},
		{[]string{"--from", "web/client", "--to", "db/server-1", "--port", "pg/UDP"}, `pod db/server-1 has no UDP container port named "pg"`},
		{[]string{"--from", "web/client", "--to", "198.18.64.1", "--port", "pg"}, "--port pg: a port name resolves on a pod or a Service, and --to 198.18.64.1 is an address: give a number"},
		{[]string{"--from", "web/client", "--to", "2001:db8::1", "--port", "80"}, "pod web/client (addresses [198.19.1.10]) and 2001:db8::1 (addresses [2001:db8::1]) have no address family in common"},
		{[]string{"--from", "web/client", "--to", "svc/db/nothing", "--port", "80"}, "--to svc/db/nothing: Service db/nothing not found"},
		{[]string{"--from", "web/client", "--to", "svc/db/postgres", "--port", "80"}, "--port TCP/80: Service db/postgres has no such port (spec.ports: 5432/TCP (pg))"},
		{[]string{"--from", "web/client", "--to", "svc/db/ext", "--port", "80"}, "Service db/ext is of type ExternalName (db.example): it has no endpoints to trace"},
		{[]string{"--from", "client", "--to", "db/server-1", "--port", "80"}, "--from client: want NAMESPACE/POD"},
		{[]string{"--from", "web/client", "--to", "server-1", "--port", "80"}, "--to server-1: want NAMESPACE/POD, an IP address or svc/NAMESPACE/NAME"},
		{[]string{"--from", "web/client", "--to", "svc/db", "--port", "80"}, "--to svc/db: want svc/NAMESPACE/NAME"},
		{[]string{"--from", "Web/client", "--to", "db/server-1", "--port", "80"}, `--from Web/client: namespace "Web" is not valid`},
		{[]string{"--from", "web/client", "--to", "db/server-1"}, "--from, --to and --port are required"},
		{[]string{"--from", "web/client", "--to", "db/server-1", "--port", "80", "-o", "yaml"}, "-o yaml: want text or json"},
	} {
		_, err := runTrace(t, c, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// TestPolicyTraceNamespaceUnreadable: a namespace the user may not read is
// judged with only its kubernetes.io/metadata.name label when no policy
// selects peers by namespace labels (said in a note), and refused when one
// does: the verdict would depend on labels not seen.
func TestPolicyTraceNamespaceUnreadable(t *testing.T) {
	forbidden := func(objs ...client.Object) client.Client {
		scheme := runtime.NewScheme()
		if err := clientgoscheme.AddToScheme(scheme); err != nil {
			t.Fatal(err)
		}
		return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*corev1.Namespace); ok {
					return apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, key.Name, errors.New("no RBAC"))
				}
				return c.Get(ctx, key, obj, opts...)
			}}).Build()
	}
	var bySelector []client.Object
	for _, o := range traceWorld() {
		if np, ok := o.(*networkingv1.NetworkPolicy); ok && np.Name != "default-deny" {
			continue // allow-web and egress select by namespace labels
		}
		bySelector = append(bySelector, o)
	}
	res, err := runTrace(t, forbidden(bySelector...), "--from", "web/client", "--to", "db/server-1", "--port", "5432")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verdict != "denied" {
		t.Errorf("verdict %q, want denied (db/default-deny)", res.Verdict)
	}
	wantLines(t, "no namespaceSelector", traceText(t, res), `namespace db cannot be read (namespaces "db" is forbidden: no RBAC): judged with only its kubernetes.io/metadata.name label (no policy here selects by namespace labels)`)

	_, err = runTrace(t, forbidden(traceWorld()...), "--from", "web/client", "--to", "db/server-1", "--port", "5432")
	if want := `reading namespace db: namespaces "db" is forbidden: no RBAC; NetworkPolicy db/allow-web selects peers by namespace labels (spec.ingress[0].from[0].namespaceSelector), so the verdict depends on them`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}
