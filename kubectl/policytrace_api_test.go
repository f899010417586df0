package kubectl

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/wait"
)

// TestPolicyTraceAPI: `kubectl wgmesh policy trace` as a user runs it, with
// a kubeconfig, against a real API server holding the trace world (the
// objects validated and stored by the API server, the Service's ClusterIP
// allocated by it): a Service traced to both endpoints, text and JSON; a
// user who may read only the two namespaces' objects gets the same verdict,
// told what could not be read (the API server's RBAC refuses the rest);
// refusals name the object.
func TestPolicyTraceAPI(t *testing.T) {
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
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Create the world; the API server takes status through its own
	// subresource, and allocates the ClusterIP.
	for _, o := range traceWorld() {
		o.SetResourceVersion("")
		var status any
		switch x := o.(type) {
		case *corev1.Pod:
			status = x.Status
			x.UID = ""
		case *corev1.Node:
			status = x.Status
		case *corev1.Service:
			x.Spec.ClusterIP, x.Spec.IPFamilies = "", nil
		case *corev1.Namespace:
			if x.Name == "kube-system" {
				continue // the API server has it
			}
		}
		if err := c.Create(ctx, o); err != nil {
			t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
		}
		switch x := o.(type) {
		case *corev1.Pod:
			x.Status = status.(corev1.PodStatus)
			if err := c.Status().Update(ctx, x); err != nil {
				t.Fatalf("pod %s status: %v", x.Name, err)
			}
		case *corev1.Node:
			x.Status = status.(corev1.NodeStatus)
			if err := c.Status().Update(ctx, x); err != nil {
				t.Fatalf("node %s status: %v", x.Name, err)
			}
		}
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "db", Name: "postgres"}, svc); err != nil {
		t.Fatal(err)
	}

	run := func(kubeconfig string, args ...string) (string, error) {
		var out, errOut bytes.Buffer
		e := &Env{Out: &out, Err: &errOut, Now: time.Now}
		err := runPolicy(e, append([]string{"trace", "--kubeconfig", kubeconfig}, args...))
		return out.String(), err
	}
	admin := userKubeconfig(t, env, envtest.User{Name: "wgmesh-trace-admin", Groups: []string{"system:masters"}})

	out, err := run(admin, "--from", "web/client", "--to", "svc/db/postgres", "--port", "pg")
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the Service", out,
		"Allowed to 1 of 2 endpoints: TCP/pg from pod web/client to service db/postgres\n",
		"Service db/postgres: ClusterIP "+svc.Spec.ClusterIP+", port 5432/TCP (pg) -> targetPort pg; 2 ready endpoints traced after the service NAT (1 not ready)",
		"pod web/client (198.19.1.10, node n1) -> pod db/server-1 (198.19.1.20, node n1) TCP/5432: ALLOWED",
		"pod web/client (198.19.1.10, node n1) -> pod db/server-2 (198.19.2.20, node n2) TCP/6432: DENIED",
		"  port: service port 5432/TCP (pg) -> targetPort pg -> TCP/6432 on pod db/server-2",
		"* db/allow-web ingress rule 0: from[0] (namespaceSelector team=web, podSelector app=client), ports[0] (TCP/pg)",
		"  web/egress egress rule 0: to[0] (namespaceSelector kubernetes.io/metadata.name=db, podSelector {}), no port matches (TCP/5432)",
	)
	if strings.Contains(out, "cannot") {
		t.Errorf("an admin's trace says something could not be read:\n%s", out)
	}
	t.Logf("kubectl wgmesh policy trace --from web/client --to svc/db/postgres --port pg\n%s", out)

	// The ClusterIP the API server allocated is traced as its Service.
	out, err = run(admin, "--from", "web/client", "--to", svc.Spec.ClusterIP, "--port", "5432")
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the ClusterIP", out, "Allowed to 1 of 2 endpoints: TCP/5432 from pod web/client to service db/postgres\n",
		svc.Spec.ClusterIP+" is Service db/postgres's ClusterIP: traced as --to svc/db/postgres")

	out, err = run(admin, "--from", "kube-system/host", "--to", "db/server-1", "--port", "5432", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var res traceResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if res.Verdict != "denied" || res.Paths[0].Egress.Reason != "not-a-pod" || !res.Paths[0].Source.HostNetwork || res.Paths[0].Ingress.Reason != "denied" {
		t.Errorf("host-network source: %s", out)
	}

	// A user who may read pods, policies, Services and EndpointSlices of
	// web, db and kube-system only: the same verdict, and what it could not
	// read is said.
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "services"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"networkpolicies"}, Verbs: []string{"list"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list"}},
	}
	for _, ns := range []string{"web", "db", "kube-system"} {
		role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "trace"}, Rules: rules}
		binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "trace"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "trace"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "wgmesh-trace-dev"}}}
		if err := c.Create(ctx, role); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
	}
	dev := userKubeconfig(t, env, envtest.User{Name: "wgmesh-trace-dev"})
	_, err = run(dev, "--from", "web/client", "--to", "svc/db/postgres", "--port", "5432")
	if want := `reading namespace db: namespaces "db" is forbidden: User "wgmesh-trace-dev" cannot get resource "namespaces" in API group "" in the namespace "db"; NetworkPolicy db/allow-web selects peers by namespace labels (spec.ingress[0].from[0].namespaceSelector), so the verdict depends on them`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a user who cannot read namespace labels a policy selects by: error %v, want %q", err, want)
	}
	// With the namespaces readable (a ClusterRole for get), the same verdict
	// as the admin's; the nodes that cannot be listed are said.
	nsReader := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "wgmesh-trace-namespaces"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}}}
	nsBinding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "wgmesh-trace-namespaces"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: nsReader.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "wgmesh-trace-dev"}}}
	if err := c.Create(ctx, nsReader); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, nsBinding); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 30*time.Second, "the namespace reader role to take effect", func() error {
		out, err = run(dev, "--from", "web/client", "--to", "svc/db/postgres", "--port", "5432")
		return err
	})
	wantLines(t, "a namespaced user", out,
		"Allowed to 1 of 2 endpoints: TCP/5432 from pod web/client to service db/postgres\n",
		"nodes cannot be listed (nodes is forbidden",
	)
	// The address of another namespace's pod cannot be looked up by this
	// user: said, and judged as an address.
	out, err = run(dev, "--from", "web/client", "--to", "198.19.2.30", "--port", "80")
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, "a namespaced user's IP target", out, "Denied: TCP/80 from pod web/client to 198.19.2.30\n", "pods cannot be listed in every namespace (", "Services cannot be listed in every namespace (")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", "web/client", "--to", "db/nobody", "--port", "80"}, "--to: pod db/nobody not found"},
		{[]string{"--from", "web/client", "--to", "svc/db/nothing", "--port", "80"}, "--to svc/db/nothing: Service db/nothing not found"},
		{[]string{"--from", "other/stranger", "--to", "db/server-1", "--port", "80"}, "--from: reading pod other/stranger: pods \"stranger\" is forbidden"},
	} {
		kc := admin
		if strings.Contains(tc.want, "forbidden") {
			kc = dev
		}
		if _, err := run(kc, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.args, err, tc.want)
		}
	}
}

// userKubeconfig writes a kubeconfig of user u of env and returns its path.
func userKubeconfig(t *testing.T, env *envtest.Environment, u envtest.User) string {
	t.Helper()
	user, err := env.AddUser(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), u.Name+".kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
