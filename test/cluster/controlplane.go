package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	wgmeshv1alpha1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/wait"
)

// controlPlane holds the control-plane processes and credentials.
type controlPlane struct {
	etcd, apiserver, kcm, operator *process
	scheduler                      *process
	pki                            *pki
	saKey, saPub                   string
	etcdURL                        string
}

// Scheme knows core Kubernetes types, CRDs and wgmesh.io/v1alpha1.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = apiextensionsv1.AddToScheme(s)
	_ = wgmeshv1alpha1.AddToScheme(s)
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *Cluster) asset(name string) (string, error) {
	p := filepath.Join(c.opts.Assets, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("control-plane binary %s: %w (KUBEBUILDER_ASSETS=%s; build with hack/control-plane.sh)", name, err, c.opts.Assets)
	}
	return p, nil
}

func (c *Cluster) startControlPlane(ctx context.Context) error {
	if c.opts.Remote != "" {
		return c.useRemoteControlPlane(ctx)
	}
	cp := &c.cp
	var err error
	if cp.pki, err = newPKI(filepath.Join(c.WorkDir, "pki")); err != nil {
		return err
	}
	if cp.saKey, cp.saPub, err = cp.pki.serviceAccountKey(); err != nil {
		return err
	}
	ips := []net.IP{net.ParseIP(APIServerIP), net.ParseIP("127.0.0.1"), net.ParseIP("198.18.128.1")}
	if c.opts.DualStack {
		ips = append(ips, net.ParseIP(APIServerIP6), net.ParseIP("2001:db8:200::1"))
	}
	srvCert, srvKey, err := cp.pki.issue("apiserver", "kube-apiserver", nil, ips,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}, true)
	if err != nil {
		return err
	}
	server := fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort)
	// The admin is in system:masters; the controller manager uses its own identity and
	// per-controller service accounts, all authorised by RBAC's bootstrap roles.
	kubeconfigs := map[string][2]string{
		"admin":                   {"wgmesh-admin", "system:masters"},
		"kube-controller-manager": {"system:kube-controller-manager", ""},
		"operator":                {"wgmesh-operator", "system:masters"},
		"kube-scheduler":          {"system:kube-scheduler", ""},
		// The API server's identity towards kubelets (exec, logs, port-forward).
		"apiserver-kubelet-client": {"kube-apiserver-kubelet-client", "system:masters"},
	}
	for name, id := range kubeconfigs {
		var orgs []string
		if id[1] != "" {
			orgs = []string{id[1]}
		}
		cf, kf, err := cp.pki.issue(name, id[0], orgs, nil, nil, false)
		if err != nil {
			return err
		}
		if err := writeKubeconfig(filepath.Join(c.WorkDir, name+".kubeconfig"), server, cp.pki.CAFile, cf, kf); err != nil {
			return err
		}
	}
	c.Kubeconfig = filepath.Join(c.WorkDir, "admin.kubeconfig")

	if err := c.startEtcd(ctx); err != nil {
		return err
	}
	if err := c.startAPIServer(ctx, srvCert, srvKey); err != nil {
		return err
	}
	if err := c.newClient(); err != nil {
		return err
	}
	if c.opts.RealNodes {
		// helm install brings the CRDs and the operator.
		if err := c.startControllerManager(ctx); err != nil {
			return err
		}
		return c.startScheduler(ctx)
	}
	if err := c.applyCRDs(ctx); err != nil {
		return err
	}
	if err := c.startControllerManager(ctx); err != nil {
		return err
	}
	return c.startOperator(ctx)
}

func (c *Cluster) startEtcd(ctx context.Context) error {
	bin, err := c.asset("etcd")
	if err != nil {
		return err
	}
	cport, err := freePort()
	if err != nil {
		return err
	}
	pport, err := freePort()
	if err != nil {
		return err
	}
	c.cp.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", cport)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pport)
	cmd := exec.Command(bin,
		"--name=wgm", "--data-dir="+filepath.Join(c.WorkDir, "etcd"),
		"--listen-client-urls="+c.cp.etcdURL, "--advertise-client-urls="+c.cp.etcdURL,
		"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
		"--initial-cluster=wgm="+peer, "--unsafe-no-fsync=true", "--log-level=warn")
	if c.cp.etcd, err = c.startProcess("etcd", cmd, filepath.Join(c.WorkDir, "logs", "etcd.log")); err != nil {
		return err
	}
	return waitUntil(ctx, 60*time.Second, "etcd to serve "+c.cp.etcdURL, c.cp.etcd, func() bool {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(c.cp.etcdURL, "http://"), time.Second)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
}

func (c *Cluster) startAPIServer(ctx context.Context, cert, key string) error {
	bin, err := c.asset("kube-apiserver")
	if err != nil {
		return err
	}
	svc := ServiceCIDR
	if c.opts.DualStack {
		svc += "," + ServiceCIDR6
	}
	certDir := filepath.Join(c.WorkDir, "apiserver")
	os.MkdirAll(certDir, 0o700)
	authz := "RBAC"
	var extra []string
	if c.opts.RealNodes {
		// Real kubelets: the Node authorizer and NodeRestriction limit each to its own
		// Node and pods, as in a production cluster; the API server reaches kubelets by
		// InternalIP (their names resolve nowhere) with its own client certificate.
		authz = "Node,RBAC"
		extra = append(extra,
			"--enable-admission-plugins=NodeRestriction",
			"--kubelet-preferred-address-types=InternalIP",
			"--kubelet-client-certificate="+filepath.Join(c.WorkDir, "pki", "apiserver-kubelet-client.crt"),
			"--kubelet-client-key="+filepath.Join(c.WorkDir, "pki", "apiserver-kubelet-client.key"))
	}
	cmd := exec.Command(bin,
		"--etcd-servers="+c.cp.etcdURL,
		"--bind-address="+APIServerIP, "--advertise-address="+APIServerIP,
		"--secure-port="+strconv.Itoa(APIServerPort), "--cert-dir="+certDir,
		"--tls-cert-file="+cert, "--tls-private-key-file="+key,
		"--client-ca-file="+c.cp.pki.CAFile,
		// RBAC, not AlwaysAllow: AlwaysAllow turns anonymous auth off and everything 401s.
		"--authorization-mode="+authz,
		"--service-cluster-ip-range="+svc,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.cp.saPub,
		"--service-account-signing-key-file="+c.cp.saKey,
		"--allow-privileged=true", "--profiling=false",
		"--enable-priority-and-fairness=false",
		"--v=1")
	cmd.Args = append(cmd.Args, extra...)
	if c.cp.apiserver, err = c.startProcess("kube-apiserver", cmd, filepath.Join(c.WorkDir, "logs", "kube-apiserver.log")); err != nil {
		return err
	}
	cfg, err := c.RESTConfig()
	if err != nil {
		return err
	}
	rc, err := rest.UnversionedRESTClientFor(withCodec(cfg))
	if err != nil {
		return err
	}
	return waitUntil(ctx, 120*time.Second, "kube-apiserver /readyz", c.cp.apiserver, func() bool {
		body, err := rc.Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && strings.TrimSpace(string(body)) == "ok"
	})
}

func withCodec(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.NegotiatedSerializer = clientgoscheme.Codecs.WithoutConversion()
	cfg.Timeout = 5 * time.Second
	return cfg
}

// RESTConfig returns the admin's client configuration.
func (c *Cluster) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	// Tests create and poll many objects at once; client-side throttling only slows them.
	cfg.QPS, cfg.Burst = 200, 400
	return cfg, nil
}

// crdDir finds charts/wgmesh/crds from this source file's module root.
func crdDir() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "charts", "wgmesh", "crds"), nil
}

func (c *Cluster) applyCRDs(ctx context.Context) error {
	dir, err := crdDir()
	if err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if len(files) == 0 {
		return fmt.Errorf("no CRDs in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return fmt.Errorf("CRD %s: %w", f, err)
		}
		if err := c.Client.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create CRD %s: %w", crd.Name, err)
		}
		name := crd.Name
		err = waitUntil(ctx, 30*time.Second, "CRD "+name+" to be established", nil, func() bool {
			got := &apiextensionsv1.CustomResourceDefinition{}
			if c.Client.Get(ctx, client.ObjectKey{Name: name}, got) != nil {
				return false
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true
				}
			}
			return false
		})
		if err != nil {
			return err
		}
	}
	// The client's REST mapper caches discovery; start over so it sees the new kinds.
	return c.newClient()
}

func (c *Cluster) newClient() error {
	cfg, err := c.RESTConfig()
	if err != nil {
		return err
	}
	cl, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return err
	}
	c.Client = cl
	return nil
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	bin, err := c.asset("kube-controller-manager")
	if err != nil {
		return err
	}
	// Not nodeipam: pod CIDRs are the operator's job.
	controllers := "endpointslice,garbagecollector,namespace,serviceaccount,serviceaccount-token"
	if c.opts.RealNodes {
		// Everything a real cluster runs (workloads, node lifecycle taints, the root CA
		// ConfigMap e2e waits for), still without node IPAM.
		controllers = "*,-nodeipam"
	}
	cmd := exec.Command(bin,
		"--kubeconfig="+filepath.Join(c.WorkDir, "kube-controller-manager.kubeconfig"),
		"--controllers="+controllers,
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.cp.saKey,
		"--root-ca-file="+c.cp.pki.CAFile,
		"--leader-elect=false", "--secure-port=0",
		"--v=1")
	c.cp.kcm, err = c.startProcess("kube-controller-manager", cmd, filepath.Join(c.WorkDir, "logs", "kube-controller-manager.log"))
	return err
}

// OperatorBinary is where the operator is expected.
func (c *Cluster) OperatorBinary() string { return filepath.Join(c.opts.BinDir, "wgmesh-operator") }

func (c *Cluster) startOperator(ctx context.Context) error {
	if c.opts.NoOperator {
		return nil
	}
	bin := c.OperatorBinary()
	if _, err := os.Stat(bin); err != nil || c.opts.BinDir == "" {
		c.Missing = append(c.Missing, "wgmesh-operator ("+bin+"; set Options.BinDir or WGMESH_BIN_DIR)")
		c.logf("operator binary %s not found: running without the operator", bin)
		return nil
	}
	return c.StartOperator(ctx)
}

// StartOperator starts (or restarts) the operator.
func (c *Cluster) StartOperator(ctx context.Context) error {
	c.StopOperator()
	cidrs := PodCIDR
	if c.opts.DualStack {
		cidrs += "," + PodCIDR6
	}
	cmd := exec.Command(c.OperatorBinary(),
		"--kubeconfig="+filepath.Join(c.WorkDir, "operator.kubeconfig"),
		"--cluster-cidrs="+cidrs,
		"--leader-elect=true", "--leader-election-namespace=kube-system",
		"--metrics-bind-address="+operatorMetrics,
		"--health-probe-bind-address="+operatorHealth)
	var err error
	c.cp.operator, err = c.startProcess("wgmesh-operator", cmd, filepath.Join(c.WorkDir, "logs", "wgmesh-operator.log"))
	return err
}

// StopOperator stops the operator (SIGTERM, then SIGKILL after 10s).
func (c *Cluster) StopOperator() {
	if c.cp.operator != nil {
		c.cp.operator.stop(syscall.SIGTERM, 10*time.Second)
		c.run.forgetProc(c.cp.operator.pid())
		c.cp.operator = nil
	}
}

// stopControlPlane stops in the order that never hangs: the API server's clients, the API
// server, then etcd (etcd first makes the API server's shutdown hang).
func (c *Cluster) stopControlPlane() {
	c.StopOperator()
	for _, p := range []*process{c.cp.scheduler, c.cp.kcm, c.cp.apiserver, c.cp.etcd} {
		p.stop(syscall.SIGTERM, 15*time.Second)
	}
}

// waitUntil polls cond (test/wait) until it holds, ctx ends, the timeout passes, or proc
// (when given) exits; the error says which, with the end of proc's log.
func waitUntil(ctx context.Context, timeout time.Duration, what string, proc *process, cond func() bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited := false
	held := wait.True(cond)
	err := wait.Poll(ctx, timeout, func() error {
		err := held()
		if err != nil && proc != nil && !proc.running() {
			exited = true
			cancel()
		}
		return err
	})
	switch {
	case err == nil:
		return nil
	case exited:
		return fmt.Errorf("waiting for %s: %s", what, proc.exitedWith())
	case proc != nil:
		return fmt.Errorf("waiting for %s: %w; last log lines of %s:\n%s", what, err, proc.name, tail(proc.logPath, 20))
	}
	return fmt.Errorf("waiting for %s: %w", what, err)
}
