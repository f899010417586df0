package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/endpoint"
	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/tunnel"
	"github.com/wgmesh/wgmesh/agent/wireguard"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
)

// reconcile brings the node to the state the API server describes, as a
// pipeline: observe (this Node, the MeshPeers; the key and announcement),
// plan (the topology, pure), apply (the tunnel, then the node data planes in
// their declared order, whatever happened to the tunnel), report (metrics,
// Events, the MeshPeer status).
func (a *Agent) reconcile(ctx context.Context) (err error) {
	start := time.Now()
	defer func() { a.metrics.ReconcileDuration.Observe(time.Since(start).Seconds()) }()
	obs, err := a.observe(ctx)
	if err != nil {
		return err
	}
	p := a.plan(obs)
	res := a.apply(ctx, obs, p)
	return a.reportAll(ctx, obs, p, res)
}

// observation is what one reconcile reads.
type observation struct {
	node     *corev1.Node
	peers    []wgv1.MeshPeer
	podCIDRs []netip.Prefix
	// device are the WireGuard peers as the device has them (nil before
	// the link exists): their handshakes tell which punched paths work.
	device []wgtypes.Peer
	now    time.Time
}

// plan is what one reconcile wants: the topology and its input.
type plan struct {
	in   mesh.Input
	topo mesh.Topology
}

// result is what applying the plan did.
type result struct {
	applied tunnel.Applied
	// tunnelErr and dataplaneErrs are the apply stage's failures; each
	// stops nothing else.
	tunnelErr     error
	dataplaneErrs []error
}

// observe reads this Node and the MeshPeers, steps the key rotation and
// announces the key and endpoint (a failure to announce is logged: the
// mesh of the others does not depend on it).
func (a *Agent) observe(ctx context.Context) (observation, error) {
	var obs observation
	obs.node = &corev1.Node{}
	if err := a.reader.Get(ctx, client.ObjectKey{Name: a.o.NodeName}, obs.node); err != nil {
		a.metrics.ReconcileErrors.WithLabelValues("node").Inc()
		return obs, fmt.Errorf("reading own Node %s: %w", a.o.NodeName, err)
	}
	a.key = a.rotation.Step(ctx, obs.node)
	if err := a.announce(ctx, obs.node); err != nil {
		a.metrics.ReconcileErrors.WithLabelValues("announce").Inc()
		a.log.Error(err, "announcing key and endpoint")
	}
	var list wgv1.MeshPeerList
	if err := a.reader.List(ctx, &list); err != nil {
		a.metrics.ReconcileErrors.WithLabelValues("list").Inc()
		return obs, fmt.Errorf("listing MeshPeers: %w", err)
	}
	obs.peers = list.Items
	// The endpoints WireGuard uses now, learned ones included: read before
	// planning, so that a MeshPeer naming one is refused in this reconcile,
	// not the next (the device learns them from handshakes, which wake no
	// reconcile).
	if dev := a.kernel.Peers(); dev != nil {
		a.learned = learnedEndpoints(dev, obs.peers)
		obs.device, obs.now = dev, time.Now()
	}
	obs.podCIDRs = podnet.NodeCIDRs(obs.node)
	if err := a.checkClusterCIDRs(obs.node, obs.podCIDRs); err != nil {
		return obs, err
	}
	return obs, nil
}

// plan computes the topology. Protected: no external peer may route the
// node's own addresses, the API server or an endpoint WireGuard uses now
// into the tunnel (a peer behind NAT is reached at the address its
// handshakes came from, which no MeshPeer spec names).
func (a *Agent) plan(obs observation) plan {
	protected := append(append(nodeAddrs(obs.node), a.apiServer...), learnedAddrs(a.learned)...)
	in := mesh.Input{NodeName: a.o.NodeName, PublicKey: a.key.PublicKey(), PodCIDRs: obs.podCIDRs, Peers: obs.peers,
		ClusterCIDRs: a.o.ClusterCIDRs, ServiceCIDRs: a.o.ServiceCIDRs, Protected: protected}
	if a.nodes != nil { // synced: loop waits for it before the first reconcile
		in.NodeUIDs = a.nodes.UID
	}
	if obs.device != nil {
		in.Connected = connectedPeers(obs.device, obs.peers, obs.now)
	}
	return plan{in: in, topo: mesh.New(in)}
}

// connectedPeers tells, by MeshPeer name, whether the device had a
// handshake with the peer's key within wireguard.ConnectedWithin.
func connectedPeers(dev []wgtypes.Peer, peers []wgv1.MeshPeer, now time.Time) func(string) bool {
	byKey := map[string]bool{}
	for _, p := range dev {
		byKey[p.PublicKey.String()] = wireguard.Connected(p, now)
	}
	byName := map[string]bool{}
	for i := range peers {
		byName[peers[i].Name] = byKey[string(peers[i].Spec.PublicKey)]
	}
	return func(name string) bool { return byName[name] }
}

// apply brings the tunnel to the topology, then the node data planes (leak
// guard, egress, CNI) in their declared order, whatever happened to the
// tunnel: the guard matters most when the tunnel is broken, and same-node
// pods work without it. It also hands the service NAT the addresses no
// Service may take.
func (a *Agent) apply(ctx context.Context, obs observation, p plan) result {
	var res result
	res.applied, res.tunnelErr = a.kernel.Apply(ctx, tunnel.Desired{PrivateKey: a.key, Topology: p.topo})
	if res.tunnelErr != nil {
		a.metrics.ReconcileErrors.WithLabelValues("kernel").Inc()
	}
	applied := res.applied
	a.rotation.Applied(ctx, applied.Device, p.topo.Peers)
	if applied.Device != nil {
		a.learned = learnedEndpoints(applied.Device.Peers, obs.peers)
	}
	if sp := a.o.ServiceProxy; sp != nil {
		sp.SetReserved(reservedAddrs(a.apiServer, a.learned, obs.peers))
	}
	if applied.Peers.Changed() || applied.Routes.Added+applied.Routes.Removed > 0 {
		a.log.Info("mesh applied", "mode", applied.Mode, "peersAdded", applied.Peers.Added, "peersUpdated", applied.Peers.Updated,
			"peersRemoved", applied.Peers.Removed, "routesSet", applied.Routes.Added, "routesRemoved", applied.Routes.Removed,
			"mtu", applied.MTU, "underlay", applied.UnderlayIface)
	}
	for _, s := range applied.Sysctls {
		if s.Changed {
			a.log.Info("sysctl set", "key", s.Key, "from", s.Previous, "to", s.Current)
		}
	}
	st := NodeState{NodeName: a.o.NodeName, PodCIDRs: obs.podCIDRs, BridgeName: a.o.BridgeName, BridgeGateways: p.topo.Gateways,
		TunnelName: a.o.LinkName, MTU: applied.MTU, ClusterCIDRs: a.o.ClusterCIDRs, ServiceCIDRs: a.o.ServiceCIDRs,
		NodePodCIDRs: nodePeerRanges(obs.peers, obs.podCIDRs, p.in.NodeUIDs), ExternalPeerRanges: externalPeerRanges(p.topo),
		Event: func(eventType, reason, message string) {
			a.events.Eventf(obs.node, nil, eventType, reason, "ConfigureDataplane", "%s", message)
		}}
	for _, d := range a.o.Dataplanes {
		if err := d.Apply(ctx, st); err != nil {
			a.metrics.ReconcileErrors.WithLabelValues(d.Name()).Inc()
			res.dataplaneErrs = append(res.dataplaneErrs, fmt.Errorf("%s: %w", d.Name(), err))
		}
	}
	return res
}

// reportAll tells what the reconcile found and did: readiness (false while
// any part of the data plane is broken, or while a node that should have
// peers has none), Events about unusable peers, metrics, and the MeshPeer
// status. It returns every error of the reconcile.
func (a *Agent) reportAll(ctx context.Context, obs observation, p plan, res result) error {
	topo, applied := p.topo, res.applied
	notReady := errors.Join(append([]error{res.tunnelErr}, res.dataplaneErrs...)...)
	if notReady == nil && len(topo.Peers) == 0 {
		if n := otherNodePeers(obs.peers, a.o.NodeName); n > 0 {
			notReady = fmt.Errorf("no usable peer although %d other node MeshPeers exist (see the Degraded condition)", n)
		}
	}
	a.ready.Store(notReady == nil)
	a.readyErr.Store(errorText(notReady))

	problems := append(append([]mesh.Problem{}, topo.Problems...), applied.EndpointErrors...)
	a.report(obs.node, obs.peers, problems)

	var peers []wgtypes.Peer
	names := map[wgtypes.Key]string{}
	for _, p := range topo.Peers {
		names[p.PublicKey] = p.Name
	}
	if applied.Device != nil {
		peers = applied.Device.Peers
	}
	a.metrics.setSysctls(applied.Sysctls)
	a.metrics.MTU.Set(float64(applied.MTU))
	a.metrics.Peers.Set(float64(len(peers)))
	a.metrics.setPaths(topo.Peers)
	a.logPaths(topo.Peers)
	a.reportRelays(obs.node, topo.Peers)
	a.metrics.PeerProblems.Set(float64(len(problems)))

	expected, targets := expectedPeers(topo, obs.peers)
	sin := StatusInput{LinkErr: notReady, MTU: applied.MTU, Peers: peers, Problems: problems, Now: time.Now(), Expected: expected,
		Learned: reportedLearned(a.learned, topo.Peers)}
	if a.prober != nil {
		a.prober.SetTargets(targets)
		sin.Probes = a.prober.States()
		sin.HoldDown = probeHoldDownIntervals * a.o.ProbeInterval
	} else {
		sin.Handshakes = map[string]time.Time{}
		for _, p := range peers {
			if n := names[p.PublicKey]; n != "" {
				sin.Handshakes[n] = p.LastHandshakeTime
			}
		}
	}
	a.metrics.PeersConnected.Set(float64(connectedNow(targets, sin)))
	a.metrics.setPeers(peerView{DeviceRead: applied.Device != nil, Device: peers, Names: names, Probes: sin.Probes})
	errs := append([]error{res.tunnelErr}, res.dataplaneErrs...)
	if err := a.writeStatus(ctx, obs.peers, sin); err != nil {
		a.metrics.ReconcileErrors.WithLabelValues("status").Inc()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// expectedPeers are the usable node peers this node should reach (all but
// those whose Node is not Ready), by name, and the probe target of every
// usable node peer: its bridge gateway, the first address of its first pod
// CIDR, which the route through wgmesh0 reaches with this node's bridge
// address as source.
func expectedPeers(topo mesh.Topology, items []wgv1.MeshPeer) (expected []string, targets []probe.Target) {
	notReady := map[string]bool{}
	for i := range items {
		if c := meta.FindStatusCondition(items[i].Status.Conditions, wgv1.ConditionNodeNotReady); c != nil && c.Status == metav1.ConditionTrue {
			notReady[items[i].Name] = true
		}
	}
	for _, p := range topo.Peers {
		if p.NodeName == "" || len(p.AllowedIPs) == 0 {
			continue // external peers are not probed (a laptop may sleep)
		}
		if gw, ok := podnet.Gateway(p.AllowedIPs[0]); ok {
			targets = append(targets, probe.Target{Peer: p.Name, Addr: gw.Addr()})
		}
		if !notReady[p.Name] {
			expected = append(expected, p.Name)
		}
	}
	return expected, targets
}

// connectedNow counts the node peers reachable now: last probe answered,
// or, with probes off, a handshake within 3 minutes.
func connectedNow(targets []probe.Target, in StatusInput) int {
	n := 0
	for _, t := range targets {
		if in.Probes != nil {
			if in.Probes[t.Peer].Reachable {
				n++
			}
		} else if hs := in.Handshakes[t.Peer]; !hs.IsZero() && in.Now.Sub(hs) <= wireguard.ConnectedWithin {
			n++
		}
	}
	return n
}

// externalPeerRanges are the allowedIPs of the external peers the topology
// accepted (a refused peer's range may be an underlay address that must not
// be cut off), sorted.
func externalPeerRanges(topo mesh.Topology) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range topo.Peers {
		if p.NodeName == "" {
			out = append(out, p.AllowedIPs...)
		}
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return strings.Compare(a.String(), b.String()) })
	return out
}

// nodePeerRanges are this node's pod CIDRs and every node MeshPeer's
// allowedIPs (each canonical; bad entries are the topology's problem).
func nodePeerRanges(peers []wgv1.MeshPeer, own []netip.Prefix, nodes func(string) (types.UID, bool)) []netip.Prefix {
	out := slices.Clone(own)
	for i := range peers {
		if !wgv1.IsNodePeer(&peers[i], nodes) {
			continue
		}
		for _, c := range peers[i].Spec.AllowedIPs {
			if p, err := wgv1.ParseCIDR(string(c)); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// otherNodePeers counts the MeshPeers of other nodes (by their owner
// reference; validity is the topology's business).
func otherNodePeers(peers []wgv1.MeshPeer, self string) int {
	n := 0
	for i := range peers {
		if peers[i].Name != self && wgv1.IsNodePeer(&peers[i], nil) {
			n++
		}
	}
	return n
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// errRefuseToRun ends the agent: its configuration disagrees with the
// cluster, and going on would program a data plane that leaks or loops.
var errRefuseToRun = errors.New("refusing to run")

// ReasonClusterCIDRMismatch is the Event reason when the node's pod CIDRs lie
// outside --cluster-cidrs.
const ReasonClusterCIDRMismatch = "ClusterCIDRMismatch"

// checkClusterCIDRs refuses to run when this node's pod CIDRs lie outside
// --cluster-cidrs: the operator and the agent disagree about the cluster's
// pod ranges (the egress masquerade and leak guard would be wrong).
func (a *Agent) checkClusterCIDRs(node *corev1.Node, podCIDRs []netip.Prefix) error {
	if len(a.o.ClusterCIDRs) == 0 {
		return nil
	}
	for _, p := range podCIDRs {
		if !slices.ContainsFunc(a.o.ClusterCIDRs, func(c netip.Prefix) bool { return c.Bits() <= p.Bits() && c.Contains(p.Addr()) }) {
			msg := fmt.Sprintf("Node %s spec.podCIDRs %s lies outside --cluster-cidrs %v: the agent and the cluster disagree about the pod ranges; set --cluster-cidrs (chart: agent.clusterCIDRs or operator.clusterCIDRs) to the cluster's pod CIDRs", node.Name, p, a.o.ClusterCIDRs)
			a.ready.Store(false)
			// Written before the agent exits, right after: the Event
			// writer is synchronous.
			a.events.Eventf(node, nil, corev1.EventTypeWarning, ReasonClusterCIDRMismatch, "CheckConfiguration", "%s", msg)
			return fmt.Errorf("%w: %s", errRefuseToRun, msg)
		}
	}
	return nil
}

// announce publishes the public key and the chosen endpoint on the own Node.
func (a *Agent) announce(ctx context.Context, node *corev1.Node) error {
	ep, src, err := endpoint.Choose(endpoint.Input{
		Node: node, Flag: a.o.Endpoint, AddressType: a.o.EndpointAddressType,
		DefaultRouteAddrs: func() []netip.Addr { return endpoint.DefaultRouteAddrs(nil) }, ListenPort: a.o.ListenPort,
	})
	if err != nil {
		a.once("endpoint:"+err.Error(), func() {
			a.events.Eventf(node, nil, corev1.EventTypeWarning, ReasonInvalidEndpoint, "ChooseEndpoint", "%s", err.Error())
		})
		return err
	}
	if err := wgv1.CheckOwnEndpoint(node, ep); err != nil {
		// The API server (the chart's policy wgmesh-agent-own-node) and the
		// operator take only the node's own address: announce the key
		// without an endpoint; peers reach the node once it sends a
		// handshake, as behind NAT.
		msg := fmt.Sprintf("not announcing the endpoint chosen from the %s: %v", src, err)
		a.once("endpoint:"+msg, func() {
			a.log.Info("endpoint not announced", "node", node.Name, "endpoint", ep, "source", src, "reason", err.Error())
			a.events.Eventf(node, nil, corev1.EventTypeWarning, ReasonInvalidEndpoint, "ChooseEndpoint", "%s", msg)
		})
		ep = ""
	}
	pub := a.rotation.Announce() // the next key's while a rotation waits for it
	cands := wgv1.FormatCandidatesAnnotation(endpoint.Candidates(node, a.o.ListenPort))
	wrote, err := endpoint.Publish(ctx, a.client, node, endpoint.Announcement{PublicKey: pub.String(), Endpoint: ep, Candidates: cands})
	if err != nil {
		return err
	}
	if wrote {
		a.log.Info("announced key and endpoint on Node", "node", node.Name, "endpoint", ep, "source", src,
			"publicKey", pub.String(), "candidates", cands)
	}
	return nil
}

// report logs and records an Event (on the bad MeshPeer and on the own Node)
// once for each new problem.
func (a *Agent) report(node *corev1.Node, peers []wgv1.MeshPeer, problems []mesh.Problem) {
	byName := map[string]*wgv1.MeshPeer{}
	for i := range peers {
		byName[peers[i].Name] = &peers[i]
	}
	seen := map[string]bool{}
	for _, p := range problems {
		k := "peer:" + p.String()
		seen[k] = true
		if a.reported[k] {
			continue
		}
		a.reported[k] = true
		a.log.Info("MeshPeer left out or degraded", "meshpeer", p.Peer, "field", p.Field, "value", p.Value, "reason", p.Reason, "detail", p.Detail)
		msg := fmt.Sprintf("node %s: %s", a.o.NodeName, p.String())
		if mp := byName[p.Peer]; mp != nil {
			a.events.Eventf(mp, node, corev1.EventTypeWarning, p.Reason, "ConfigurePeer", "%s", msg)
		}
		a.events.Eventf(node, nil, corev1.EventTypeWarning, p.Reason, "ConfigurePeer", "%s", msg)
	}
	for k := range a.reported {
		if len(k) > 5 && k[:5] == "peer:" && !seen[k] {
			delete(a.reported, k)
		}
	}
}

func (a *Agent) once(key string, fn func()) {
	if a.reported[key] {
		return
	}
	a.reported[key] = true
	fn()
}

// writeStatus applies the own MeshPeer status when it changed meaningfully.
func (a *Agent) writeStatus(ctx context.Context, peers []wgv1.MeshPeer, in StatusInput) error {
	// Only the MeshPeer named after this node is its own (the admission
	// policy lets the agent write no other).
	var own *wgv1.MeshPeer
	for i := range peers {
		if peers[i].Name == a.o.NodeName {
			own = &peers[i]
		}
	}
	if own == nil {
		return nil // the operator has not created it yet; its creation triggers us
	}
	in.Generation = own.Generation
	want := DesiredStatus(in, own.Status)
	if !a.status.decide(own.Status, want, in.Now) {
		return nil
	}
	if err := applyStatus(ctx, a.statusWriter, want); err != nil {
		return err
	}
	a.status.wrote(in.Now)
	a.metrics.StatusWrites.Inc()
	a.log.V(1).Info("status written", "meshpeer", own.Name, "connected", want.Connected, "unreachable", want.UnreachablePeers, "mtu", want.MTU)
	return nil
}

func withdrawAnnotations(ctx context.Context, c client.Client, node string) error {
	err := endpoint.Withdraw(ctx, c, node)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
