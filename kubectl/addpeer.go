package kubectl

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func init() {
	register(Command{
		Name:  "add-peer",
		Usage: "NAME --allowed-ips CIDR[,CIDR] [--endpoint HOST:PORT] [--keepalive 25] [--service-via NODE] [--service-cidrs CIDR[,CIDR]] [-o FILE]",
		Help: `adds an external peer (a laptop, a VM, another cluster's gateway): makes
a WireGuard key here (the private key never reaches the API server),
creates the MeshPeer NAME without nodeName, and prints a wg-quick
configuration with every reachable node, routes to the pod CIDRs and to
the service CIDRs through one node (--service-via, default the first
Ready node with an endpoint). -o FILE writes it with mode 0600 instead.`,
		Run: runAddPeer,
	})
}

// addPeerFlags are add-peer's inputs, validated before anything is sent.
type addPeerFlags struct {
	peerConfFlags
	AllowedIPs []netip.Prefix
	Endpoint   string
	Output     string
}

func parseAddPeer(args []string) (*KubeFlags, *addPeerFlags, error) {
	var kf KubeFlags
	f := &addPeerFlags{peerConfFlags: peerConfFlags{Keepalive: 25}}
	fs := NewFlagSet("add-peer", &kf)
	var allowed string
	fs.StringVar(&allowed, "allowed-ips", "", "the peer's addresses, routed to it by every node: CIDRs, comma separated (required)")
	fs.Func("endpoint", "host:port where the nodes can reach the peer (optional: without it the peer starts every handshake)", func(s string) error {
		hp, err := wgmeshv1.ParseEndpoint(s, true)
		if err != nil {
			return err
		}
		f.Endpoint = hp.String()
		return nil
	})
	f.bind(fs, "PersistentKeepalive in seconds, both ways (0: off; default 25)")
	fs.StringVar(&f.Output, "o", "", "write the configuration to this file (mode 0600) instead of standard output")
	if err := f.parse(fs, args); err != nil {
		return nil, nil, err
	}
	var err error
	if f.AllowedIPs, err = parseAllowedIPs(allowed); err != nil {
		return nil, nil, err
	}
	return &kf, f, nil
}

// maxAllowedIPs is the CRD's limit on spec.allowedIPs.
const maxAllowedIPs = 64

func parseAllowedIPs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("--allowed-ips is required: the peer's own addresses, such as 198.18.200.1/32")
	}
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		p, err := wgmeshv1.ParseCIDR(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--allowed-ips: %w", err)
		}
		for _, q := range out {
			if q.Overlaps(p) {
				return nil, fmt.Errorf("--allowed-ips: %s overlaps %s: want distinct prefixes", p, q)
			}
		}
		out = append(out, p)
	}
	if len(out) > maxAllowedIPs {
		return nil, fmt.Errorf("--allowed-ips: %d prefixes: want at most %d", len(out), maxAllowedIPs)
	}
	return out, nil
}

func runAddPeer(env *Env, args []string) error {
	kf, f, err := parseAddPeer(args)
	if err != nil {
		return err
	}
	c, ctx, cancel, err := kf.Connect()
	if err != nil {
		return err
	}
	defer cancel()
	return addPeer(ctx, env, c, f)
}

func addPeer(ctx context.Context, env *Env, c client.Client, f *addPeerFlags) error {
	m, err := loadMesh(ctx, c, true, f.ServiceCIDRs)
	if err != nil {
		return err
	}
	for _, n := range m.notes {
		fmt.Fprintf(env.Err, "note: %s\n", n)
	}
	for i := range m.peers {
		if m.peers[i].Name == f.Name {
			return fmt.Errorf("MeshPeer %s already exists: `kubectl wgmesh showconf %s --private-key-file FILE` prints its configuration; delete it first to make a new key", f.Name, f.Name)
		}
	}
	if err := checkAllowedIPsFree(f.AllowedIPs, m); err != nil {
		return err
	}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return fmt.Errorf("generating a WireGuard key: %w", err)
	}
	mp := &wgmeshv1.MeshPeer{
		ObjectMeta: metav1.ObjectMeta{Name: f.Name},
		Spec: wgmeshv1.MeshPeerSpec{
			PublicKey: wgmeshv1.PublicKey(key.PublicKey().String()),
			Endpoint:  wgmeshv1.Endpoint(f.Endpoint),
		},
	}
	for _, p := range f.AllowedIPs {
		mp.Spec.AllowedIPs = append(mp.Spec.AllowedIPs, wgmeshv1.CIDR(p.String()))
	}
	if f.Keepalive > 0 {
		mp.Spec.PersistentKeepalive = &f.Keepalive
	}
	// The configuration first: a bad --service-via or a mesh without any
	// usable node leaves nothing behind in the cluster.
	conf, err := renderConf(confInput{Peer: mp, PrivateKey: key.String(), Peers: m.peers, NodeUIDs: m.nodeUIDs,
		Services: m.services, ServiceVia: f.ServiceVia, Keepalive: f.Keepalive})
	if err != nil {
		return err
	}
	var out *os.File
	if f.Output != "" {
		// Made before the MeshPeer, never over an existing file: the
		// private key exists nowhere else.
		if out, err = os.OpenFile(f.Output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fmt.Errorf("-o: %w (add-peer never overwrites a configuration)", err)
		}
		defer out.Close()
	}
	if err := c.Create(ctx, mp); err != nil {
		if out != nil {
			out.Close()
			os.Remove(f.Output)
		}
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("MeshPeer %s already exists (created meanwhile): %w", f.Name, err)
		}
		return fmt.Errorf("creating MeshPeer %s: the API server refused it: %w", f.Name, err)
	}
	if out == nil {
		_, err := fmt.Fprint(env.Out, conf)
		fmt.Fprintf(env.Err, "MeshPeer %s created with public key %s; its private key is only in the configuration above.\n", f.Name, mp.Spec.PublicKey)
		return err
	}
	if _, err := out.WriteString(conf); err != nil {
		return fmt.Errorf("writing %s: %w (MeshPeer %s was created; delete it and try again)", f.Output, err, f.Name)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("writing %s: %w (MeshPeer %s was created; delete it and try again)", f.Output, err, f.Name)
	}
	fmt.Fprintf(env.Out, "MeshPeer %s created with public key %s.\nwg-quick configuration written to %s (mode 0600; it holds the only copy of the private key): wg-quick up %s\n",
		f.Name, mp.Spec.PublicKey, f.Output, f.Output)
	return nil
}

// mesh is what add-peer, showconf and graph read from the cluster.
type mesh struct {
	peers    []wgmeshv1.MeshPeer
	nodes    []corev1.Node
	nodeUIDs func(string) (types.UID, bool)
	services serviceCIDRs
	notes    []string
}

// loadMesh reads the MeshPeers and Nodes, and with services the service
// CIDRs (serviceFlag overrides them).
func loadMesh(ctx context.Context, c client.Client, services bool, serviceFlag string) (*mesh, error) {
	var peers wgmeshv1.MeshPeerList
	if err := c.List(ctx, &peers); err != nil {
		return nil, fmt.Errorf("listing meshpeers.wgmesh.io: %w", err)
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	uids := map[string]types.UID{}
	for _, n := range nodes.Items {
		uids[n.Name] = n.UID
	}
	m := &mesh{peers: peers.Items, nodes: nodes.Items,
		nodeUIDs: func(name string) (types.UID, bool) { u, ok := uids[name]; return u, ok }}
	if !services {
		return m, nil
	}
	var err error
	m.services, m.notes, err = findServiceCIDRs(ctx, c, serviceFlag)
	return m, err
}

// checkAllowedIPsFree refuses allowed IPs that the mesh already routes
// elsewhere (pod CIDRs, other peers, service CIDRs) or that hold a node's
// address: the operator would exclude the peer (AllowedIPsConflict).
func checkAllowedIPsFree(allowed []netip.Prefix, m *mesh) error {
	for _, p := range allowed {
		for _, s := range m.services.CIDRs {
			if p.Overlaps(s) {
				return fmt.Errorf("--allowed-ips: %s overlaps the service CIDR %s (%s)", p, s, m.services.Source)
			}
		}
		for i := range m.peers {
			for _, c := range m.peers[i].Spec.AllowedIPs {
				if q, err := netip.ParsePrefix(string(c)); err == nil && p.Overlaps(q) {
					return fmt.Errorf("--allowed-ips: %s overlaps %s in MeshPeer %s spec.allowedIPs", p, q, m.peers[i].Name)
				}
			}
		}
		for _, n := range m.nodes {
			for _, a := range n.Status.Addresses {
				if ip, err := netip.ParseAddr(a.Address); err == nil && p.Contains(ip.Unmap()) {
					return fmt.Errorf("--allowed-ips: %s contains the address %s of node %s: the peer would capture the node's underlay traffic", p, ip, n.Name)
				}
			}
		}
	}
	return nil
}
