package v1alpha1_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/apiserver"
)

// These tests ask the real kube-apiserver (envtest) to validate MeshPeers
// against the CRD in charts/wgmesh/crds.
var (
	testCfg    *rest.Config
	testClient client.Client
)

func TestMain(m *testing.M) {
	os.Exit(apiserver.Main(m, func(cfg *rest.Config) error {
		testCfg = cfg
		scheme := runtime.NewScheme()
		if err := wgv1.AddToScheme(scheme); err != nil {
			return err
		}
		var err error
		testClient, err = client.New(cfg, client.Options{Scheme: scheme})
		return err
	}))
}

func needAPI(t *testing.T) { t.Helper(); apiserver.Need(t) }

const goodKey = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

func ka(v int32) *int32 { return &v }

func TestMeshPeerValidationRefusesBadFields(t *testing.T) {
	needAPI(t)
	tests := []struct {
		name  string
		spec  wgv1.MeshPeerSpec
		field string // the field path the error must name
	}{
		{"key too short", wgv1.MeshPeerSpec{PublicKey: "AAAA"}, "spec.publicKey"},
		{"key not base64", wgv1.MeshPeerSpec{PublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8D!="}, "spec.publicKey"},
		{"key no padding", wgv1.MeshPeerSpec{PublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dgg"}, "spec.publicKey"},
		{"key 33 bytes", wgv1.MeshPeerSpec{PublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8DgAAA=="}, "spec.publicKey"},
		{"key non-canonical last char", wgv1.MeshPeerSpec{PublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh="}, "spec.publicKey"},
		{"key empty", wgv1.MeshPeerSpec{PublicKey: ""}, "spec.publicKey"},
		{"endpoint no port", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "198.18.0.11"}, "spec.endpoint"},
		{"endpoint port 0", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "198.18.0.11:0"}, "spec.endpoint"},
		{"endpoint port 65536", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "198.18.0.11:65536"}, "spec.endpoint"},
		{"endpoint port 99999", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "198.18.0.11:99999"}, "spec.endpoint"},
		{"endpoint empty port", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "gw.example.org:"}, "spec.endpoint"},
		{"endpoint ipv6 unbracketed", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "2001:db8::1:51820"}, "spec.endpoint"},
		{"endpoint bad ipv6", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "[2001:db8::1::2]:51820"}, "spec.endpoint"},
		{"endpoint spaces", wgv1.MeshPeerSpec{PublicKey: goodKey, Endpoint: "gw example:51820"}, "spec.endpoint"},
		{"allowedIPs address", wgv1.MeshPeerSpec{PublicKey: goodKey, AllowedIPs: []wgv1.CIDR{"198.19.1.1"}}, "spec.allowedIPs[0]"},
		{"allowedIPs host bits", wgv1.MeshPeerSpec{PublicKey: goodKey, AllowedIPs: []wgv1.CIDR{"198.19.1.0/24", "198.19.2.7/24"}}, "spec.allowedIPs[1]"},
		{"allowedIPs text", wgv1.MeshPeerSpec{PublicKey: goodKey, AllowedIPs: []wgv1.CIDR{"pods"}}, "spec.allowedIPs[0]"},
		{"allowedIPs ipv6 /129", wgv1.MeshPeerSpec{PublicKey: goodKey, AllowedIPs: []wgv1.CIDR{"2001:db8::/129"}}, "spec.allowedIPs[0]"},
		{"keepalive -1", wgv1.MeshPeerSpec{PublicKey: goodKey, PersistentKeepalive: ka(-1)}, "spec.persistentKeepalive"},
		{"keepalive 65536", wgv1.MeshPeerSpec{PublicKey: goodKey, PersistentKeepalive: ka(65536)}, "spec.persistentKeepalive"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("wgm-bad-%d", i)}, Spec: tt.spec}
			err := testClient.Create(context.Background(), mp)
			if err == nil {
				testClient.Delete(context.Background(), mp) //nolint:errcheck
				t.Fatalf("API server accepted %+v", tt.spec)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("err = %v, want Invalid", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %s", err, tt.field)
			}
			var fields []string
			if st, ok := err.(apierrors.APIStatus); ok && st.Status().Details != nil {
				for _, c := range st.Status().Details.Causes {
					fields = append(fields, c.Field)
				}
			}
			found := false
			for _, f := range fields {
				found = found || f == tt.field
			}
			if !found {
				t.Fatalf("error causes name fields %v, want %s (error: %v)", fields, tt.field, err)
			}
			t.Logf("refused: %v", err)
		})
	}
}

func TestMeshPeerValidationUpdateRefused(t *testing.T) {
	needAPI(t)
	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-upd"}, Spec: wgv1.MeshPeerSpec{PublicKey: goodKey}}
	if err := testClient.Create(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testClient.Delete(context.Background(), mp) }) //nolint:errcheck
	mp.Spec.Endpoint = "198.18.0.11:0"
	if err := testClient.Update(context.Background(), mp); !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.endpoint") {
		t.Fatalf("update with a bad endpoint: err = %v, want Invalid naming spec.endpoint", err)
	}
}

func TestMeshPeerGoodObjectsRoundTrip(t *testing.T) {
	needAPI(t)
	tests := []wgv1.MeshPeerSpec{
		{PublicKey: goodKey},
		{NodeName: "wgm-node-1", PublicKey: goodKey, Endpoint: "198.18.0.11:51820", AllowedIPs: []wgv1.CIDR{"198.19.1.0/24", "2001:db8:100:1::/64"}, PersistentKeepalive: ka(25)},
		{PublicKey: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=", Endpoint: "[2001:db8::11]:1", PersistentKeepalive: ka(0)},
		{PublicKey: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", Endpoint: "vpn.example.org:65535", AllowedIPs: []wgv1.CIDR{"198.18.200.7/32"}, PersistentKeepalive: ka(65535)},
	}
	for i, spec := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("wgm-good-%d", i)}, Spec: spec}
			if err := testClient.Create(context.Background(), mp); err != nil {
				t.Fatalf("create %+v: %v", spec, err)
			}
			t.Cleanup(func() { testClient.Delete(context.Background(), mp) }) //nolint:errcheck
			got := &wgv1.MeshPeer{}
			if err := testClient.Get(context.Background(), client.ObjectKeyFromObject(mp), got); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got.Spec.AllowedIPs) != fmt.Sprintf("%+v", spec.AllowedIPs) || got.Spec.PublicKey != spec.PublicKey ||
				got.Spec.Endpoint != spec.Endpoint || got.Spec.NodeName != spec.NodeName ||
				(spec.PersistentKeepalive != nil && (got.Spec.PersistentKeepalive == nil || *got.Spec.PersistentKeepalive != *spec.PersistentKeepalive)) {
				t.Fatalf("round trip: got %+v, want %+v", got.Spec, spec)
			}
			// Status is a subresource: the agent's writes go there.
			got.Status = wgv1.MeshPeerStatus{Connected: "2/3", ConnectedPeers: 2, TotalPeers: 3, MTU: 1420, ObservedGeneration: got.Generation,
				Conditions: []metav1.Condition{{Type: wgv1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Up", Message: "ok", LastTransitionTime: metav1.Now()}}}
			if err := testClient.Status().Update(context.Background(), got); err != nil {
				t.Fatalf("status update: %v", err)
			}
		})
	}
}

func TestMeshPeerPrinterColumns(t *testing.T) {
	needAPI(t)
	cs, err := apiextensionsclient.NewForConfig(testCfg)
	if err != nil {
		t.Fatal(err)
	}
	crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(context.Background(), "meshpeers.wgmesh.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Scope != apiextensionsv1.ClusterScoped || len(crd.Spec.Names.ShortNames) != 1 || crd.Spec.Names.ShortNames[0] != "mp" {
		t.Fatalf("scope %s, short names %v", crd.Spec.Scope, crd.Spec.Names.ShortNames)
	}
	var v *apiextensionsv1.CustomResourceDefinitionVersion
	for i := range crd.Spec.Versions {
		if crd.Spec.Versions[i].Name == "v1alpha1" {
			v = &crd.Spec.Versions[i]
		}
	}
	if v == nil || v.Subresources == nil || v.Subresources.Status == nil {
		t.Fatalf("v1alpha1 with a status subresource not found")
	}
	var cols []string
	wide := map[string]bool{}
	for _, c := range v.AdditionalPrinterColumns {
		cols = append(cols, strings.ToUpper(c.Name))
		wide[strings.ToUpper(c.Name)] = c.Priority > 0
	}
	for _, want := range []string{"NODE", "ENDPOINT", "ALLOWED-IPS", "CONNECTED", "READY", "AGE", "PUBLIC-KEY", "UNREACHABLE", "LOCATION"} {
		if _, ok := wide[want]; !ok {
			t.Errorf("printer column %s missing (have %v)", want, cols)
		}
	}
	if !wide["PUBLIC-KEY"] || !wide["UNREACHABLE"] || !wide["LOCATION"] || wide["NODE"] {
		t.Errorf("PUBLIC-KEY, UNREACHABLE and LOCATION should show only with -o wide, the rest always: %v", wide)
	}

	// And what a user sees, through the real kubectl.
	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-print"}, Spec: wgv1.MeshPeerSpec{NodeName: "wgm-node-1", PublicKey: goodKey, Endpoint: "198.18.0.11:51820", AllowedIPs: []wgv1.CIDR{"198.19.1.0/24"},
		Location: "eu-west-1", Candidates: []wgv1.Candidate{{Kind: wgv1.CandidatePrivate, Endpoint: "198.18.10.11:51820"}, {Kind: wgv1.CandidatePublic, Endpoint: "198.18.0.11:51820"}}}}
	if err := testClient.Create(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testClient.Delete(context.Background(), mp) }) //nolint:errcheck
	stdout, stderr, err := apiserver.Shared().ControlPlane.KubeCtl().Run("get", "mp", "wgm-print", "-o", "wide")
	if err != nil {
		e, _ := io.ReadAll(stderr)
		t.Fatalf("kubectl get mp: %v: %s", err, e)
	}
	out, _ := io.ReadAll(stdout)
	t.Logf("kubectl get mp -o wide:\n%s", out)
	header := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])
	if strings.Join(header, " ") != "NAME NODE ENDPOINT ALLOWED-IPS CONNECTED READY AGE PUBLIC-KEY UNREACHABLE LOCATION" {
		t.Errorf("kubectl header = %v", header)
	}
	for _, want := range []string{"wgm-node-1", "198.18.0.11:51820", "198.19.1.0/24", goodKey, "eu-west-1"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("kubectl output lacks %s", want)
		}
	}
}

// TestMeshPeerLearnedEndpointsValidated: status.learnedEndpoints takes IP
// addresses only, at most 32, each naming a peer; a bad entry is refused
// naming the field and the value.
func TestMeshPeerLearnedEndpointsValidated(t *testing.T) {
	needAPI(t)
	mp := &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: "wgm-learned"}, Spec: wgv1.MeshPeerSpec{PublicKey: goodKey}}
	if err := testClient.Create(context.Background(), mp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { testClient.Delete(context.Background(), mp) }) //nolint:errcheck
	write := func(l []wgv1.LearnedEndpoint) error {
		got := &wgv1.MeshPeer{}
		if err := testClient.Get(context.Background(), client.ObjectKeyFromObject(mp), got); err != nil {
			t.Fatal(err)
		}
		got.Status.LearnedEndpoints = l
		return testClient.Status().Update(context.Background(), got)
	}
	if err := write([]wgv1.LearnedEndpoint{{Peer: "wgm-nat-1", Address: "198.18.100.1"}, {Peer: "wgm-nat-2", Address: "2001:db8::1"}}); err != nil {
		t.Fatalf("good learned endpoints refused: %v", err)
	}
	var many []wgv1.LearnedEndpoint
	for i := range 33 {
		many = append(many, wgv1.LearnedEndpoint{Peer: fmt.Sprintf("n%d", i), Address: "198.18.100.1"})
	}
	for _, tt := range []struct {
		name string
		l    []wgv1.LearnedEndpoint
		want string
	}{
		{"address with port", []wgv1.LearnedEndpoint{{Peer: "n1", Address: "198.18.100.1:51820"}}, "learnedEndpoints address 198.18.100.1:51820 is not an IPv4 or IPv6 address"},
		{"address with zone", []wgv1.LearnedEndpoint{{Peer: "n1", Address: "fe80::1%eth0"}}, "status.learnedEndpoints[0].address"},
		{"no peer", []wgv1.LearnedEndpoint{{Address: "198.18.100.1"}}, "status.learnedEndpoints[0].peer"},
		{"33 entries", many, "status.learnedEndpoints"},
	} {
		err := write(tt.l)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want Invalid containing %q", tt.name, err, tt.want)
		}
	}
}
