package chart

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/repo"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// One real kube-apiserver + etcd for the package (envtest), with the CRDs from
// the chart's crds/ directory, as helm install would create them.
var (
	apiClient client.Client
	apiConfig *rest.Config
	warnings  = &warningLog{}
)

func TestMain(m *testing.M) {
	os.Exit(apiserver.Main(m, func(cfg *rest.Config) error {
		cfg.WarningHandlerWithContext = warnings
		apiConfig = cfg
		var err error
		apiClient, err = client.New(cfg, client.Options{Scheme: scheme.Scheme})
		return err
	}))
}

func needAPI(t *testing.T) { t.Helper(); apiserver.Need(t) }

// warningLog keeps the API server's warnings (deprecated fields, invalid
// but tolerated values): the chart must produce none.
type warningLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningLog) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warningLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

var _ rest.WarningHandlerWithContext = (*warningLog)(nil)

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := apiClient.Create(context.Background(), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

// install creates every rendered object for real, so the API server's own
// validation (schemas, pod template rules, RBAC references) judges them.
func install(t *testing.T, release, namespace string, s scenario) {
	t.Helper()
	ensureNamespace(t, namespace)
	ctx := context.Background()
	for _, o := range render(t, release, namespace, s) {
		if err := apiClient.Create(ctx, o); err != nil {
			t.Errorf("scenario %s: the API server refused %s %s/%s: %v", s.name, o.GetKind(), o.GetNamespace(), o.GetName(), err)
			continue
		}
		// Background, as Helm deletes: the default for a Job (orphan its
		// pods) draws a warning.
		t.Cleanup(func() {
			_ = apiClient.Delete(context.Background(), o, client.PropagationPolicy(metav1.DeletePropagationBackground))
		})
	}
	if w := warnings.take(); len(w) > 0 {
		t.Errorf("scenario %s: the API server warned:\n%s", s.name, strings.Join(w, "\n"))
	}
}

func TestAPIServerAcceptsEveryObject(t *testing.T) {
	needAPI(t)
	helmBinary(t)
	for i, s := range scenarios {
		t.Run(s.name, func(t *testing.T) {
			install(t, fmt.Sprintf("r%d", i), "wgmesh-system", s)
		})
	}
}

// kubebuilderRBAC matches operator/rbac.go's markers.
var kubebuilderRBAC = regexp.MustCompile(`\+kubebuilder:rbac:groups=([^,]*),resources=([^,]*),verbs=(\S+)`)

type access struct {
	group, resource, subresource, verb, namespace, name string
}

func (a access) String() string {
	r := a.resource
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	if a.name != "" {
		r += " " + a.name
	}
	if a.group != "" {
		r += "." + a.group
	}
	if a.namespace != "" {
		r += " in namespace " + a.namespace
	}
	return a.verb + " " + r
}

func allowed(t *testing.T, user string, a access) bool {
	t.Helper()
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User:   user,
		Groups: []string{"system:serviceaccounts", "system:authenticated"},
		ResourceAttributes: &authzv1.ResourceAttributes{
			Group: a.group, Resource: a.resource, Subresource: a.subresource, Verb: a.verb, Namespace: a.namespace, Name: a.name,
		},
	}}
	if err := apiClient.Create(context.Background(), sar); err != nil {
		t.Fatalf("SubjectAccessReview %s for %s: %v", a, user, err)
	}
	return sar.Status.Allowed
}

// TestRBAC asks the API server's authorizer whether the chart's service
// accounts may do what the binaries do: for the operator every kubebuilder
// marker in operator/rbac.go, for the agent what agent/ calls; and that the
// agent may not write what only the operator writes.
func TestRBAC(t *testing.T) {
	needAPI(t)
	helmBinary(t)
	const ns = "wgmesh-rbac"
	install(t, "wgmesh", ns, scenarios[0])
	operatorSA := "system:serviceaccount:" + ns + ":wgmesh-operator"
	agentSA := "system:serviceaccount:" + ns + ":wgmesh-agent"

	src, err := os.ReadFile(filepath.Join(repo.Root(t), "operator", "rbac.go"))
	if err != nil {
		t.Fatal(err)
	}
	markers := kubebuilderRBAC.FindAllStringSubmatch(string(src), -1)
	if len(markers) == 0 {
		t.Fatal("no kubebuilder RBAC markers found in operator/rbac.go")
	}
	for _, m := range markers {
		group := strings.Trim(m[1], `"`)
		for _, res := range strings.Split(m[2], ";") {
			resource, sub, _ := strings.Cut(res, "/")
			for _, verb := range strings.Split(m[3], ";") {
				a := access{group: group, resource: resource, subresource: sub, verb: verb}
				if resource == "leases" {
					a.namespace = "kube-system" // operator.leaderElectionNamespace
				}
				if !allowed(t, operatorSA, a) {
					t.Errorf("operator may not %s (marker %s)", a, m[0])
				}
			}
		}
	}

	for _, a := range []access{
		{resource: "nodes", verb: "get"}, {resource: "nodes", verb: "list"}, {resource: "nodes", verb: "watch"},
		{resource: "nodes", verb: "patch"}, // its own Node's annotations
		{group: "wgmesh.io", resource: "meshpeers", verb: "get"},
		{group: "wgmesh.io", resource: "meshpeers", verb: "list"},
		{group: "wgmesh.io", resource: "meshpeers", verb: "watch"},
		{group: "wgmesh.io", resource: "meshpeers", subresource: "status", verb: "patch"}, // server-side apply
		{group: "events.k8s.io", resource: "events", verb: "create", namespace: "default"},
		{group: "events.k8s.io", resource: "events", verb: "patch", namespace: "default"},
		{resource: "services", verb: "list"}, {resource: "services", verb: "watch"},
		{group: "discovery.k8s.io", resource: "endpointslices", verb: "list"},
		{group: "discovery.k8s.io", resource: "endpointslices", verb: "watch"},
		// As it stops: is its DaemonSet being deleted (helm uninstall)?
		{group: "apps", resource: "daemonsets", verb: "get", namespace: ns, name: "wgmesh-agent"},
	} {
		if !allowed(t, agentSA, a) {
			t.Errorf("agent may not %s", a)
		}
	}
	for _, a := range []access{
		{group: "wgmesh.io", resource: "meshpeers", verb: "create"},
		{group: "wgmesh.io", resource: "meshpeers", verb: "update"},
		{group: "wgmesh.io", resource: "meshpeers", verb: "patch"},
		{group: "wgmesh.io", resource: "meshpeers", verb: "delete"},
		{resource: "nodes", verb: "delete"},
		{resource: "nodes", verb: "create"},
		{resource: "nodes", verb: "update"},
		{resource: "nodes", subresource: "status", verb: "patch"},
		{group: "wgmesh.io", resource: "meshpeers", subresource: "status", verb: "update"},
		{group: "events.k8s.io", resource: "events", verb: "delete", namespace: "default"},
		// Events are events.k8s.io only (agent/kube's one writer), created and patched.
		{resource: "events", verb: "create", namespace: "default"},
		{resource: "events", verb: "patch", namespace: "default"},
		{group: "events.k8s.io", resource: "events", verb: "update", namespace: "default"},
		{resource: "secrets", verb: "get", namespace: ns},
		{group: "apps", resource: "daemonsets", verb: "get", namespace: ns, name: "other"},
		{group: "apps", resource: "daemonsets", verb: "get", namespace: "default", name: "wgmesh-agent"},
		{group: "apps", resource: "daemonsets", verb: "list", namespace: ns},
		{group: "apps", resource: "daemonsets", verb: "delete", namespace: ns, name: "wgmesh-agent"},
		{resource: "pods", verb: "get", namespace: ns},
		// The network policy's reads, only with agent.networkPolicy.
		{resource: "pods", verb: "list"}, {resource: "pods", verb: "watch"},
		{resource: "namespaces", verb: "list"}, {resource: "namespaces", verb: "watch"},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "list"},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "watch"},
	} {
		if allowed(t, agentSA, a) {
			t.Errorf("agent may %s; only the operator or nobody should", a)
		}
	}

	// With agent.networkPolicy the agent also reads every Pod, Namespace and
	// NetworkPolicy, and writes none of them.
	const npNS = "wgmesh-rbac-np"
	install(t, "wgmesh-np", npNS, scenario{name: "network-policy", values: "agent:\n  networkPolicy: true\n"})
	npAgentSA := "system:serviceaccount:" + npNS + ":wgmesh-np-agent"
	for _, a := range []access{
		{resource: "pods", verb: "list"}, {resource: "pods", verb: "watch"},
		{resource: "namespaces", verb: "list"}, {resource: "namespaces", verb: "watch"},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "list"},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "watch"},
		{resource: "nodes", verb: "watch"}, {resource: "services", verb: "watch"},
	} {
		if !allowed(t, npAgentSA, a) {
			t.Errorf("agent with agent.networkPolicy may not %s", a)
		}
	}
	for _, a := range []access{
		{resource: "pods", verb: "get", namespace: npNS},
		{resource: "pods", verb: "update", namespace: npNS},
		{resource: "pods", verb: "delete", namespace: npNS},
		{resource: "pods", subresource: "status", verb: "patch", namespace: npNS},
		{resource: "namespaces", verb: "get"},
		{resource: "namespaces", verb: "patch"},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "get", namespace: npNS},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "create", namespace: npNS},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "update", namespace: npNS},
		{group: "networking.k8s.io", resource: "networkpolicies", verb: "delete", namespace: npNS},
		{resource: "secrets", verb: "list"},
	} {
		if allowed(t, npAgentSA, a) {
			t.Errorf("agent with agent.networkPolicy may %s", a)
		}
	}

	// The uninstall hook: its own DaemonSets and listing pods, in its
	// namespace, nothing else.
	uninstallSA := "system:serviceaccount:" + ns + ":wgmesh-uninstall"
	for _, a := range []access{
		{group: "apps", resource: "daemonsets", verb: "get", namespace: ns, name: "wgmesh-agent"},
		{group: "apps", resource: "daemonsets", verb: "delete", namespace: ns, name: "wgmesh-agent"},
		{resource: "pods", verb: "list", namespace: ns},
	} {
		if !allowed(t, uninstallSA, a) {
			t.Errorf("the uninstall hook may not %s", a)
		}
	}
	for _, a := range []access{
		{group: "apps", resource: "daemonsets", verb: "delete", namespace: ns, name: "kube-proxy"},
		{group: "apps", resource: "daemonsets", verb: "delete", namespace: "default", name: "wgmesh-agent"},
		{group: "apps", resource: "daemonsets", verb: "deletecollection", namespace: ns},
		{resource: "pods", verb: "delete", namespace: ns},
		{resource: "pods", verb: "list", namespace: "default"},
		{resource: "nodes", verb: "get"},
		{resource: "secrets", verb: "get", namespace: ns},
	} {
		if allowed(t, uninstallSA, a) {
			t.Errorf("the uninstall hook may %s", a)
		}
	}
	if allowed(t, operatorSA, access{resource: "secrets", verb: "list"}) {
		t.Error("operator may list secrets")
	}
}
