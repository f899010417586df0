package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/netns"
)

// A cluster split across a VM (test/vm, hack/vm.sh --cluster): the control plane, the
// operator, the router and the internet host run on the host with Options.ControlPlaneOnly;
// the nodes run in the guest with Options.Remote, whose own underlay bridge holds the
// guest's NIC, a tap on the host's underlay bridge. The API server inside the guest's
// software emulation would be about ten times slower; here it runs at the host's speed.

// RemoteEnv names the remote.json a cluster in a VM uses (Options.Remote's default).
const RemoteEnv = "WGMESH_CLUSTER_REMOTE"

// RemoteFile is what a ControlPlaneOnly cluster writes into its work directory.
const RemoteFile = "remote.json"

// RemoteNIC is the guest's NIC: the underlay's wire to the host.
const RemoteNIC = "eth0"

// The guest's own end on the underlay (the host's API server end is APIServerIP).
const (
	remoteClientIP  = "198.18.0.2"
	remoteClientIP6 = "2001:db8::2"
)

// remote is the contents of RemoteFile.
type remote struct {
	Kubeconfig  string // the admin's
	CAFile      string
	CAKeyFile   string
	DualStack   bool
	UnderlayMTU int
}

// remoteDefaults fills Remote from the environment and refuses what a split cluster cannot
// do.
func (o *Options) remoteDefaults() error {
	if o.Remote == "" && !o.ControlPlaneOnly {
		o.Remote = os.Getenv(RemoteEnv)
	}
	switch {
	case o.Remote != "" && o.ControlPlaneOnly:
		return errors.New("options: Remote and ControlPlaneOnly exclude each other")
	case o.Remote != "" && o.NATNodes > 0:
		return fmt.Errorf("options: NATNodes=%d with Remote: the NAT cloud's bridge is on the other side of the VM", o.NATNodes)
	case o.Remote != "" && o.RealNodes:
		return errors.New("options: RealNodes with Remote: not supported")
	}
	return nil
}

// writeRemote writes RemoteFile (and the CA key it names) for a cluster in a VM.
func (c *Cluster) writeRemote() error {
	keyFile := filepath.Join(c.WorkDir, "pki", "ca.key")
	der, err := x509.MarshalECPrivateKey(c.cp.pki.caKey)
	if err != nil {
		return err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", der); err != nil {
		return err
	}
	b, err := json.MarshalIndent(remote{Kubeconfig: c.Kubeconfig, CAFile: c.cp.pki.CAFile, CAKeyFile: keyFile,
		DualStack: c.opts.DualStack, UnderlayMTU: c.opts.UnderlayMTU}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.WorkDir, RemoteFile), b, 0o600)
}

// useRemoteControlPlane takes the control plane that Remote describes: its admin
// kubeconfig, and its CA to issue the nodes' credentials. A control plane serves one
// cluster: the next one would find the first one's Nodes and MeshPeers.
func (c *Cluster) useRemoteControlPlane(ctx context.Context) error {
	r, err := readRemote(c.opts.Remote)
	if err != nil {
		return err
	}
	used := filepath.Join(RunDir, "remote-used")
	if _, err := os.Stat(used); err == nil {
		return fmt.Errorf("remote control plane %s already served a cluster in this VM: run each cluster test in its own VM", c.opts.Remote)
	}
	if err := os.WriteFile(used, []byte(c.opts.Remote+"\n"), 0o644); err != nil {
		return err
	}
	if c.cp.pki, err = loadPKI(filepath.Join(c.WorkDir, "pki"), r.CAFile, r.CAKeyFile); err != nil {
		return err
	}
	c.Kubeconfig = r.Kubeconfig
	if err := c.newClient(); err != nil {
		return err
	}
	return waitUntil(ctx, 60*time.Second, "the remote API server "+APIServerIP, nil, func() bool {
		return c.Client.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{}) == nil
	})
}

func readRemote(path string) (remote, error) {
	var r remote
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("remote control plane: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("remote control plane %s: %w", path, err)
	}
	return r, nil
}

// setupRemoteNetwork makes the guest's underlay bridge, moves the NIC onto it, and gives
// this namespace an address there (the API server's end is on the host). The router and
// the internet host are the host's.
func (c *Cluster) setupRemoteNetwork() error {
	r, err := readRemote(c.opts.Remote)
	if err != nil {
		return err
	}
	if r.DualStack != c.opts.DualStack || r.UnderlayMTU != c.opts.UnderlayMTU {
		return fmt.Errorf("remote control plane %s was made with DualStack=%v UnderlayMTU=%d, this cluster wants %v and %d",
			c.opts.Remote, r.DualStack, r.UnderlayMTU, c.opts.DualStack, c.opts.UnderlayMTU)
	}
	n := &c.net
	if n.underlay, err = netns.New(UnderlayNS); err != nil {
		return err
	}
	if err := netns.Bridge(n.underlay, bridgeName, c.opts.UnderlayMTU); err != nil {
		return err
	}
	nic, err := netlink.LinkByName(RemoteNIC)
	if err != nil {
		return fmt.Errorf("the VM's NIC %s: %w", RemoteNIC, err)
	}
	target, err := vnetns.GetFromPath(n.underlay.Path())
	if err != nil {
		return err
	}
	defer target.Close()
	// Back in this namespace when the underlay's goes away (a physical device).
	if err := netlink.LinkSetNsFd(nic, int(target)); err != nil {
		return fmt.Errorf("moving %s into %s: %w", RemoteNIC, UnderlayNS, err)
	}
	if err := netns.SetMaster(n.underlay, RemoteNIC, bridgeName); err != nil {
		return err
	}
	if err := netns.LinkUp(n.underlay, RemoteNIC); err != nil {
		return err
	}
	if err := c.plug(netns.Host(), hostLink, "cp0", n.underlay); err != nil {
		return err
	}
	return c.addrs(netns.Host(), hostLink, remoteClientIP+"/24", remoteClientIP6+"/64")
}

// loadPKI is a pki whose CA is an existing one (certificate and key files), writing what
// it issues into dir.
func loadPKI(dir, caFile, keyFile string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("CA %s / %s: no PEM block", caFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, err
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, err
	}
	if !key.PublicKey.Equal(cert.PublicKey.(*ecdsa.PublicKey)) {
		return nil, fmt.Errorf("CA key %s does not match %s", keyFile, caFile)
	}
	p := &pki{dir: dir, caCert: cert, caKey: key, CAFile: filepath.Join(dir, "ca.crt")}
	if err := os.WriteFile(p.CAFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// UnderlayBridge is the underlay's bridge, in UnderlayNS.
const UnderlayBridge = bridgeName
