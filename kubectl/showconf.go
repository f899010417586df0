package kubectl

import (
	"context"
	"fmt"

	"sigs.k8s.io/controller-runtime/pkg/client"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func init() {
	register(Command{
		Name:  "showconf",
		Usage: "NAME [--private-key-file FILE] [--keepalive 25] [--service-via NODE] [--service-cidrs CIDR[,CIDR]]",
		Help: `prints the wg-quick configuration of the external peer NAME with the
mesh as it is now (run it again after nodes come or go). The private key
comes from FILE (a key alone or the configuration add-peer wrote);
without it the configuration holds a marked placeholder.`,
		Run: runShowConf,
	})
}

type showConfFlags struct {
	peerConfFlags
	PrivateKeyFile string
}

func parseShowConf(args []string) (*KubeFlags, *showConfFlags, error) {
	var kf KubeFlags
	f := &showConfFlags{peerConfFlags: peerConfFlags{Keepalive: -1}}
	fs := NewFlagSet("showconf", &kf)
	fs.StringVar(&f.PrivateKeyFile, "private-key-file", "", "file with the peer's private key (a key alone or a wg-quick configuration)")
	f.bind(fs, "PersistentKeepalive in seconds towards the nodes (default: the MeshPeer's spec.persistentKeepalive)")
	if err := f.parse(fs, args); err != nil {
		return nil, nil, err
	}
	return &kf, f, nil
}

func runShowConf(env *Env, args []string) error {
	kf, f, err := parseShowConf(args)
	if err != nil {
		return err
	}
	var key string
	if f.PrivateKeyFile != "" {
		if key, err = readPrivateKey(f.PrivateKeyFile); err != nil {
			return err
		}
	}
	c, ctx, cancel, err := kf.Connect()
	if err != nil {
		return err
	}
	defer cancel()
	return showConf(ctx, env, c, f, key)
}

func showConf(ctx context.Context, env *Env, c client.Client, f *showConfFlags, key string) error {
	m, err := loadMesh(ctx, c, true, f.ServiceCIDRs)
	if err != nil {
		return err
	}
	for _, n := range m.notes {
		fmt.Fprintf(env.Err, "note: %s\n", n)
	}
	var mp *wgmeshv1.MeshPeer
	for i := range m.peers {
		if m.peers[i].Name == f.Name {
			mp = &m.peers[i]
		}
	}
	switch {
	case mp == nil:
		return fmt.Errorf("MeshPeer %s not found (kubectl get meshpeers lists them; add-peer creates one)", f.Name)
	case wgmeshv1.IsNodePeer(mp, m.nodeUIDs):
		return fmt.Errorf("MeshPeer %s is node %s's own peer, not an external one: showconf is for external peers", f.Name, mp.Spec.NodeName)
	}
	if key != "" {
		pub, _ := publicKeyOf(key)
		if pub != string(mp.Spec.PublicKey) {
			return fmt.Errorf("--private-key-file=%s: its public key %s is not MeshPeer %s's spec.publicKey %s", f.PrivateKeyFile, pub, f.Name, mp.Spec.PublicKey)
		}
	}
	keepalive := f.Keepalive
	if keepalive < 0 {
		keepalive = 0
		if mp.Spec.PersistentKeepalive != nil {
			keepalive = *mp.Spec.PersistentKeepalive
		}
	}
	conf, err := renderConf(confInput{Peer: mp, PrivateKey: key, Peers: m.peers, NodeUIDs: m.nodeUIDs,
		Services: m.services, ServiceVia: f.ServiceVia, Keepalive: keepalive})
	if err != nil {
		return err
	}
	if key == "" {
		fmt.Fprintf(env.Err, "note: PrivateKey is a placeholder: pass --private-key-file with the key add-peer wrote\n")
	}
	_, err = fmt.Fprint(env.Out, conf)
	return err
}
