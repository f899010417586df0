package kubectl

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wgmesh/wgmesh/agent/paths"
	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// privateKeyPlaceholder stands where the private key goes when it is not
// known (showconf without --private-key-file): wg-quick refuses it.
const privateKeyPlaceholder = "<PRIVATE KEY: kept only where add-peer wrote it; pass --private-key-file>"

// confInput is what an external peer's wg-quick configuration is made of.
type confInput struct {
	// Peer is the external MeshPeer the configuration is for.
	Peer *wgmeshv1.MeshPeer
	// PrivateKey is its private key (base64), or "" for the placeholder.
	PrivateKey string
	// Peers are all MeshPeers; the node ones become [Peer] sections.
	Peers []wgmeshv1.MeshPeer
	// NodeUIDs tells the UID of each Node (see wgmeshv1.IsNodePeer).
	NodeUIDs func(name string) (types.UID, bool)
	// Services are the service CIDRs, routed through one node, and where
	// they were found.
	Services serviceCIDRs
	// ServiceVia is the node that carries the service routes; "" picks the
	// first Ready node with an endpoint.
	ServiceVia string
	// Keepalive is the PersistentKeepalive towards every node (0: off).
	Keepalive int32
}

// confPeer is one node as the external peer sees it.
type confPeer struct {
	Name, Endpoint, PublicKey string
	AllowedIPs                []string
	Ready                     bool
	// NATKeepalive: the node asks for a persistent keepalive, which is how
	// a node behind NAT keeps its mapping open; its endpoint may be a
	// private address.
	NATKeepalive bool
	// Skip says why the node is left out ("" when it is not).
	Skip string
	// Note is a comment written above the [Peer] section.
	Note string
}

// renderConf writes the wg-quick configuration of an external peer: an
// [Interface] with its key and addresses, and one [Peer] per usable node
// with the node's endpoint and pod CIDRs; the service CIDRs go to one node,
// which DNATs them like any of its own clients' traffic.
func renderConf(in confInput) (string, error) {
	if ok, c := in.Peer.Excluded(); ok {
		return "", fmt.Errorf("MeshPeer %s is left out of the mesh by condition %s: %s", in.Peer.Name, c.Type, c.Message)
	}
	nodes := confPeers(in)
	via, err := pickServiceVia(in, nodes)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# wgmesh external peer %s (MeshPeer %s): wg-quick configuration.\n", in.Peer.Name, in.Peer.Name)
	b.WriteString("# Start it with `wg-quick up ./FILE.conf`: the file name (without .conf) names the interface.\n")
	switch {
	case len(in.Services.CIDRs) == 0:
		fmt.Fprintf(&b, "# Service CIDRs: none routed (%s); pass --service-cidrs to add them.\n", in.Services.Source)
	case via == "":
		fmt.Fprintf(&b, "# Service CIDRs %s (%s): not routed, no node can carry them.\n", prefixList(in.Services.CIDRs), in.Services.Source)
	default:
		fmt.Fprintf(&b, "# Service CIDRs %s (%s), routed via node %s.\n", prefixList(in.Services.CIDRs), in.Services.Source, via)
	}
	b.WriteString("\n[Interface]\n")
	key := in.PrivateKey
	if key == "" {
		key = privateKeyPlaceholder
	}
	fmt.Fprintf(&b, "PrivateKey = %s\n", key)
	var addrs []string
	for _, c := range in.Peer.Spec.AllowedIPs {
		if p, err := wgmeshv1.ParseCIDR(string(c)); err == nil {
			addrs = append(addrs, interfaceAddress(p).String())
		}
	}
	fmt.Fprintf(&b, "Address = %s\n", strings.Join(addrs, ", "))
	if in.Peer.Spec.Endpoint != "" {
		if hp, err := wgmeshv1.ParseEndpoint(string(in.Peer.Spec.Endpoint), true); err == nil {
			fmt.Fprintf(&b, "# The nodes send to this peer's endpoint %s.\nListenPort = %d\n", in.Peer.Spec.Endpoint, hp.Port)
		}
	}
	usable := 0
	for _, n := range nodes {
		b.WriteString("\n")
		if n.Skip != "" {
			fmt.Fprintf(&b, "# node %s left out: %s\n", n.Name, n.Skip)
			continue
		}
		usable++
		fmt.Fprintf(&b, "# node %s", n.Name)
		if n.Note != "" {
			fmt.Fprintf(&b, ": %s", n.Note)
		}
		b.WriteString("\n[Peer]\n")
		fmt.Fprintf(&b, "PublicKey = %s\n", n.PublicKey)
		if n.Endpoint != "" {
			fmt.Fprintf(&b, "Endpoint = %s\n", n.Endpoint)
		}
		allowed := n.AllowedIPs
		if n.Name == via {
			for _, p := range in.Services.CIDRs {
				allowed = append(allowed, p.String())
			}
		}
		fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(allowed, ", "))
		if in.Keepalive > 0 {
			fmt.Fprintf(&b, "PersistentKeepalive = %d\n", in.Keepalive)
		}
	}
	if usable == 0 {
		return "", fmt.Errorf("no node MeshPeer can be a peer of %s: %s", in.Peer.Name, skipSummary(nodes))
	}
	return b.String(), nil
}

// confPeers is every node MeshPeer, sorted by name, with why it is left
// out, if it is.
func confPeers(in confInput) []confPeer {
	var out []confPeer
	peerHasEndpoint := in.Peer.Spec.Endpoint != ""
	for i := range in.Peers {
		mp := &in.Peers[i]
		if !wgmeshv1.IsNodePeer(mp, in.NodeUIDs) {
			continue
		}
		// The endpoint the peer's path to the node takes (agent/paths, the
		// choice the node makes too): spec.endpoint unless both have a
		// location and candidates.
		ep := paths.Choose(paths.FromSpec(in.Peer.Spec), paths.FromSpec(mp.Spec)).Endpoint
		n := confPeer{Name: mp.Name, Endpoint: ep, PublicKey: string(mp.Spec.PublicKey), Ready: nodeReady(mp),
			NATKeepalive: mp.Spec.PersistentKeepalive != nil && *mp.Spec.PersistentKeepalive > 0}
		for _, c := range mp.Spec.AllowedIPs {
			n.AllowedIPs = append(n.AllowedIPs, string(c))
		}
		switch excluded, c := mp.Excluded(); {
		case excluded:
			n.Skip = fmt.Sprintf("excluded from the mesh by condition %s (%s)", c.Type, c.Message)
		case wgmeshv1.ParsePublicKey(n.PublicKey) != nil:
			n.Skip = fmt.Sprintf("spec.publicKey %q is not a WireGuard public key", n.PublicKey)
		case len(n.AllowedIPs) == 0:
			n.Skip = "no pod CIDRs in spec.allowedIPs yet"
		case n.Endpoint == "" && !peerHasEndpoint:
			n.Skip = "no endpoint (the node is behind NAT or has not announced one), and this peer has none either, so neither side can start a handshake; give this peer --endpoint, or the node a wgmesh.io/force-endpoint"
		case n.Endpoint == "":
			n.Note = fmt.Sprintf("no endpoint (behind NAT?); it starts the handshake to this peer's endpoint %s", in.Peer.Spec.Endpoint)
		case n.NATKeepalive:
			n.Note = fmt.Sprintf("keeps a NAT mapping open (persistentKeepalive %ds), so %s may be a private address not reachable from here", *mp.Spec.PersistentKeepalive, n.Endpoint)
		}
		if n.Skip == "" && !n.Ready {
			n.Note = strings.TrimPrefix(n.Note+"; not Ready now", "; ")
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pickServiceVia is the node that carries the service routes: the one the
// user named, else the first Ready node with an endpoint that does not look
// NATed (no persistentKeepalive), else the first Ready one with an
// endpoint, else the first with an endpoint. "" when there are no service
// CIDRs.
func pickServiceVia(in confInput, nodes []confPeer) (string, error) {
	if len(in.Services.CIDRs) == 0 {
		return "", nil
	}
	if in.ServiceVia != "" {
		for _, n := range nodes {
			if n.Name != in.ServiceVia {
				continue
			}
			if n.Skip != "" {
				return "", fmt.Errorf("--service-via=%s: node %s is left out of this peer's configuration: %s", in.ServiceVia, n.Name, n.Skip)
			}
			return n.Name, nil
		}
		return "", fmt.Errorf("--service-via=%s: no node MeshPeer %s (nodes: %s)", in.ServiceVia, in.ServiceVia, nodeNames(nodes))
	}
	for _, pass := range []struct{ ready, direct bool }{{true, true}, {true, false}, {false, false}} {
		for _, n := range nodes {
			if n.Skip == "" && n.Endpoint != "" && (n.Ready || !pass.ready) && (!n.NATKeepalive || !pass.direct) {
				return n.Name, nil
			}
		}
	}
	return "", nil
}

// nodeReady: the node's agent says Ready and the operator does not say
// NodeNotReady.
func nodeReady(mp *wgmeshv1.MeshPeer) bool {
	if c := meta.FindStatusCondition(mp.Status.Conditions, wgmeshv1.ConditionNodeNotReady); c != nil && c.Status == metav1.ConditionTrue {
		return false
	}
	c := meta.FindStatusCondition(mp.Status.Conditions, wgmeshv1.ConditionReady)
	return c != nil && c.Status == metav1.ConditionTrue
}

// interfaceAddress is the address the peer gives itself inside one of its
// allowed IPs: a single address as it is, else the first host address
// with the prefix's length (198.18.200.0/24 -> 198.18.200.1/24).
func interfaceAddress(p netip.Prefix) netip.Prefix {
	if p.IsSingleIP() {
		return p
	}
	return netip.PrefixFrom(p.Addr().Next(), p.Bits())
}

// publicKeyOf is the public key of a base64 private key.
func publicKeyOf(private string) (string, error) {
	k, err := wgtypes.ParseKey(private)
	if err != nil {
		return "", fmt.Errorf("not a WireGuard private key (32 bytes in base64): %w", err)
	}
	return k.PublicKey().String(), nil
}

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

func nodeNames(nodes []confPeer) string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.Name)
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func skipSummary(nodes []confPeer) string {
	if len(nodes) == 0 {
		return "there are no node MeshPeers yet (is the operator running?)"
	}
	var s []string
	for _, n := range nodes {
		s = append(s, n.Name+": "+n.Skip)
	}
	return strings.Join(s, "; ")
}
