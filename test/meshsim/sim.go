package meshsim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

const (
	// nodeMask is the operator's --node-cidr-mask-size-ipv4: a /28 per
	// node gives 4096 node CIDRs in the cluster's 198.19.0.0/16, enough for
	// 1,000 nodes plus a minute of churn without the allocator wrapping
	// round to a CIDR freed a moment ago (which would hide the route of a
	// new node behind an old one's).
	nodeMask = 28
	// agentMetricsPort is the agents' default --metrics-bind-address.
	agentMetricsPort = 9472
	// operatorStopGrace is how long the operator has to exit after SIGTERM.
	operatorStopGrace = 10 * time.Second
)

// Options configure Start.
type Options struct {
	// RealNodes is the number of nodes running the real agent (default 3).
	RealNodes int
	// Log receives the cluster's progress lines (default: discarded).
	Log io.Writer
	// LogDir, when set, receives the operator's and the real agents' logs
	// when the simulation stops.
	LogDir string
}

// Sim is a running simulated mesh.
type Sim struct {
	tb     testing.TB
	c      *cluster.Cluster
	cl     client.Client // admin, unthrottled
	kc     *kubernetes.Clientset
	cfg    *rest.Config
	real   []*cluster.Node
	logDir string
	http   *http.Client

	op        *exec.Cmd
	opDone    chan struct{}
	opLog     string
	opMetrics string
	opStart   time.Time

	routes    []*routeLog
	pubMu     sync.Mutex
	published map[string]time.Time // "name/publicKey" -> when the watch first saw that MeshPeer spec

	mu    sync.Mutex
	next  int               // next simulated node index
	keys  map[string]string // simulated node -> public key (base64)
	alive map[string]bool   // simulated nodes that exist
	fail  map[string]bool   // nodes marked failed

	// The writes Sim made itself, playing kubelets, agents and the node
	// lifecycle controller: by "VERB resource[/subresource]".
	writes sync.Map // string -> *atomic.Int64
}

// Need skips tb (or fails it with WGMESH_NO_SKIP=1, test/skip) where the
// simulation cannot run: with -short, without root or the control plane
// (KUBEBUILDER_ASSETS), or without wgmesh-operator and wgmesh-agent built
// in WGMESH_BIN_DIR.
func Need(tb testing.TB) {
	tb.Helper()
	netns.SkipUnlessControlPlane(tb)
	dir := os.Getenv("WGMESH_BIN_DIR")
	if dir == "" {
		skip.Unless(tb, "simulated mesh: WGMESH_BIN_DIR is unset (make build; make test and make bench set it)")
	}
	for _, b := range []string{"wgmesh-operator", "wgmesh-agent"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			skip.Unless(tb, fmt.Sprintf("simulated mesh: %s not built in WGMESH_BIN_DIR (make build): %v", b, err))
		}
	}
}

// Start starts the cluster with opts.RealNodes real nodes and neither agents
// nor operator (the operator needs a smaller node CIDR than the cluster's
// own: StartOperator and StartAgents start them). Stopping is registered as
// a cleanup of tb.
func Start(ctx context.Context, tb testing.TB, opts Options) *Sim {
	tb.Helper()
	if opts.RealNodes == 0 {
		opts.RealNodes = 3
	}
	ctrllog.SetLogger(logr.Discard()) // the clients' own logs would only be noise here
	c, err := cluster.Start(ctx, cluster.Options{Nodes: opts.RealNodes, NoOperator: true, NoAgents: true, Log: opts.Log})
	if err != nil {
		tb.Fatalf("simulated mesh: cluster: %v", err)
	}
	s := &Sim{tb: tb, c: c, real: c.Nodes, logDir: opts.LogDir, http: &http.Client{Timeout: 10 * time.Second},
		keys: map[string]string{}, alive: map[string]bool{}, fail: map[string]bool{}}
	tb.Cleanup(s.stop)
	cfg, err := c.RESTConfig()
	if err != nil {
		tb.Fatalf("simulated mesh: %v", err)
	}
	cfg.QPS, cfg.Burst = -1, 0 // Sim plays a thousand kubelets and agents
	s.cfg = cfg
	if s.cl, err = client.New(cfg, client.Options{Scheme: cluster.Scheme()}); err != nil {
		tb.Fatal(err)
	}
	if s.kc, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	return s
}

// Real is the real nodes Start started, in order (JoinReal's are not among
// them).
func (s *Sim) Real() []*cluster.Node { return s.real }

// Client is an admin client with no rate limit.
func (s *Sim) Client() client.Client { return s.cl }

// stop stops the route watches, the operator, then the cluster (agents,
// namespaces, control plane), keeping logs in LogDir when set.
func (s *Sim) stop() {
	for _, r := range s.routes {
		r.stop()
	}
	s.stopOperator()
	if s.logDir != "" {
		_ = os.MkdirAll(s.logDir, 0o755)
		copyFile(s.opLog, filepath.Join(s.logDir, "mesh-wgmesh-operator.log"))
		for _, n := range s.real {
			copyFile(n.AgentLog(), filepath.Join(s.logDir, "mesh-agent-"+n.Name+".log"))
		}
	}
	if s.tb.Failed() {
		if s.opLog != "" {
			s.tb.Logf("--- operator log (tail) ---\n%s", cluster.Tail(s.opLog, 30))
		}
		for _, n := range s.real {
			s.tb.Logf("--- %s agent log (tail) ---\n%s", n.Name, cluster.Tail(n.AgentLog(), 30))
		}
	}
	if err := s.c.Stop(); err != nil {
		s.tb.Errorf("stopping the cluster: %v", err)
	}
	if s.opLog != "" {
		os.Remove(s.opLog)
	}
}

func copyFile(from, to string) {
	if b, err := os.ReadFile(from); err == nil {
		_ = os.WriteFile(to, b, 0o644)
	}
}

// StartOperator starts the built wgmesh-operator on the host: the cluster's
// pod range with a /28 per node, no leader election (one replica; its Lease
// renewals would only add a constant two writes a second to every count),
// metrics on a free loopback port. It reads the kubeconfig from $KUBECONFIG
// rather than --kubeconfig, which is how it gets the unthrottled client it
// has in a cluster (with --kubeconfig client-go's default limit of 5
// requests/s applies).
func (s *Sim) StartOperator(ctx context.Context) {
	tb := s.tb
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatalf("operator metrics port: %v", err)
	}
	s.opMetrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	logf, err := os.CreateTemp("", "wgm-meshsim-operator-*.log")
	if err != nil {
		tb.Fatal(err)
	}
	s.opLog = logf.Name()
	cmd := exec.Command(s.c.OperatorBinary(),
		"--cluster-cidrs="+cluster.PodCIDR, fmt.Sprintf("--node-cidr-mask-size-ipv4=%d", nodeMask),
		"--leader-elect=false", fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port),
		"--health-probe-bind-address=0")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(s.c.WorkDir, "operator.kubeconfig"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	s.opStart = time.Now()
	// Pdeathsig fires when the thread that started the child ends, and
	// test/netns lets threads it moved to other namespaces end: start it from
	// a locked thread that lives as long as the operator.
	started := make(chan error, 1)
	s.opDone = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		logf.Close()
		close(s.opDone)
	}()
	if err := <-started; err != nil {
		logf.Close()
		tb.Fatalf("start wgmesh-operator: %v", err)
	}
	s.op = cmd
}

// OperatorStarted is when StartOperator started the operator.
func (s *Sim) OperatorStarted() time.Time { return s.opStart }

func (s *Sim) stopOperator() {
	if s.op == nil {
		return
	}
	_ = s.op.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.opDone:
	case <-time.After(operatorStopGrace):
		_ = s.op.Process.Kill()
		<-s.opDone
	}
	s.op = nil
}

// operatorExited tells whether the operator was started and has exited.
func (s *Sim) operatorExited() bool {
	if s.op == nil {
		return false
	}
	select {
	case <-s.opDone:
		return true
	default:
		return false
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartAgents starts the real agents, with extra flags.
func (s *Sim) StartAgents(ctx context.Context, extra ...string) {
	s.tb.Helper()
	for _, n := range s.real {
		if err := n.StartAgent(ctx, extra...); err != nil {
			s.tb.Fatal(err)
		}
	}
}

// WaitFor polls check (test/wait) until it passes. It fails the test when
// timeout passes first, or at once when the operator has exited, with the
// end of the operator's log.
func (s *Sim) WaitFor(ctx context.Context, timeout time.Duration, what string, check func() error) {
	s.tb.Helper()
	s.await(ctx, timeout, 0, what, check)
}

// await is WaitFor checking every interval (test/wait's Every), or as
// test/wait's Poll does when interval is 0.
func (s *Sim) await(ctx context.Context, timeout, interval time.Duration, what string, check func() error) {
	s.tb.Helper()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	exited := false
	checkOperator := func() error {
		if s.operatorExited() {
			exited = true
			cancel()
			return errors.New("the operator exited")
		}
		return check()
	}
	var err error
	if interval > 0 {
		err = wait.Every(ctx, timeout, interval, checkOperator)
	} else {
		err = wait.Poll(ctx, timeout, checkOperator)
	}
	switch {
	case exited:
		s.tb.Fatalf("waiting for %s: the operator exited; its log:\n%s", what, cluster.Tail(s.opLog, 30))
	case err != nil:
		s.tb.Fatalf("waiting for %s: %v", what, err)
	}
}

// WaitRealCIDRs waits until every real node has a pod CIDR.
func (s *Sim) WaitRealCIDRs(ctx context.Context, timeout time.Duration) {
	s.tb.Helper()
	s.WaitFor(ctx, timeout, "the real nodes' pod CIDRs", func() error {
		cidrs, err := s.PodCIDRs(ctx)
		if err != nil {
			return err
		}
		var none []string
		for _, n := range s.real {
			if _, ok := cidrs[n.Name]; !ok {
				none = append(none, n.Name)
			}
		}
		if len(none) > 0 {
			return fmt.Errorf("no pod CIDR on %s", strings.Join(none, ", "))
		}
		return nil
	})
}

// countWrite records n writes Sim made itself.
func (s *Sim) countWrite(what string, n int64) {
	v, _ := s.writes.LoadOrStore(what, &atomic.Int64{})
	v.(*atomic.Int64).Add(n)
}

// OwnWrites is a copy of the counts of the writes Sim made itself (as the
// simulated kubelets, agents and node lifecycle controller), by "VERB
// resource[/subresource]".
func (s *Sim) OwnWrites() map[string]int64 {
	out := map[string]int64{}
	s.writes.Range(func(k, v any) bool { out[k.(string)] = v.(*atomic.Int64).Load(); return true })
	return out
}
