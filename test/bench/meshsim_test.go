package bench

// The simulated mesh behind BenchmarkMesh1000 and TestMeshScale: a local
// cluster (test/cluster: real etcd, kube-apiserver, controller manager) with
// a few real nodes running the real wgmesh-agent in network namespaces
// (userspace WireGuard), the real wgmesh-operator as a process, and many
// simulated nodes that exist only as API objects. The bench plays their
// kubelets (it registers each Node, Ready, with an InternalIP) and their
// agents (it writes wgmesh.io/public-key, a freshly generated WireGuard key,
// and wgmesh.io/endpoint, an address in 198.18.32.0/19 that leads nowhere).
// The real agents therefore configure every simulated peer, but no simulated
// peer ever answers: a real agent sees all of them unreachable.

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/skip"
)

const (
	// meshSimPrefix names simulated nodes: wgm-sim-00000, wgm-sim-00001, ...
	// The real nodes (wgm-node-N) sort before all of them.
	meshSimPrefix = "wgm-sim-"
	// meshSimLabel marks the simulated nodes.
	meshSimLabel = "bench.wgmesh.io/simulated"
	// meshNodeMask is the operator's --node-cidr-mask-size-ipv4: a /28 per
	// node gives 4096 node CIDRs in the cluster's 198.19.0.0/16, enough for
	// 1,000 nodes plus a minute of churn without the allocator wrapping
	// round to a CIDR freed a moment ago (which would hide the route of a
	// new node behind an old one's).
	meshNodeMask = 28
	// meshAgentMetricsPort is the agents' default --metrics-bind-address.
	meshAgentMetricsPort = 9472
)

// meshSimOptions configure startMeshSim.
type meshSimOptions struct {
	RealNodes int      // nodes running the real agent (2..3 usual)
	AgentArgs []string // extra agent flags
	Log       io.Writer
}

// meshSim is a running simulated mesh.
type meshSim struct {
	tb        testing.TB
	c         *cluster.Cluster
	cl        client.Client // admin, unthrottled
	kc        *kubernetes.Clientset
	real      []*cluster.Node
	binDir    string
	op        *exec.Cmd
	opDone    chan struct{}
	opLog     string
	opMetrics string
	opStart   time.Time
	routes    []*routeLog
	cfg       *rest.Config
	pubMu     sync.Mutex
	published map[string]time.Time // "name/publicKey" -> when the bench's watch first saw that MeshPeer spec
	http      *http.Client

	mu    sync.Mutex
	next  int               // next simulated node index
	keys  map[string]string // simulated node -> public key (base64)
	alive map[string]bool   // simulated nodes that exist
	fail  map[string]bool   // nodes marked failed

	// Writes the bench made itself, playing kubelets, agents and the node
	// lifecycle controller: by "VERB resource[/subresource]".
	writes sync.Map // string -> *atomic.Int64
}

// meshSimSkip skips (or with WGMESH_NO_SKIP=1 fails) where the simulation
// cannot run.
func meshSimSkip(tb testing.TB) {
	tb.Helper()
	skip.Short(tb, "simulated mesh (root, network namespaces, a control plane)")
	switch {
	case os.Geteuid() != 0:
		skip.Unless(tb, "simulated mesh: needs root for network namespaces")
	case os.Getenv("KUBEBUILDER_ASSETS") == "":
		skip.Unless(tb, "simulated mesh: KUBEBUILDER_ASSETS is unset (make test/make bench set it; hack/control-plane.sh --dir)")
	case os.Getenv("WGMESH_BIN_DIR") == "":
		skip.Unless(tb, "simulated mesh: WGMESH_BIN_DIR is unset (make build; make test/make bench set it)")
	}
	for _, b := range []string{"wgmesh-operator", "wgmesh-agent"} {
		if _, err := os.Stat(filepath.Join(os.Getenv("WGMESH_BIN_DIR"), b)); err != nil {
			skip.Unless(tb, fmt.Sprintf("simulated mesh: %s not built in WGMESH_BIN_DIR (make build): %v", b, err))
		}
	}
}

type tbLog struct{ tb testing.TB }

func (l tbLog) Write(p []byte) (int, error) {
	l.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startMeshSim starts the cluster with opts.RealNodes nodes and no agents or
// operator yet (the operator needs a smaller node CIDR than the cluster's
// own, see meshNodeMask; StartOperator and StartAgents start them). Stop
// is registered as a cleanup.
func startMeshSim(ctx context.Context, tb testing.TB, opts meshSimOptions) *meshSim {
	tb.Helper()
	if opts.RealNodes == 0 {
		opts.RealNodes = 3
	}
	ctrllog.SetLogger(logr.Discard()) // the clients' own logs would only be noise here
	c, err := cluster.Start(ctx, cluster.Options{Nodes: opts.RealNodes, NoOperator: true, NoAgents: true, Log: opts.Log})
	if err != nil {
		tb.Fatalf("cluster: %v", err)
	}
	s := &meshSim{tb: tb, c: c, real: c.Nodes, binDir: os.Getenv("WGMESH_BIN_DIR"),
		keys: map[string]string{}, alive: map[string]bool{}, fail: map[string]bool{}, http: &http.Client{Timeout: 10 * time.Second}}
	tb.Cleanup(s.stop)
	cfg, err := c.RESTConfig()
	must(tb, err)
	cfg.QPS, cfg.Burst = -1, 0 // the bench plays a thousand kubelets and agents
	s.cfg = cfg
	if s.cl, err = client.New(cfg, client.Options{Scheme: cluster.Scheme()}); err != nil {
		tb.Fatal(err)
	}
	if s.kc, err = kubernetes.NewForConfig(cfg); err != nil {
		tb.Fatal(err)
	}
	return s
}

// stop stops the operator, then the cluster (agents, namespaces, control
// plane), keeping logs in $WGMESH_BENCH_LOGS when set.
func (s *meshSim) stop() {
	for _, r := range s.routes {
		r.stop()
	}
	s.stopOperator()
	if dir := os.Getenv("WGMESH_BENCH_LOGS"); dir != "" {
		_ = os.MkdirAll(dir, 0o755)
		copyFile(s.opLog, filepath.Join(dir, "mesh-wgmesh-operator.log"))
		for _, n := range s.real {
			copyFile(n.AgentLog(), filepath.Join(dir, "mesh-agent-"+n.Name+".log"))
		}
	}
	if s.tb.Failed() {
		s.tb.Logf("--- operator log (tail) ---\n%s", cluster.Tail(s.opLog, 30))
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

// StartOperator starts bin/wgmesh-operator on the host: the cluster's pod
// range with a /28 per node, no leader election (one replica; its Lease
// renewals would only add a constant two writes a second to every count),
// metrics on a free loopback port. It reads the kubeconfig from $KUBECONFIG
// rather than --kubeconfig, which is how it gets the unthrottled client it
// has in a cluster (see the report: with --kubeconfig client-go's default
// 5 requests/s limit applies).
func (s *meshSim) StartOperator(ctx context.Context) {
	tb := s.tb
	tb.Helper()
	port, err := meshFreePort()
	must(tb, err)
	s.opMetrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	logf, err := os.CreateTemp("", "wgm-bench-operator-*.log")
	must(tb, err)
	s.opLog = logf.Name()
	cmd := exec.Command(filepath.Join(s.binDir, "wgmesh-operator"),
		"--cluster-cidrs="+cluster.PodCIDR, fmt.Sprintf("--node-cidr-mask-size-ipv4=%d", meshNodeMask),
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

func (s *meshSim) stopOperator() {
	if s.op == nil {
		return
	}
	_ = s.op.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.opDone:
	case <-time.After(10 * time.Second):
		_ = s.op.Process.Kill()
		<-s.opDone
	}
	s.op = nil
}

func (s *meshSim) operatorRunning() bool {
	select {
	case <-s.opDone:
		return false
	default:
		return s.op != nil
	}
}

func meshFreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartAgents starts the real agents once their nodes have pod CIDRs and
// starts watching their routes.
func (s *meshSim) StartAgents(ctx context.Context, extra ...string) {
	tb := s.tb
	tb.Helper()
	for _, n := range s.real {
		if err := n.StartAgent(ctx, extra...); err != nil {
			tb.Fatal(err)
		}
	}
}

// WatchRoutes records, on every real node, when a route via wgmesh0
// appears: the last step of programming a peer (the agent sets the
// WireGuard peer first, then its routes).
func (s *meshSim) WatchRoutes() {
	for _, n := range s.real {
		r, err := watchRoutes(n)
		must(s.tb, err)
		s.routes = append(s.routes, r)
	}
}

// WatchPublished records when each MeshPeer spec (name and key) first
// appears: the operator's part of a join.
func (s *meshSim) WatchPublished(ctx context.Context) {
	wc, err := client.NewWithWatch(s.cfg, client.Options{Scheme: cluster.Scheme()})
	must(s.tb, err)
	w, err := wc.Watch(ctx, &wgv1.MeshPeerList{})
	must(s.tb, err)
	s.published = map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			mp, ok := ev.Object.(*wgv1.MeshPeer)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) || len(mp.Spec.AllowedIPs) == 0 {
				continue
			}
			key := mp.Name + "/" + string(mp.Spec.PublicKey)
			s.pubMu.Lock()
			if _, ok := s.published[key]; !ok {
				s.published[key] = time.Now()
			}
			s.pubMu.Unlock()
		}
	}()
	s.tb.Cleanup(w.Stop)
}

func (s *meshSim) publishedAt(name, key string) (time.Time, bool) {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	t, ok := s.published[name+"/"+key]
	return t, ok
}

// --- simulated nodes -------------------------------------------------------

func meshSimName(i int) string { return fmt.Sprintf("%s%05d", meshSimPrefix, i) }

// meshSimIP is simulated node i's InternalIP and endpoint host: in
// 198.18.32.0/19, routed by the real nodes to the cluster's router, which
// has nowhere to send it.
func meshSimIP(i int) netip.Addr {
	a := netip.MustParseAddr("198.18.32.1").As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v += uint32(i % 8000)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func (s *meshSim) countWrite(what string, n int64) {
	v, _ := s.writes.LoadOrStore(what, &atomic.Int64{})
	v.(*atomic.Int64).Add(n)
}

// BenchWrites is a copy of the bench's own write counts.
func (s *meshSim) BenchWrites() map[string]int64 {
	out := map[string]int64{}
	s.writes.Range(func(k, v any) bool { out[k.(string)] = v.(*atomic.Int64).Load(); return true })
	return out
}

// simJoin is one simulated node's join.
type simJoin struct {
	Name      string
	PublicKey string    // base64
	Announced time.Time // just before the annotation write
	Err       error
}

// Register registers simulated node i as its kubelet would: Ready, with
// an InternalIP and no pod CIDR.
func (s *meshSim) register(ctx context.Context, i int) error {
	ip := meshSimIP(i).String()
	now := metav1.Now()
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: meshSimName(i), Labels: map[string]string{meshSimLabel: "true", corev1.LabelHostname: meshSimName(i)}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}, {Type: corev1.NodeHostName, Address: meshSimName(i)}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "simulated by the wgmesh bench", LastHeartbeatTime: now, LastTransitionTime: now}},
		},
	}
	if err := s.cl.Create(ctx, node); err != nil {
		return fmt.Errorf("register simulated Node %s: %w", node.Name, err)
	}
	s.countWrite("POST nodes", 1)
	return nil
}

// announce writes simulated node i's agent annotations (a new key).
func (s *meshSim) announce(ctx context.Context, i int) simJoin {
	name := meshSimName(i)
	k, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		return simJoin{Name: name, Err: err}
	}
	pub := k.PublicKey().String()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		wgv1.AnnotationPublicKey: pub,
		wgv1.AnnotationEndpoint:  netip.AddrPortFrom(meshSimIP(i), 51820).String(),
	}}})
	j := simJoin{Name: name, PublicKey: pub, Announced: time.Now()}
	if err := s.cl.Patch(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		j.Err = fmt.Errorf("annotate simulated Node %s: %w", name, err)
		return j
	}
	s.countWrite("PATCH nodes", 1)
	s.mu.Lock()
	s.keys[name], s.alive[name] = pub, true
	s.mu.Unlock()
	return j
}

// Join registers a new simulated node and announces its key and endpoint.
func (s *meshSim) Join(ctx context.Context) simJoin {
	s.mu.Lock()
	i := s.next
	s.next++
	s.mu.Unlock()
	if err := s.register(ctx, i); err != nil {
		return simJoin{Name: meshSimName(i), Err: err}
	}
	return s.announce(ctx, i)
}

// JoinMany joins n simulated nodes with `workers` writers at once.
func (s *meshSim) JoinMany(ctx context.Context, n, workers int) ([]simJoin, error) {
	out := make([]simJoin, n)
	var wg sync.WaitGroup
	idx := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range idx {
				out[k] = s.Join(ctx)
			}
		}()
	}
	for k := range n {
		idx <- k
	}
	close(idx)
	wg.Wait()
	var errs []error
	for _, j := range out {
		if j.Err != nil {
			errs = append(errs, j.Err)
		}
	}
	return out, errors.Join(errs...)
}

// Leave deletes a simulated node (its MeshPeer goes with it).
func (s *meshSim) Leave(ctx context.Context, name string) error {
	if err := s.cl.Delete(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete simulated Node %s: %w", name, err)
	}
	s.countWrite("DELETE nodes", 1)
	s.mu.Lock()
	delete(s.alive, name)
	s.mu.Unlock()
	return nil
}

// Oldest returns the n alive simulated nodes with the lowest indexes.
func (s *meshSim) Alive() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.alive))
	for n := range s.alive {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Fail marks a simulated node failed as the node lifecycle controller
// does when its kubelet stops posting status: Ready=Unknown (a nodes/status
// write) and the unreachable taints (a nodes write). Its data plane is gone
// in the sense that it never existed.
func (s *meshSim) Fail(ctx context.Context, name string) error {
	now := metav1.Now().UTC().Format(time.RFC3339)
	status, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []map[string]any{{
		"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.",
		"lastTransitionTime": now, "lastHeartbeatTime": now}}}})
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := s.cl.Status().Patch(ctx, node, client.RawPatch(types.StrategicMergePatchType, status)); err != nil {
		return fmt.Errorf("mark Node %s Ready=Unknown: %w", name, err)
	}
	s.countWrite("PATCH nodes/status", 1)
	taints, _ := json.Marshal(map[string]any{"spec": map[string]any{"taints": []map[string]any{
		{"key": corev1.TaintNodeUnreachable, "effect": "NoSchedule", "timeAdded": now},
		{"key": corev1.TaintNodeUnreachable, "effect": "NoExecute", "timeAdded": now}}}})
	if err := s.cl.Patch(ctx, node, client.RawPatch(types.MergePatchType, taints)); err != nil {
		return fmt.Errorf("taint Node %s unreachable: %w", name, err)
	}
	s.countWrite("PATCH nodes", 1)
	s.mu.Lock()
	s.fail[name] = true
	s.mu.Unlock()
	return nil
}

// WriteOtherStatus writes a status-only update to a simulated node's
// MeshPeer, as that node's agent would (a new count of connected peers).
func (s *meshSim) WriteOtherStatus(ctx context.Context, name string, connected int) error {
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{
		"connectedPeers": connected, "totalPeers": 1000, "connected": fmt.Sprintf("%d/1000", connected)}})
	if err := s.cl.Status().Patch(ctx, &wgv1.MeshPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("status of MeshPeer %s: %w", name, err)
	}
	s.countWrite("PATCH meshpeers/status", 1)
	return nil
}

// Published counts the simulated nodes with a pod CIDR and the ones whose
// MeshPeer carries their current key and pod CIDRs.
func (s *meshSim) Published(ctx context.Context) (withCIDR, published, simulated int, err error) {
	var nodes corev1.NodeList
	if err := s.cl.List(ctx, &nodes, client.HasLabels{meshSimLabel}); err != nil {
		return 0, 0, 0, err
	}
	var peers wgv1.MeshPeerList
	if err := s.cl.List(ctx, &peers); err != nil {
		return 0, 0, 0, err
	}
	byName := map[string]*wgv1.MeshPeer{}
	for i := range peers.Items {
		byName[peers.Items[i].Name] = &peers.Items[i]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range nodes.Items {
		n := &nodes.Items[i]
		if n.DeletionTimestamp != nil {
			continue
		}
		simulated++
		if len(n.Spec.PodCIDRs) == 0 {
			continue
		}
		withCIDR++
		mp := byName[n.Name]
		if mp == nil || string(mp.Spec.PublicKey) != s.keys[n.Name] || len(mp.Spec.AllowedIPs) != len(n.Spec.PodCIDRs) {
			continue
		}
		same := true
		for k, c := range n.Spec.PodCIDRs {
			if string(mp.Spec.AllowedIPs[k]) != c {
				same = false
			}
		}
		if same {
			published++
		}
	}
	return withCIDR, published, simulated, nil
}

// MeshPeerBytes is the size of every MeshPeer as JSON, and of their
// managedFields.
func (s *meshSim) MeshPeerBytes(ctx context.Context) (all, managed int) {
	var peers wgv1.MeshPeerList
	if err := s.cl.List(ctx, &peers); err != nil {
		return 0, 0
	}
	for i := range peers.Items {
		b, _ := json.Marshal(&peers.Items[i])
		m, _ := json.Marshal(peers.Items[i].ManagedFields)
		all, managed = all+len(b), managed+len(m)
	}
	return all, managed
}

// PodCIDRs maps node names to their first pod CIDR.
func (s *meshSim) PodCIDRs(ctx context.Context) (map[string]netip.Prefix, error) {
	var nodes corev1.NodeList
	if err := s.cl.List(ctx, &nodes); err != nil {
		return nil, err
	}
	out := map[string]netip.Prefix{}
	for _, n := range nodes.Items {
		if len(n.Spec.PodCIDRs) > 0 {
			if p, err := netip.ParsePrefix(n.Spec.PodCIDRs[0]); err == nil {
				out[n.Name] = p
			}
		}
	}
	return out, nil
}

// WaitRealCIDRs waits until every real node has a pod CIDR.
func (s *meshSim) WaitRealCIDRs(ctx context.Context, timeout time.Duration) {
	s.tb.Helper()
	s.waitFor(ctx, timeout, "the real nodes' pod CIDRs", func() (bool, string) {
		cidrs, err := s.PodCIDRs(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range s.real {
			if _, ok := cidrs[n.Name]; !ok {
				return false, n.Name + " has none"
			}
		}
		return true, ""
	})
}

func (s *meshSim) waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, string)) {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why := cond()
		if ok {
			return
		}
		if why != "" {
			last = why
		}
		if s.op != nil && !s.operatorRunning() {
			s.tb.Fatalf("waiting for %s: the operator exited; its log:\n%s", what, cluster.Tail(s.opLog, 30))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.tb.Fatalf("timed out after %s waiting for %s (%s)", timeout, what, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// --- the real agents' devices and routes -----------------------------------

// uapiPeers lists the peers (hex public keys) of a userspace WireGuard
// device through its UAPI socket (what wgctrl does; its userspace client
// only looks in this process's own /var/run/wireguard, and each node has
// its own).
func uapiPeers(sock string) (map[string]bool, error) {
	conn, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, "get=1\n\n"); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	keys := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			return keys, nil
		}
		if v, ok := strings.CutPrefix(line, "public_key="); ok {
			keys[v] = true
		}
		if v, ok := strings.CutPrefix(line, "errno="); ok && v != "0" {
			return nil, fmt.Errorf("%s: errno %s", sock, v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

func hexKey(b64 string) string {
	k, err := wgtypes.ParseKey(b64)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(k[:])
}

func wgSocket(n *cluster.Node) string { return n.HostPath("/var/run/wireguard/wgmesh0.sock") }

// WaitPeers waits until every real agent's wgmesh0 has every simulated
// node's current key (and the other real nodes: want in total).
func (s *meshSim) WaitPeers(ctx context.Context, timeout time.Duration, want int) {
	s.tb.Helper()
	s.mu.Lock()
	keys := make([]string, 0, len(s.alive))
	for n := range s.alive {
		if !s.fail[n] { // a NodeNotReady peer may be left out
			keys = append(keys, hexKey(s.keys[n]))
		}
	}
	s.mu.Unlock()
	s.waitFor(ctx, timeout, fmt.Sprintf("%d peers on every real agent's wgmesh0", want), func() (bool, string) {
		for _, n := range s.real {
			got, err := uapiPeers(wgSocket(n))
			if err != nil {
				return false, n.Name + ": " + err.Error()
			}
			if len(got) < want {
				return false, fmt.Sprintf("%s has %d", n.Name, len(got))
			}
			for _, k := range keys {
				if !got[k] {
					return false, n.Name + " lacks a simulated key"
				}
			}
		}
		return true, ""
	})
}

// routeLog records when routes via wgmesh0 appeared in a node.
type routeLog struct {
	node string
	done chan struct{}
	mu   sync.Mutex
	adds map[netip.Prefix][]time.Time
	lost atomic.Int64 // netlink errors (overflow)
}

func watchRoutes(n *cluster.Node) (*routeLog, error) {
	h, err := n.NetNS.Netlink()
	if err != nil {
		return nil, err
	}
	l, err := h.LinkByName("wgmesh0")
	h.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: wgmesh0: %w", n.Name, err)
	}
	idx := l.Attrs().Index
	nsh, err := vnetns.GetFromPath(n.NetNS.Path())
	if err != nil {
		return nil, err
	}
	r := &routeLog{node: n.Name, done: make(chan struct{}), adds: map[netip.Prefix][]time.Time{}}
	ch := make(chan netlink.RouteUpdate, 8192)
	err = netlink.RouteSubscribeWithOptions(ch, r.done, netlink.RouteSubscribeOptions{
		Namespace: &nsh, ReceiveBufferSize: 8 << 20,
		ErrorCallback: func(error) { r.lost.Add(1) },
	})
	nsh.Close()
	if err != nil {
		return nil, fmt.Errorf("%s: route subscription: %w", n.Name, err)
	}
	go func() {
		for u := range ch {
			if u.Type != unix.RTM_NEWROUTE || u.LinkIndex != idx || u.Dst == nil {
				continue
			}
			p, ok := netip.AddrFromSlice(u.Dst.IP)
			if !ok {
				continue
			}
			ones, _ := u.Dst.Mask.Size()
			at := time.Now()
			r.mu.Lock()
			pp := netip.PrefixFrom(p.Unmap(), ones)
			r.adds[pp] = append(r.adds[pp], at)
			r.mu.Unlock()
		}
	}()
	return r, nil
}

func (r *routeLog) stop() {
	select {
	case <-r.done:
	default:
		close(r.done)
	}
}

// firstAdd is the first time a route to p appeared at or after t.
func (r *routeLog) firstAdd(p netip.Prefix, t time.Time) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.adds[p] {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// JoinLatencies waits (up to timeout) until each join's pod CIDR has a
// route via wgmesh0 on every real agent, then returns the latencies from
// its annotation write (one per join and agent) and how many never came.
// The peers themselves are checked on each wgmesh0 through UAPI.
func (s *meshSim) JoinLatencies(ctx context.Context, joins []simJoin, timeout time.Duration) (lat, pub []time.Duration, missing int) {
	deadline := time.Now().Add(timeout)
	var cidrs map[string]netip.Prefix
	for {
		var err error
		cidrs, err = s.PodCIDRs(ctx)
		pending := 0
		if err == nil {
			for _, j := range joins {
				if j.Err != nil {
					continue
				}
				p, ok := cidrs[j.Name]
				if !ok {
					pending++
					continue
				}
				for _, r := range s.routes {
					if _, ok := r.firstAdd(p, j.Announced); !ok {
						pending++
					}
				}
			}
		}
		if (err == nil && pending == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	devices := make([]map[string]bool, len(s.real))
	for i, n := range s.real {
		devices[i], _ = uapiPeers(wgSocket(n))
	}
	for _, j := range joins {
		if j.Err != nil {
			continue
		}
		if at, ok := s.publishedAt(j.Name, j.PublicKey); ok {
			pub = append(pub, at.Sub(j.Announced))
		}
		p, ok := cidrs[j.Name]
		for i, r := range s.routes {
			at, seen := time.Time{}, false
			if ok {
				at, seen = r.firstAdd(p, j.Announced)
			}
			// A node that already left may be gone from the device again.
			if !seen || (devices[i] != nil && !devices[i][hexKey(j.PublicKey)] && s.isAlive(j.Name)) {
				missing++
				continue
			}
			lat = append(lat, at.Sub(j.Announced))
		}
	}
	return lat, pub, missing
}

func (s *meshSim) isAlive(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alive[name]
}

// --- measurements ------------------------------------------------------------

// promSample is one line of a Prometheus text exposition.
type promSample struct {
	name   string
	labels map[string]string
	value  float64
}

func parseProm(text string) []promSample {
	var out []promSample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		head := line[:sp]
		s := promSample{value: v, labels: map[string]string{}}
		if b := strings.IndexByte(head, '{'); b >= 0 {
			s.name = head[:b]
			body := strings.TrimSuffix(head[b+1:], "}")
			for body != "" {
				eq := strings.IndexByte(body, '=')
				if eq < 0 || eq+1 >= len(body) || body[eq+1] != '"' {
					break
				}
				k := body[:eq]
				rest := body[eq+2:]
				end := 0
				for end < len(rest) && (rest[end] != '"' || (end > 0 && rest[end-1] == '\\')) {
					end++
				}
				s.labels[k] = rest[:min(end, len(rest))]
				body = strings.TrimPrefix(rest[min(end+1, len(rest)):], ",")
			}
		} else {
			s.name = head
		}
		out = append(out, s)
	}
	return out
}

// sumProm sums the samples named name whose labels pass keep (nil: all).
func sumProm(ss []promSample, name string, keep func(map[string]string) bool) (float64, bool) {
	var sum float64
	found := false
	for _, s := range ss {
		if s.name == name && (keep == nil || keep(s.labels)) {
			sum += s.value
			found = true
		}
	}
	return sum, found
}

func (s *meshSim) scrape(url string) ([]promSample, error) {
	resp, err := s.http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseProm(string(b)), nil
}

func isWriteVerb(v string) bool {
	switch strings.ToUpper(v) {
	case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CREATE", "UPDATE":
		return true
	}
	return false
}

// procStat is a process's CPU time and resident memory now.
type procStat struct {
	cpu              time.Duration
	rss, hwm         int64 // KiB
	rssAnon, rssFile int64 // KiB: VmRSS = RssAnon (heap, stacks) + RssFile (the binary's pages) + RssShmem
}

func readProcStat(pid int) (procStat, error) {
	if pid <= 0 {
		return procStat{}, errors.New("no process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	rp := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[rp+2:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	var ps procStat
	ps.cpu = time.Duration(ut+st) * time.Second / clockTicks
	ps.rss, _ = statusKiB(pid, "VmRSS")
	ps.hwm, _ = statusKiB(pid, "VmHWM")
	ps.rssAnon, _ = statusKiB(pid, "RssAnon")
	ps.rssFile, _ = statusKiB(pid, "RssFile")
	return ps, nil
}

// wireguardPID is the node's userspace WireGuard process (the agent's
// `wgmesh-agent userspace-wireguard` child), or 0.
func wireguardPID(n *cluster.Node) int {
	pids, _ := n.Machine.PIDs()
	for _, pid := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(b), "userspace-wireguard") {
			return pid
		}
	}
	return 0
}

// agentSnap is one real agent's counters at a moment.
type agentSnap struct {
	reconciles   float64             // wgmesh_reconciles_total
	byTrigger    map[string]float64  // wgmesh_reconciles_total by trigger
	heapInuse    float64             // go_memstats_heap_inuse_bytes
	goSys        float64             // go_memstats_sys_bytes: all the Go runtime holds from the OS
	status       wgv1.MeshPeerStatus // its own MeshPeer's status
	statusWrites float64             // wgmesh_status_writes_total
	writes       float64             // every write request the agent made (client-go metrics)
	agent, wg    procStat
}

// meshSnap is every counter the bench compares, at one moment.
type meshSnap struct {
	at       time.Time
	api      map[string]float64 // "VERB resource[/sub]" -> apiserver_request_total
	apiAll   float64
	opWrites float64 // the operator's write requests (client-go metrics)
	operator procStat
	agents   []agentSnap
	bench    map[string]int64
}

// Snap reads every counter now.
func (s *meshSim) Snap(ctx context.Context) meshSnap {
	sn := meshSnap{at: time.Now(), api: map[string]float64{}, bench: s.BenchWrites()}
	raw, err := s.kc.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		s.tb.Fatalf("snapshot: kube-apiserver /metrics: %v", err)
	}
	for _, x := range parseProm(string(raw)) {
		if x.name != "apiserver_request_total" {
			continue
		}
		res := x.labels["resource"]
		if sub := x.labels["subresource"]; sub != "" {
			res += "/" + sub
		}
		sn.api[x.labels["verb"]+" "+res] += x.value
		sn.apiAll += x.value
	}
	if s.opMetrics != "" {
		ss, err := s.scrape(s.opMetrics)
		if err != nil {
			s.tb.Fatalf("snapshot: the operator's metrics: %v", err)
		}
		var ok bool
		if sn.opWrites, ok = sumProm(ss, "rest_client_requests_total", func(l map[string]string) bool { return isWriteVerb(l["method"]) }); !ok {
			s.tb.Fatalf("snapshot: the operator exports no rest_client_requests_total")
		}
		if s.op != nil {
			sn.operator, _ = readProcStat(s.op.Process.Pid)
		}
	}
	for _, n := range s.real {
		a, err := s.agentCounters(n.Name, fmt.Sprintf("http://%s:%d/metrics", n.UnderlayIP, meshAgentMetricsPort))
		if err != nil {
			s.tb.Fatalf("snapshot: %v", err)
		}
		mp := &wgv1.MeshPeer{}
		if err := s.cl.Get(ctx, client.ObjectKey{Name: n.Name}, mp); err == nil {
			a.status = mp.Status
		}
		a.agent, _ = readProcStat(n.AgentPID())
		a.wg, _ = readProcStat(wireguardPID(n))
		sn.agents = append(sn.agents, a)
	}
	return sn
}

// agentCounters reads a real agent's counters from its metrics. Every one
// must be there: a missing metric fails the measurement, naming it, rather
// than being replaced with another count.
func (s *meshSim) agentCounters(node, url string) (agentSnap, error) {
	var a agentSnap
	ss, err := s.scrape(url)
	if err != nil {
		return a, fmt.Errorf("agent on %s: metrics: %w", node, err)
	}
	for _, m := range []struct {
		name string
		v    *float64
		keep func(map[string]string) bool
	}{
		{"wgmesh_reconciles_total", &a.reconciles, nil},
		{"wgmesh_status_writes_total", &a.statusWrites, nil},
		{"go_memstats_heap_inuse_bytes", &a.heapInuse, nil},
		{"go_memstats_sys_bytes", &a.goSys, nil},
		{"rest_client_requests_total", &a.writes, func(l map[string]string) bool { return isWriteVerb(l["method"]) }},
	} {
		var ok bool
		if *m.v, ok = sumProm(ss, m.name, m.keep); !ok {
			return a, fmt.Errorf("agent on %s exports no %s", node, m.name)
		}
	}
	for _, x := range ss {
		if x.name == "wgmesh_reconciles_total" {
			if a.byTrigger == nil {
				a.byTrigger = map[string]float64{}
			}
			a.byTrigger[x.labels["trigger"]] += x.value
		}
	}
	if _, ok := a.byTrigger["watch"]; !ok {
		return a, fmt.Errorf("agent on %s exports no wgmesh_reconciles_total{trigger=\"watch\"}", node)
	}
	return a, nil
}

// meshDelta is what happened between two snapshots.
type meshDelta struct {
	d             time.Duration
	apiAll        float64
	apiWrites     map[string]float64 // by "VERB resource"
	apiWriteTotal float64
	opWrites      float64
	opCPU         time.Duration
	reconciles    []float64          // per agent
	watchRec      []float64          // per agent: reconciles a watch event woke
	byTrigger     map[string]float64 // all agents
	statusWrites  []float64
	agentWrites   []float64
	agentCPU      []time.Duration
	wgCPU         []time.Duration
	bench         map[string]int64
	benchTotal    int64
	statusChanges []string // per agent: what changed in its MeshPeer status
}

func diffSnap(a, b meshSnap) meshDelta {
	d := meshDelta{d: b.at.Sub(a.at), apiAll: b.apiAll - a.apiAll, apiWrites: map[string]float64{}, bench: map[string]int64{},
		opWrites: b.opWrites - a.opWrites, opCPU: b.operator.cpu - a.operator.cpu}
	for k, v := range b.api {
		verb, _, _ := strings.Cut(k, " ")
		if isWriteVerb(verb) && v-a.api[k] > 0 {
			d.apiWrites[k] = v - a.api[k]
			d.apiWriteTotal += v - a.api[k]
		}
	}
	for i := range b.agents {
		if i >= len(a.agents) {
			break
		}
		x, y := a.agents[i], b.agents[i]
		d.reconciles = append(d.reconciles, y.reconciles-x.reconciles)
		d.watchRec = append(d.watchRec, y.byTrigger["watch"]-x.byTrigger["watch"])
		if d.byTrigger == nil {
			d.byTrigger = map[string]float64{}
		}
		for k, v := range y.byTrigger {
			d.byTrigger[k] += v - x.byTrigger[k]
		}
		d.statusWrites = append(d.statusWrites, y.statusWrites-x.statusWrites)
		d.agentWrites = append(d.agentWrites, y.writes-x.writes)
		d.agentCPU = append(d.agentCPU, y.agent.cpu-x.agent.cpu)
		d.statusChanges = append(d.statusChanges, statusChange(x.status, y.status))
		d.wgCPU = append(d.wgCPU, y.wg.cpu-x.wg.cpu)
	}
	for k, v := range b.bench {
		if v-a.bench[k] > 0 {
			d.bench[k] = v - a.bench[k]
			d.benchTotal += v - a.bench[k]
		}
	}
	return d
}

// statusChange says what differs between two statuses of a MeshPeer.
func statusChange(a, b wgv1.MeshPeerStatus) string {
	var out []string
	if a.Connected != b.Connected {
		out = append(out, fmt.Sprintf("connected %s->%s", a.Connected, b.Connected))
	}
	if strings.Join(a.UnreachablePeers, ",") != strings.Join(b.UnreachablePeers, ",") {
		out = append(out, fmt.Sprintf("unreachablePeers changed (%d->%d names)", len(a.UnreachablePeers), len(b.UnreachablePeers)))
	}
	for _, c := range b.Conditions {
		var old *metav1.Condition
		for i := range a.Conditions {
			if a.Conditions[i].Type == c.Type {
				old = &a.Conditions[i]
			}
		}
		if old == nil || old.Status != c.Status || old.Message != c.Message {
			msg := c.Message
			if len(msg) > 80 {
				msg = msg[:80] + "..."
			}
			out = append(out, fmt.Sprintf("%s=%s (%s)", c.Type, c.Status, msg))
		}
	}
	if a.MTU != b.MTU || a.ObservedGeneration != b.ObservedGeneration {
		out = append(out, "mtu/observedGeneration")
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, "; ")
}

func sumF(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s
}

func maxF(xs []float64) float64 {
	m := math.Inf(-1)
	for _, x := range xs {
		m = max(m, x)
	}
	if math.IsInf(m, -1) {
		return 0
	}
	return m
}

// cpuPercent is CPU time over wall time, in percent of one core.
func cpuPercent(cpu, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return 100 * float64(cpu) / float64(wall)
}

// apiWritesLine formats the API server's writes by resource, largest first.
func apiWritesLine(m map[string]float64, per float64) string {
	type kv struct {
		k string
		v float64
	}
	var xs []kv
	for k, v := range m {
		xs = append(xs, kv{k, v / per})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].v > xs[j].v || (xs[i].v == xs[j].v && xs[i].k < xs[j].k) })
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%s %.1f", x.k, x.v))
	}
	return strings.Join(parts, ", ")
}

func benchWritesLine(m map[string]int64, per float64) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(m[k])/per))
	}
	return strings.Join(parts, ", ")
}

// WaitStatusQuiet waits (at most timeout) until the real agents' first
// probe rounds are over: until each agent's status counts every simulated
// peer unreachable (they never answer; that takes the hold-down, three
// probe intervals), and then until no agent has written its status for
// quiet.
func (s *meshSim) WaitStatusQuiet(ctx context.Context, quiet, timeout time.Duration) time.Duration {
	began := time.Now()
	last := s.Snap(ctx)
	lastChange := time.Now()
	for time.Since(began) < timeout && ctx.Err() == nil {
		time.Sleep(time.Second)
		now := s.Snap(ctx)
		if sumF(diffSnap(last, now).statusWrites) > 0 {
			lastChange = time.Now()
		}
		last = now
		s.mu.Lock()
		sims := 0
		for n := range s.alive {
			if !s.fail[n] {
				sims++
			}
		}
		s.mu.Unlock()
		all := true
		for _, a := range now.agents {
			if int(a.status.TotalPeers-a.status.ConnectedPeers) < sims {
				all = false
			}
		}
		if !all {
			lastChange = time.Now()
			continue
		}
		if time.Since(lastChange) >= quiet {
			break
		}
	}
	return time.Since(began)
}

// JoinReal adds a real node running the real agent: a faithful join, whose
// agent answers the others' probes. It returns once the node's pod CIDR is
// routed via wgmesh0 on every original real node, with how long that took
// from the start.
func (s *meshSim) JoinReal(ctx context.Context, name string, args ...string) (*cluster.Node, time.Duration) {
	tb := s.tb
	tb.Helper()
	began := time.Now()
	n, err := s.c.AddNode(ctx, name, false)
	if err != nil {
		tb.Fatalf("add real node %s: %v", name, err)
	}
	if err := n.StartAgent(ctx, args...); err != nil {
		tb.Fatal(err)
	}
	var p netip.Prefix
	s.waitFor(ctx, 2*time.Minute, "real node "+name+" routed on every real agent", func() (bool, string) {
		if !p.IsValid() {
			cidrs, err := s.PodCIDRs(ctx)
			if err != nil {
				return false, err.Error()
			}
			if p = cidrs[name]; !p.IsValid() {
				return false, "no pod CIDR yet"
			}
		}
		for _, r := range s.routes {
			if _, ok := r.firstAdd(p, began); !ok {
				return false, r.node + " has no route yet"
			}
		}
		return true, ""
	})
	return n, time.Since(began)
}

// FailReal fails a real node as a machine dies: its node runtime (the
// kubelet stand-in, so nothing posts Ready again), its agent and its
// userspace WireGuard are killed, and the Node is marked as the node
// lifecycle controller marks it (Fail).
func (s *meshSim) FailReal(ctx context.Context, n *cluster.Node) {
	tb := s.tb
	tb.Helper()
	wg := wireguardPID(n)
	n.StopRuntime()
	if err := n.KillAgent(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	if wg > 0 {
		_ = syscall.Kill(wg, syscall.SIGKILL)
	}
	if err := s.Fail(ctx, n.Name); err != nil {
		tb.Fatal(err)
	}
}
