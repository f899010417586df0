package kubectl

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/podnet"
)

// What `policy trace` reads and judges. It reads only what the verdict
// depends on: the pods at both ends, their namespaces (labels, for
// namespaceSelector), the NetworkPolicies of those namespaces (a policy
// selects pods of its own namespace only), the Nodes (whose hosts are
// always allowed to reach their own pods) and, for a Service, the Service
// and its EndpointSlices; then netpol.FromAPI and netpol.Explain, the
// model the agents render their rules from.

// traceResult is the answer, printed as text or JSON.
type traceResult struct {
	// Verdict: allowed, denied, "allowed to N of M endpoints", or "no ready
	// endpoints".
	Verdict string        `json:"verdict"`
	From    string        `json:"from"`
	To      string        `json:"to"`
	Port    string        `json:"port"`
	Service *traceService `json:"service,omitempty"`
	Paths   []tracePath   `json:"paths"`
	Notes   []string      `json:"notes,omitempty"`
	allowed int
}

// traceService is a Service target and the port the client connects to.
type traceService struct {
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	ClusterIP  string `json:"clusterIP"`
	Port       int32  `json:"port"`
	PortName   string `json:"portName,omitempty"`
	Protocol   string `json:"protocol"`
	TargetPort string `json:"targetPort"`
	// NotReady counts the endpoints left out: the service NAT sends
	// nothing to them.
	NotReady int `json:"notReadyEndpoints,omitempty"`
}

// tracePath is one connection judged: to the pod or address, or to one
// endpoint of the Service.
type tracePath struct {
	Source      traceEnd `json:"source"`
	Destination traceEnd `json:"destination"`
	Protocol    string   `json:"protocol"`
	Port        uint16   `json:"port"`
	// PortMapping says how the port was found: a named port on the pod, a
	// Service port to the endpoint's.
	PortMapping string    `json:"portMapping,omitempty"`
	Allowed     bool      `json:"allowed"`
	Egress      traceSide `json:"egress"`
	Ingress     traceSide `json:"ingress"`
}

// traceEnd is one end of a connection.
type traceEnd struct {
	Address     string `json:"address"`
	Pod         string `json:"pod,omitempty"`
	Node        string `json:"node,omitempty"`
	HostNetwork bool   `json:"hostNetwork,omitempty"`
	// NodeHost is the node whose host the address is (a host-network pod's
	// or a node's address).
	NodeHost string `json:"nodeHost,omitempty"`
}

// traceSide is one direction's decision.
type traceSide struct {
	Direction string `json:"direction"`
	Allowed   bool   `json:"allowed"`
	// Reason: not-a-pod, not-isolated, allowed-by-rule, denied, self,
	// own-node.
	Reason string `json:"reason"`
	// Pod and Node: where the direction is judged.
	Pod  string `json:"pod,omitempty"`
	Node string `json:"node,omitempty"`
	// IsolatedBy are the policies selecting Pod in this direction.
	IsolatedBy []string `json:"isolatedBy,omitempty"`
	// AllowedBy is the first rule allowing the connection.
	AllowedBy *traceRule `json:"allowedBy,omitempty"`
	// Rules are every rule of the isolating policies, judged.
	Rules   []traceRule `json:"rules,omitempty"`
	Summary string      `json:"summary"`
}

// traceRule is one rule judged.
type traceRule struct {
	Policy string `json:"policy"`
	Rule   int    `json:"rule"`
	// Peer and Port are the indexes in from/to and ports that match (-1:
	// the rule has none, so any matches); absent when none matches.
	Peer    *int   `json:"peer,omitempty"`
	Port    *int   `json:"port,omitempty"`
	Matches bool   `json:"matches"`
	Text    string `json:"text"`
}

// traceObjects collects what the verdict depends on.
type traceObjects struct {
	ctx        context.Context
	c          client.Reader
	objs       netpol.Objects
	pods       map[objectRef]*corev1.Pod
	namespaces map[string]bool
	notes      []string
}

func trace(ctx context.Context, c client.Reader, req traceRequest) (*traceResult, error) {
	t := &traceObjects{ctx: ctx, c: c, pods: map[objectRef]*corev1.Pod{}, namespaces: map[string]bool{}}
	res := &traceResult{From: "pod " + req.From.String(), To: req.To.String(), Port: req.Port.String()}
	src, err := t.pod("--from", req.From)
	if err != nil {
		return nil, err
	}
	type dest struct {
		addr    netip.Addr
		pod     *corev1.Pod
		port    uint16
		mapping string
	}
	var dests []dest
	if req.To.IP.IsValid() {
		// Policy never sees a ClusterIP: the service NAT has replaced it.
		ref, err := t.serviceWithIP(req.To.IP)
		if err != nil {
			return nil, err
		}
		if ref != nil {
			t.note("%s is Service %s's ClusterIP: traced as --to svc/%s", req.To.IP, ref, ref)
			req.To = traceTarget{Service: ref}
			res.To = req.To.String()
		}
	}
	switch {
	case req.To.Pod != nil:
		dst, err := t.pod("--to", *req.To.Pod)
		if err != nil {
			return nil, err
		}
		port, mapping, err := podPort(dst, req.Port)
		if err != nil {
			return nil, err
		}
		_, a, err := sameFamily(src, podAddrs(dst), "pod "+req.To.Pod.String())
		if err != nil {
			return nil, err
		}
		dests = append(dests, dest{addr: a, pod: dst, port: port, mapping: mapping})
	case req.To.Service != nil:
		svc, eps, err := t.service(*req.To.Service, req.Port, src)
		if err != nil {
			return nil, err
		}
		res.Service = svc
		for _, ep := range eps {
			dests = append(dests, dest{addr: ep.addr, pod: ep.pod, port: ep.port, mapping: ep.mapping})
		}
	default:
		if _, _, err := sameFamily(src, []netip.Addr{req.To.IP}, req.To.IP.String()); err != nil {
			return nil, err
		}
		holder, err := t.podWithIP(req.To.IP)
		if err != nil {
			return nil, err
		}
		dests = append(dests, dest{addr: req.To.IP, pod: holder, port: req.Port.Number})
	}
	if err := t.policiesAndNamespaces(); err != nil {
		return nil, err
	}
	t.nodes()
	cluster := netpol.FromAPI(t.objs)
	for _, p := range cluster.Policies {
		for _, e := range p.Errors {
			t.note("%v", e)
		}
	}
	for _, d := range dests {
		srcAddr, _, _ := sameFamily(src, []netip.Addr{d.addr}, "")
		conn := netpol.Conn{Src: srcAddr, Dst: d.addr, Proto: req.Port.Proto, DPort: d.port}
		if src.Spec.HostNetwork {
			conn.SrcNode = src.Spec.NodeName
			if d.pod != nil && !d.pod.Spec.HostNetwork && d.pod.Spec.NodeName != src.Spec.NodeName {
				conn.Src = t.tunnelSource(src.Spec.NodeName, conn.Src)
			}
		}
		if d.pod != nil && d.pod.Spec.HostNetwork {
			conn.DstNode = d.pod.Spec.NodeName
		}
		path := judgePath(cluster, conn, src, d.pod)
		path.PortMapping = d.mapping
		if path.Allowed {
			res.allowed++
		}
		res.Paths = append(res.Paths, path)
	}
	hostNetwork := []*corev1.Pod{src}
	for _, d := range dests {
		hostNetwork = append(hostNetwork, d.pod)
	}
	for _, p := range hostNetwork {
		if p != nil && p.Spec.HostNetwork {
			t.note("pod %s/%s uses the host network: NetworkPolicy never selects it, its traffic is node %s's", p.Namespace, p.Name, p.Spec.NodeName)
		}
	}
	res.Notes = slices.Compact(t.notes)
	switch {
	case len(res.Paths) == 0:
		res.Verdict = "no ready endpoints"
	case res.allowed == len(res.Paths):
		res.Verdict = "allowed"
	case res.allowed == 0:
		res.Verdict = "denied"
	default:
		res.Verdict = fmt.Sprintf("allowed to %d of %d endpoints", res.allowed, len(res.Paths))
	}
	return res, nil
}

func (t *traceObjects) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if !slices.Contains(t.notes, s) {
		t.notes = append(t.notes, s)
	}
}

// pod reads a pod that must have an address (flagName names where it was
// asked for).
func (t *traceObjects) pod(flagName string, ref objectRef) (*corev1.Pod, error) {
	if p := t.pods[ref]; p != nil {
		return p, nil
	}
	p := &corev1.Pod{}
	if err := t.c.Get(t.ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s: pod %s not found", flagName, ref)
		}
		return nil, fmt.Errorf("%s: reading pod %s: %w", flagName, ref, err)
	}
	switch {
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return nil, fmt.Errorf("%s: pod %s has finished (status.phase %s): its address is released, there is no connection to trace", flagName, ref, p.Status.Phase)
	case len(podAddrs(p)) == 0:
		return nil, fmt.Errorf("%s: pod %s has no address yet (status.podIPs is empty, status.phase %s): trace it once it runs", flagName, ref, p.Status.Phase)
	}
	t.add(p)
	return p, nil
}

func (t *traceObjects) add(p *corev1.Pod) {
	ref := objectRef{Namespace: p.Namespace, Name: p.Name}
	if t.pods[ref] != nil {
		return
	}
	t.pods[ref] = p
	t.namespaces[p.Namespace] = true
	t.objs.Pods = append(t.objs.Pods, *p)
}

// podWithIP finds the running pod holding address a, if any (a
// host-network pod counts: the address is then its node's).
func (t *traceObjects) podWithIP(a netip.Addr) (*corev1.Pod, error) {
	var pods corev1.PodList
	if err := t.c.List(t.ctx, &pods); err != nil {
		if apierrors.IsForbidden(err) {
			t.note("pods cannot be listed in every namespace (%v): %s is judged as no pod's address (if it is a pod's, its ingress side is missing here)", err, a)
			return nil, nil
		}
		return nil, fmt.Errorf("--to %s: listing pods to find whose address it is: %w", a, err)
	}
	var found *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !slices.Contains(podAddrs(p), a) {
			continue
		}
		if found == nil || found.Spec.HostNetwork && !p.Spec.HostNetwork {
			found = p
		}
	}
	if found != nil {
		t.add(found)
		if !found.Spec.HostNetwork {
			t.note("%s is pod %s/%s's address: judged as that pod", a, found.Namespace, found.Name)
		}
	}
	return found, nil
}

// policiesAndNamespaces reads the namespaces of the pods and their
// NetworkPolicies. A namespace that cannot be read is judged with only the
// label every namespace has, unless a policy selects peers by
// namespaceSelector: then the verdict would depend on labels not seen, and
// that is an error.
func (t *traceObjects) policiesAndNamespaces() error {
	names := slices.Sorted(maps.Keys(t.namespaces))
	for _, ns := range names {
		var nps networkingv1.NetworkPolicyList
		if err := t.c.List(t.ctx, &nps, client.InNamespace(ns)); err != nil {
			return fmt.Errorf("listing the NetworkPolicies of namespace %s: %w", ns, err)
		}
		t.objs.Policies = append(t.objs.Policies, nps.Items...)
	}
	for _, ns := range names {
		n := corev1.Namespace{}
		if err := t.c.Get(t.ctx, client.ObjectKey{Name: ns}, &n); err != nil {
			if !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
				return fmt.Errorf("reading namespace %s: %w", ns, err)
			}
			if pol, field := namespaceSelectorField(t.objs.Policies); pol != "" {
				return fmt.Errorf("reading namespace %s: %w; NetworkPolicy %s selects peers by namespace labels (%s), so the verdict depends on them: trace with a user who may get namespaces", ns, err, pol, field)
			}
			t.note("namespace %s cannot be read (%v): judged with only its kubernetes.io/metadata.name label (no policy here selects by namespace labels)", ns, err)
			n.Name = ns
		}
		t.objs.Namespaces = append(t.objs.Namespaces, n)
	}
	return nil
}

// namespaceSelectorField names the first policy with a namespaceSelector
// peer, and the field.
func namespaceSelectorField(nps []networkingv1.NetworkPolicy) (string, string) {
	for _, np := range nps {
		for i, r := range np.Spec.Ingress {
			for j, p := range r.From {
				if p.NamespaceSelector != nil {
					return np.Namespace + "/" + np.Name, fmt.Sprintf("spec.ingress[%d].from[%d].namespaceSelector", i, j)
				}
			}
		}
		for i, r := range np.Spec.Egress {
			for j, p := range r.To {
				if p.NamespaceSelector != nil {
					return np.Namespace + "/" + np.Name, fmt.Sprintf("spec.egress[%d].to[%d].namespaceSelector", i, j)
				}
			}
		}
	}
	return "", ""
}

// nodes reads the Nodes: their addresses are their hosts', always allowed
// to reach their own pods.
func (t *traceObjects) nodes() {
	var nodes corev1.NodeList
	if err := t.c.List(t.ctx, &nodes); err != nil {
		t.note("nodes cannot be listed (%v): a node's address is judged as any address (host-network pods are still known by their pods)", err)
		return
	}
	t.objs.Nodes = nodes.Items
}

// tunnelSource is the source address of node's host traffic to another
// node's pods: the routes to them through wgmesh0 carry src = the node's pod
// bridge gateway of the family (agent/routes). addr is the host's address,
// kept when the node's pod CIDRs are not known.
func (t *traceObjects) tunnelSource(node string, addr netip.Addr) netip.Addr {
	for i := range t.objs.Nodes {
		n := &t.objs.Nodes[i]
		if n.Name != node {
			continue
		}
		for _, c := range podnet.NodeCIDRs(n) {
			if gw, ok := podnet.Gateway(c); ok && c.Addr().Is4() == addr.Is4() {
				t.note("node %s's host reaches other nodes' pods from its pod bridge gateway %s (the source address of its routes through wgmesh0), not %s", node, gw.Addr(), addr)
				return gw.Addr()
			}
		}
	}
	t.note("node %s's pod CIDRs are not known: its host's traffic to other nodes' pods is judged from %s, where it really comes from its pod bridge gateway", node, addr)
	return addr
}

// judgePath explains one connection and names where each side is judged.
func judgePath(cluster *netpol.Cluster, conn netpol.Conn, src, dst *corev1.Pod) tracePath {
	e := netpol.Explain(cluster, conn)
	path := tracePath{
		Source:      traceEnd{Address: conn.Src.String(), Pod: src.Namespace + "/" + src.Name, Node: src.Spec.NodeName, HostNetwork: src.Spec.HostNetwork, NodeHost: e.Src.Node},
		Destination: traceEnd{Address: conn.Dst.String(), NodeHost: e.Dst.Node},
		Protocol:    conn.Proto.String(),
		Port:        conn.DPort,
		Allowed:     e.Allowed,
	}
	if dst != nil {
		path.Destination.Pod = dst.Namespace + "/" + dst.Name
		path.Destination.Node = dst.Spec.NodeName
		path.Destination.HostNetwork = dst.Spec.HostNetwork
	}
	policies := map[string]*netpol.Policy{}
	for _, p := range cluster.Policies {
		policies[p.Key()] = p
	}
	path.Egress = side(e.Egress, e.EgressRules, policies, path.Source, path.Destination)
	path.Ingress = side(e.Ingress, e.IngressRules, policies, path.Destination, path.Source)
	return path
}

// side is one direction's decision as the trace shows it; subject is the
// end it is judged at.
func side(d netpol.Decision, checks []netpol.RuleCheck, policies map[string]*netpol.Policy, subject, peer traceEnd) traceSide {
	s := traceSide{
		Direction:  d.Direction.String(),
		Allowed:    d.Allowed(),
		Reason:     reasonName(d.Reason),
		Pod:        d.Pod,
		IsolatedBy: d.IsolatedBy,
	}
	if d.Pod != "" {
		s.Node = subject.Node
	}
	for _, rc := range checks {
		tr := traceRule{Policy: rc.Policy, Rule: rc.Rule, Matches: rc.Matches(), Text: rc.Describe(policies[rc.Policy].Rules(d.Direction)[rc.Rule])}
		if rc.PeerMatches {
			tr.Peer = &rc.Peer
		}
		if rc.PortMatches {
			tr.Port = &rc.Port
		}
		s.Rules = append(s.Rules, tr)
		if tr.Matches && s.AllowedBy == nil {
			first := tr
			s.AllowedBy = &first
		}
	}
	s.Summary = sideSummary(d, s, subject, peer)
	return s
}

func reasonName(r netpol.Reason) string {
	return map[netpol.Reason]string{
		netpol.NotAPod: "not-a-pod", netpol.NotIsolated: "not-isolated", netpol.AllowedByRule: "allowed-by-rule",
		netpol.Denied: "denied", netpol.SelfException: "self", netpol.NodeException: "own-node",
	}[r]
}

// sideSummary is one line: where the direction is judged and its verdict.
func sideSummary(d netpol.Decision, s traceSide, subject, peer traceEnd) string {
	where := ""
	if s.Node != "" {
		where = " on node " + s.Node
	}
	switch d.Reason {
	case netpol.NotAPod:
		switch {
		case subject.HostNetwork:
			return fmt.Sprintf("host-network pod %s (node %s's address): NetworkPolicy never selects it; nothing to judge", subject.Pod, subject.Node)
		case subject.NodeHost != "":
			return fmt.Sprintf("%s is node %s's host: no NetworkPolicy applies", subject.Address, subject.NodeHost)
		}
		return fmt.Sprintf("%s is no pod's address: no NetworkPolicy applies", subject.Address)
	case netpol.NotIsolated:
		return fmt.Sprintf("%s%s is not isolated: no NetworkPolicy of namespace %s selects it for %s: allowed", d.Pod, where, namespaceOf(d.Pod), d.Direction)
	case netpol.SelfException:
		return fmt.Sprintf("%s reaches itself: always allowed", d.Pod)
	case netpol.NodeException:
		return fmt.Sprintf("traffic between %s and its own node %s: always allowed", d.Pod, peer.NodeHost)
	case netpol.AllowedByRule:
		return fmt.Sprintf("%s%s is isolated for %s by %s: allowed by %s %s rule %d", d.Pod, where, d.Direction, strings.Join(d.IsolatedBy, ", "), s.AllowedBy.Policy, d.Direction, s.AllowedBy.Rule)
	}
	return fmt.Sprintf("%s%s is isolated for %s by %s: no rule allows it: denied (dropped by the pod's %s chain%s, counted in wgmesh_policy_denied_packets_total{direction=%q})",
		d.Pod, where, d.Direction, strings.Join(d.IsolatedBy, ", "), d.Direction, where, d.Direction.String())
}

func namespaceOf(key string) string {
	ns, _, _ := strings.Cut(key, "/")
	return ns
}

func netpolProto(p corev1.Protocol) netpol.Protocol {
	proto, _ := netpol.ParseProtocol(p)
	return proto
}

// podAddrs are a pod's addresses (status.podIPs, else status.podIP).
func podAddrs(p *corev1.Pod) []netip.Addr {
	return netpol.PodFromAPI(p).IPs
}

// sameFamily picks the first of addrs whose family src has, and src's
// address of that family; what names addrs' owner in the error.
func sameFamily(src *corev1.Pod, addrs []netip.Addr, what string) (netip.Addr, netip.Addr, error) {
	own := podAddrs(src)
	for _, a := range addrs {
		for _, s := range own {
			if s.Is4() == a.Is4() {
				return s, a, nil
			}
		}
	}
	return netip.Addr{}, netip.Addr{}, fmt.Errorf("pod %s/%s (addresses %v) and %s (addresses %v) have no address family in common", src.Namespace, src.Name, own, what, addrs)
}

// podPort resolves --port on the destination pod: a number as is, a name
// by the pod's container ports.
func podPort(p *corev1.Pod, port portArg) (uint16, string, error) {
	if port.Name == "" {
		return port.Number, "", nil
	}
	var have []string
	for _, cp := range netpol.PodFromAPI(p).Ports {
		if cp.Name == port.Name && cp.Protocol == port.Proto {
			return cp.Port, fmt.Sprintf("container port %q of pod %s/%s is %s/%d", port.Name, p.Namespace, p.Name, cp.Protocol, cp.Port), nil
		}
		have = append(have, fmt.Sprintf("%s=%s/%d", cp.Name, cp.Protocol, cp.Port))
	}
	return 0, "", fmt.Errorf("--port %s: pod %s/%s has no %s container port named %q (spec.containers[*].ports: %s)", port, p.Namespace, p.Name, port.Proto, port.Name, dash(strings.Join(have, ", ")))
}

// plural is "1 endpoint", "2 endpoints".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
