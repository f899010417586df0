package kubectl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/wait"
)

// add-peer and showconf against a real API server with the CRD (its CEL
// rules) and the API server's own ServiceCIDR: the MeshPeer carries only
// the public key, the file is 0600 and never overwritten, the refusals
// name the object, field and value.
func TestAddPeerShowConfAPI(t *testing.T) {
	if reason := apiserver.SkipReason(); reason != "" {
		apiserver.SkipOrFail(t, reason)
	}
	env, cfg, err := apiserver.StartWith(apiserver.Options{ServiceCIDR: "198.18.128.0/20"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = wgmeshv1.AddToScheme(scheme)
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Two nodes with their MeshPeers as the operator writes them.
	for i, name := range []string{"wgm-ap-n1", "wgm-ap-n2"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if err := c.Create(ctx, node); err != nil {
			t.Fatal(err)
		}
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: []string{"198.18.0.11", "198.18.0.12"}[i]}}
		if err := c.Status().Update(ctx, node); err != nil {
			t.Fatal(err)
		}
		mp := meshNodePeer(name, []string{keyN1, keyN2}[i], []string{"198.18.0.11:51820", ""}[i], []string{"198.19.1.0/24", "198.19.2.0/24"}[i])
		mp.OwnerReferences[0].UID = node.UID
		status := mp.Status
		if err := c.Create(ctx, &mp); err != nil {
			t.Fatal(err)
		}
		mp.Status = status
		mp.Status.Conditions[0].LastTransitionTime = metav1.Now()
		if err := c.Status().Update(ctx, &mp); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "wgml0.conf")
	var out, errOut bytes.Buffer
	e := &Env{Out: &out, Err: &errOut, Now: time.Now}
	_, f, err := parseAddPeer([]string{"wgm-ap-laptop", "--allowed-ips", "198.18.200.1/32", "-o", conf})
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceCIDR the API server made may take a moment.
	wait.For(t, 30*time.Second, "the API server's ServiceCIDR", func() error {
		s, _, err := findServiceCIDRs(ctx, c, "")
		if err == nil && len(s.CIDRs) == 0 {
			return errors.New("none yet")
		}
		return err
	})
	if err := addPeer(ctx, e, c, f); err != nil {
		t.Fatalf("add-peer: %v\n%s", err, errOut.String())
	}
	st, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", conf, st.Mode().Perm())
	}
	text, _ := os.ReadFile(conf)
	key, err := readPrivateKey(conf)
	if err != nil {
		t.Fatal(err)
	}
	mp := &wgmeshv1.MeshPeer{}
	if err := c.Get(ctx, client.ObjectKey{Name: "wgm-ap-laptop"}, mp); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(mp)
	pub, _ := publicKeyOf(key)
	switch {
	case mp.Spec.NodeName != "" || string(mp.Spec.PublicKey) != pub:
		t.Errorf("MeshPeer spec %+v, want no nodeName and public key %s", mp.Spec, pub)
	case strings.Contains(string(raw), key):
		t.Errorf("the private key reached the API server: %s", raw)
	case mp.Spec.PersistentKeepalive == nil || *mp.Spec.PersistentKeepalive != 25:
		t.Errorf("spec.persistentKeepalive = %v, want 25", mp.Spec.PersistentKeepalive)
	}
	for _, want := range []string{"Service CIDRs 198.18.128.0/20 (from ServiceCIDR kubernetes), routed via node wgm-ap-n1",
		"AllowedIPs = 198.19.1.0/24, 198.18.128.0/20\n", "# node wgm-ap-n2 left out: no endpoint", "Address = 198.18.200.1/32\n"} {
		if !strings.Contains(string(text), want) {
			t.Errorf("configuration lacks %q:\n%s", want, text)
		}
	}
	if !strings.Contains(out.String(), "written to "+conf+" (mode 0600") {
		t.Errorf("add-peer said %q", out.String())
	}

	// showconf with the key file prints the same configuration.
	out.Reset()
	if err := showConf(ctx, e, c, &showConfFlags{peerConfFlags: peerConfFlags{Name: "wgm-ap-laptop", Keepalive: -1}, PrivateKeyFile: conf}, key); err != nil {
		t.Fatal(err)
	}
	if out.String() != string(text) {
		t.Errorf("showconf differs from add-peer's file:\n%s\n---\n%s", out.String(), text)
	}
	out.Reset()
	if err := showConf(ctx, e, c, &showConfFlags{peerConfFlags: peerConfFlags{Name: "wgm-ap-laptop", Keepalive: -1}}, ""); err != nil || !strings.Contains(out.String(), "PrivateKey = <PRIVATE KEY") {
		t.Errorf("showconf without key: %v\n%s", err, out.String())
	}

	// The agent DaemonSet's --service-cidrs wins over the ServiceCIDRs.
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "wgmesh-agent", Labels: agentSelector},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: agentSelector},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: agentSelector}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
				Name: "agent", Image: "wgmesh", Args: []string{"--mtu=0", "--service-cidrs=198.18.144.0/20"}}}}}}}
	if err := c.Create(ctx, ds); err != nil {
		t.Fatal(err)
	}
	if s, _, err := findServiceCIDRs(ctx, c, ""); err != nil || prefixList(s.CIDRs) != "198.18.144.0/20" || s.Source != "from DaemonSet default/wgmesh-agent argument --service-cidrs" {
		t.Errorf("service CIDRs with the agent DaemonSet: %+v, %v", s, err)
	}

	// Refusals: existing file, existing MeshPeer, taken ranges, a wrong key
	// file, a node peer, and the API server's own CEL refusal.
	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"file exists", func() error {
			_, f, _ := parseAddPeer([]string{"wgm-ap-other", "--allowed-ips", "198.18.200.2/32", "-o", conf})
			return addPeer(ctx, e, c, f)
		}, "add-peer never overwrites a configuration"},
		{"name taken", func() error {
			_, f, _ := parseAddPeer([]string{"wgm-ap-laptop", "--allowed-ips", "198.18.200.2/32"})
			return addPeer(ctx, e, c, f)
		}, "MeshPeer wgm-ap-laptop already exists"},
		{"range taken", func() error {
			_, f, _ := parseAddPeer([]string{"wgm-ap-other", "--allowed-ips", "198.18.200.0/24"})
			return addPeer(ctx, e, c, f)
		}, "--allowed-ips: 198.18.200.0/24 overlaps 198.18.200.1/32 in MeshPeer wgm-ap-laptop spec.allowedIPs"},
		{"wrong key", func() error {
			return showConf(ctx, e, c, &showConfFlags{peerConfFlags: peerConfFlags{Name: "wgm-ap-laptop"}, PrivateKeyFile: "k"}, laptopKey)
		}, "--private-key-file=k: its public key"},
		{"node peer", func() error {
			return showConf(ctx, e, c, &showConfFlags{peerConfFlags: peerConfFlags{Name: "wgm-ap-n1"}}, "")
		}, "MeshPeer wgm-ap-n1 is node wgm-ap-n1's own peer"},
		{"unknown peer", func() error {
			return showConf(ctx, e, c, &showConfFlags{peerConfFlags: peerConfFlags{Name: "wgm-ap-none"}}, "")
		}, "MeshPeer wgm-ap-none not found"},
		{"CEL refusal", func() error {
			// What local validation would have stopped, sent anyway: the
			// API server's message comes through with field and value.
			return addPeer(ctx, e, c, &addPeerFlags{peerConfFlags: peerConfFlags{Name: "wgm-ap-cel", Keepalive: 25}, AllowedIPs: f.AllowedIPs[:0], Endpoint: "gw..example:51820"})
		}, "creating MeshPeer wgm-ap-cel: the API server refused it: MeshPeer.wgmesh.io \"wgm-ap-cel\" is invalid: spec.endpoint: Invalid value: \"gw..example:51820\": endpoint gw..example:51820 is not host:port"},
	} {
		err := tc.run()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "wgm-ap-other"}, &wgmeshv1.MeshPeer{}); err == nil {
		t.Errorf("a refused add-peer left MeshPeer wgm-ap-other behind")
	}
}
