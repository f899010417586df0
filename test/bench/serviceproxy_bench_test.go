package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/wgmesh/wgmesh/test/apiserver"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

// Knobs of BenchmarkServiceProxy (environment variables).
const (
	envKubeProxy = "WGMESH_KUBE_PROXY"         // the real kube-proxy (hack/kube-proxy.sh --path)
	envSizes     = "WGMESH_BENCH_SERVICES"     // Service counts, default "100,1000,10000"
	envQuiet     = "WGMESH_BENCH_QUIET"        // no-op resync window, default 60s
	envChanges   = "WGMESH_BENCH_CHANGES"      // changes timed per kind, default 20
	envLogs      = "WGMESH_BENCH_LOGS"         // keep the proxies' logs in this directory
	serviceProxy = "wgmesh-serviceproxy"       // ours, in WGMESH_BIN_DIR
	connects     = 2000                        // timed connects per measurement
	settle       = 1500 * time.Millisecond     // between timed changes: more than kube-proxy's 1s min-sync-period
	envTimeout   = "WGMESH_BENCH_SYNC_TIMEOUT" // for one full sync, default 5m
	// changeTimeout bounds one timed change; it counts as that long, and after
	// maxTimeouts of a kind the proxy gets no more tries of it.
	changeTimeout = 30 * time.Second
	maxTimeouts   = 3
	fullAt        = 1000 // sizes below measure only sync, RSS and connects
)

// proxySpec says how to run one service proxy and where it keeps its rules.
type proxySpec struct {
	name  string // column title
	short string // namespace and node name part
	bin   string
	table string // its IPv4 nftables table
	// keySet is the set or map of table that holds a programmed Service's
	// daddr . l4proto . dport: kube-proxy's verdict map service-ips;
	// wgmesh's cluster-ip-ports, written with (never before) the
	// Service's DNAT map elements (its element-only fast path has no
	// service-ips element).
	keySet      string
	syncMetric  string // its sync duration histogram
	metricsAddr string // in its node namespace
	args        func(kubeconfig, node string) []string
}

func kubeProxySpec(bin string) proxySpec {
	return proxySpec{
		name: "kube-proxy", short: "kube-proxy", bin: bin, table: "kube-proxy", keySet: "service-ips",
		syncMetric: "kubeproxy_sync_proxy_rules_duration_seconds", metricsAddr: "127.0.0.1:10249",
		args: func(kubeconfig, node string) []string {
			return []string{
				"--proxy-mode=nftables", "--kubeconfig=" + kubeconfig, "--hostname-override=" + node,
				"--cluster-cidr=" + benchClusterCIDR, "--detect-local-mode=ClusterCIDR",
				// Leave the conntrack sysctls alone: nf_conntrack_max is not per namespace.
				"--conntrack-max-per-core=0", "--conntrack-min=0",
				"--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
				"--conntrack-udp-timeout=0", "--conntrack-udp-timeout-stream=0",
				"--oom-score-adj=0",
				"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256",
				"--v=2",
			}
		},
	}
}

func wgmeshSpec(bin string) proxySpec {
	return proxySpec{
		name: "wgmesh", short: "wgmesh", bin: bin, table: "wgmesh", keySet: "cluster-ip-ports",
		syncMetric: "wgmesh_service_sync_duration_seconds", metricsAddr: "127.0.0.1:10249",
		args: func(kubeconfig, node string) []string {
			return []string{
				"--kubeconfig", kubeconfig, "--node-name", node,
				"--cluster-cidrs", benchClusterCIDR, "--service-cidrs", benchServiceCIDR,
				"--metrics-bind-address", "127.0.0.1:10249", "--health-probe-bind-address", "127.0.0.1:10256",
			}
		},
	}
}

// proxyResult is what one proxy measured at one Service count.
type proxyResult struct {
	failed         string        // why it has no figures (did not finish its full sync)
	fullSync       time.Duration // process start to every Service's map element in the kernel
	fullSyncMetric float64       // seconds its own sync metric summed up to then
	rssKiB         int64         // VmHWM at the end
	childRSSKiB    int64         // peak VmHWM of a child (kube-proxy's nft)
	connect        []time.Duration
	svcChange      []time.Duration // Service created -> its map element in the kernel
	svcAPI         []time.Duration // of which the create call (the API server's write)
	epChange       []time.Duration // endpoint replaced -> new connections reach the new one
	epAPI          []time.Duration // of which the update call
	quiet          time.Duration
	quietCPU       time.Duration
	quietSyncs     float64
	quietSyncSum   float64
	// A full resync forced by a change that alters no rule (the Node's zone
	// label: kube-proxy then rebuilds everything; its own periodic one is hourly).
	forcedCPU     time.Duration
	forcedSyncs   float64
	forcedSyncSum float64
}

type benchEnv struct {
	cs                          kubernetes.Interface
	objs                        *benchObjects
	kubeconfig, apiAddr, logDir string
	quiet, syncTimeout          time.Duration
	changes                     int
	switchAt                    int // index in switchEPs the "switch" Service points at
	runs                        int // proxy runs so far: each creates its changes in its own /24
}

// BenchmarkServiceProxy runs the real kube-proxy (nftables mode) and wgmesh's
// service proxy against one real API server holding the same Services and
// EndpointSlices, one proxy at a time (2 cores: running both at once would
// measure each against the other), each in its own node namespace with a
// client namespace routed through it, and prints one table with both
// columns, the ratios and the targets of the service NAT issue.
func BenchmarkServiceProxy(b *testing.B) {
	kubeProxy, ours := serviceProxyBinaries(b)
	sizes := serviceCounts(b)
	env := startServiceProxyEnv(b)

	specs := []proxySpec{kubeProxySpec(kubeProxy), wgmeshSpec(ours)}
	results := map[string]map[int]*proxyResult{}
	for _, n := range sizes {
		start := time.Now()
		must(b, env.objs.grow(context.Background(), n))
		fmt.Printf("service proxy bench: %d Services with %d endpoints each created in %s (load average %s)\n",
			n, endpointsPerService, time.Since(start).Round(time.Millisecond), loadAverage())
		for _, s := range specs {
			if results[s.name] == nil {
				results[s.name] = map[int]*proxyResult{}
			}
			if failedBefore(results[s.name]) {
				results[s.name][n] = &proxyResult{failed: "not run: it failed at a smaller count"}
				continue
			}
			r := measureProxy(b, env, s, n)
			results[s.name][n] = r
			if r.failed != "" {
				fmt.Printf("service proxy bench: %s at %d Services FAILED: %s\n", s.name, n, r.failed)
				continue
			}
			fmt.Printf("service proxy bench: %s at %d Services: full sync %s, peak RSS %s, connect p50 %s (load average %s)\n",
				s.name, n, r.fullSync.Round(time.Millisecond), mib(r.rssKiB), percentile(r.connect, 50), loadAverage())
		}
	}
	printServiceProxyTable(b, sizes, results)
}

func failedBefore(m map[int]*proxyResult) bool {
	for _, r := range m {
		if r.failed != "" {
			return true
		}
	}
	return false
}

// loadAverage is the 1-minute load average: the figures assume a machine
// otherwise idle, and this shows when it was not.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// serviceProxyBinaries skips (test/skip) where the benchmark cannot run and
// returns kube-proxy's path and ours. Both are required: the benchmark is
// the comparison, and does not measure kube-proxy alone.
func serviceProxyBinaries(b *testing.B) (kubeProxy, ours string) {
	b.Helper()
	netns.SkipUnlessRoot(b)
	if reason := apiserver.SkipReason(); reason != "" {
		skip.Unless(b, "service proxy benchmark: "+reason)
	}
	kubeProxy = os.Getenv(envKubeProxy)
	if kubeProxy == "" {
		skip.Unless(b, "service proxy benchmark: "+envKubeProxy+" is unset: it compares with the real kube-proxy (make bench builds it with hack/kube-proxy.sh)")
	}
	if _, err := os.Stat(kubeProxy); err != nil {
		skip.Unless(b, fmt.Sprintf("service proxy benchmark: %s=%s: %v (build it with hack/kube-proxy.sh)", envKubeProxy, kubeProxy, err))
	}
	if _, err := exec.LookPath("nft"); err != nil {
		skip.Unless(b, "service proxy benchmark: kube-proxy's nftables mode runs the nft binary (apt-get install nftables)")
	}
	ours = filepath.Join(os.Getenv("WGMESH_BIN_DIR"), serviceProxy)
	if _, err := os.Stat(ours); os.Getenv("WGMESH_BIN_DIR") == "" || err != nil {
		skip.Unless(b, fmt.Sprintf("service proxy benchmark: no %s in WGMESH_BIN_DIR=%q: it is one side of the comparison (make serviceproxy builds it; make bench does)",
			serviceProxy, os.Getenv("WGMESH_BIN_DIR")))
	}
	return kubeProxy, ours
}

func serviceCounts(b *testing.B) []int {
	v := os.Getenv(envSizes)
	if v == "" {
		return []int{100, 1000, 10000}
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 50000 {
			b.Fatalf("%s=%q: want a comma-separated list of Service counts from 1 to 50000", envSizes, v)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			b.Fatalf("%s=%q: want increasing counts (Services are only added)", envSizes, v)
		}
		out = append(out, n)
	}
	return out
}

func envDuration(b *testing.B, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// startServiceProxyEnv starts the API server with the benchmark's service
// range and writes the kubeconfig the proxies use.
func startServiceProxyEnv(b *testing.B) *benchEnv {
	b.Helper()
	ae, cfg, err := apiserver.StartWith(apiserver.Options{ServiceCIDR: benchServiceCIDR})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ae.Stop() })
	u, err := url.Parse(cfg.Host)
	must(b, err)
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		b.Fatalf("API server address %q: %v", cfg.Host, err)
	}
	dir := b.TempDir()
	logDir := dir
	if v := os.Getenv(envLogs); v != "" {
		must(b, os.MkdirAll(v, 0o755))
		logDir = v
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(b, os.WriteFile(kubeconfig, ae.KubeConfig, 0o600))
	cfg.QPS, cfg.Burst = 2000, 4000
	cs, err := kubernetes.NewForConfig(cfg)
	must(b, err)
	changes := 20
	if v := os.Getenv(envChanges); v != "" {
		if changes, err = strconv.Atoi(v); err != nil || changes < 1 {
			b.Fatalf("%s=%q: want a positive number", envChanges, v)
		}
	}
	env := &benchEnv{
		cs: cs, objs: &benchObjects{cs: cs}, kubeconfig: kubeconfig, apiAddr: u.Host, logDir: logDir,
		quiet: envDuration(b, envQuiet, 60*time.Second), changes: changes,
		syncTimeout: envDuration(b, envTimeout, 5*time.Minute),
	}
	must(b, env.objs.setup(context.Background()))
	return env
}

// ensureNode registers the proxy's Node with its InternalIP, as a kubelet would.
func (e *benchEnv) ensureNode(ctx context.Context, name string) error {
	n, err := e.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("Node %s: %w", name, err)
	}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeClientIP}}
	if _, err := e.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("Node %s status: %w", name, err)
	}
	return nil
}

// measureProxy starts one proxy over the n Services present and measures it.
func measureProxy(b *testing.B, env *benchEnv, spec proxySpec, n int) *proxyResult {
	b.Helper()
	ctx := context.Background()
	pn := newProxyNet(b, spec.short, env.apiAddr)
	defer pn.close()
	node := "bench-" + spec.short
	must(b, env.ensureNode(ctx, node))
	probe, err := newNFTProbe(pn.node, spec.table, spec.keySet)
	must(b, err)
	defer probe.Close()

	p := startProxyProc(b, pn.node, fmt.Sprintf("%s-%d", spec.short, n), spec.bin, spec.args(env.kubeconfig, node), "nft", env.logDir)
	defer p.stop()
	r := &proxyResult{}
	if r.fullSync, err = waitFullSync(p, probe, n, env.syncTimeout); err != nil {
		r.failed = err.Error()
		return r
	}
	for _, ip := range []netip.Addr{probeIP, switchIP} {
		if _, err := pollElement(p, probe, serviceKey(ip, servicePort), time.Minute); err != nil {
			r.failed = err.Error()
			return r
		}
	}
	// The metric is observed after the rules are in the kernel (kube-proxy
	// waits for nft to exit), so give it a moment.
	r.fullSyncMetric, _ = waitHistogram(b, pn, spec, 0)

	// Measure a settled proxy: the full sync may go on after the elements are
	// in (kube-proxy's other IP family, nft exiting).
	waitIdle(p, 2*time.Minute)
	time.Sleep(settle)
	r.connect, err = connectLatencies(pn.client, netip.AddrPortFrom(probeIP, servicePort), 200, connects)
	if err != nil {
		b.Fatalf("%s with %d Services: %v", spec.name, n, err)
	}

	if n >= fullAt {
		r.quiet = env.quiet
		cpu0, err := p.cpu()
		must(b, err)
		sum0, cnt0, _ := scrapeHistogram(ctx, pn.node, spec.metricsAddr, spec.syncMetric)
		time.Sleep(env.quiet)
		cpu1, err := p.cpu()
		must(b, err)
		sum1, cnt1, _ := scrapeHistogram(ctx, pn.node, spec.metricsAddr, spec.syncMetric)
		r.quietCPU, r.quietSyncs, r.quietSyncSum = cpu1-cpu0, cnt1-cnt0, sum1-sum0
		r.forcedCPU, r.forcedSyncs, r.forcedSyncSum = forcedResync(b, env, p, pn, spec, node)

		env.runs++
		base := netip.AddrFrom4([4]byte{198, 19, byte(200 + env.runs), 0})
		var names []string
		r.svcChange, r.svcAPI, names = serviceChanges(b, env, p, probe, spec.short, base)
		r.epChange, r.epAPI = endpointChanges(b, env, pn)
		defer func() {
			for _, name := range names {
				if err := env.objs.deleteService(ctx, name); err != nil {
					b.Log(err)
				}
			}
		}()
	}
	if p.exited() {
		b.Fatal(p.exitedWith())
	}
	r.rssKiB, err = p.peakRSSKiB()
	must(b, err)
	r.childRSSKiB = p.childPeakKiB.Load()
	return r
}

// waitHistogram waits up to a minute until the proxy's sync histogram has
// more than after observations, and returns its sum and count.
func waitHistogram(b *testing.B, pn *proxyNet, spec proxySpec, after float64) (sum, count float64) {
	b.Helper()
	ctx := context.Background()
	if err := wait.Every(ctx, time.Minute, 100*time.Millisecond, func() (err error) {
		if sum, count, err = scrapeHistogram(ctx, pn.node, spec.metricsAddr, spec.syncMetric); err == nil && count <= after {
			err = fmt.Errorf("%s has %v observations", spec.syncMetric, count)
		}
		return err
	}); err != nil {
		b.Logf("%s: no new %s observation: %v", spec.name, spec.syncMetric, err)
	}
	return sum, count
}

// waitIdle waits until the process is idle (see proxyProc.idle), at most timeout.
func waitIdle(p *proxyProc, timeout time.Duration) {
	for start := time.Now(); time.Since(start) < timeout && !p.exited(); {
		if p.idle(time.Second) {
			return
		}
	}
}

// forcedResync changes the proxy Node's topology.kubernetes.io/zone label,
// which alters no rule here (no endpoint has zone hints) but makes
// kube-proxy rebuild its whole table, and measures the process's CPU time and
// its sync metric over the following syncs. A proxy that does not resync on
// it reports no syncs.
func forcedResync(b *testing.B, env *benchEnv, p *proxyProc, pn *proxyNet, spec proxySpec, node string) (time.Duration, float64, float64) {
	b.Helper()
	ctx := context.Background()
	sum0, cnt0, err := scrapeHistogram(ctx, pn.node, spec.metricsAddr, spec.syncMetric)
	must(b, err)
	cpu0, err := p.cpu()
	must(b, err)
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:"bench-zone-%d"}}}`, corev1.LabelTopologyZone, env.runs)
	if _, err := env.cs.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		b.Fatalf("label Node %s: %v", node, err)
	}
	// Wait until the syncs it causes are over: kube-proxy syncs each IP family
	// in turn, and a full rebuild at 10,000 Services takes many seconds, most
	// of them in nft (a child it waits for). A proxy that does not react gets 20s.
	sum1, cnt1 := sum0, cnt0
	start := time.Now()
	last := start
	for time.Since(start) < 3*time.Minute {
		time.Sleep(500 * time.Millisecond)
		s, c, err := scrapeHistogram(ctx, pn.node, spec.metricsAddr, spec.syncMetric)
		must(b, err)
		if c != cnt1 {
			sum1, cnt1, last = s, c, time.Now()
		}
		if cnt1 == cnt0 && time.Since(start) > 20*time.Second {
			break
		}
		if cnt1 != cnt0 && time.Since(last) > 3*time.Second && p.idle(time.Second) {
			break
		}
	}
	cpu1, err := p.cpu()
	must(b, err)
	return cpu1 - cpu0, cnt1 - cnt0, sum1 - sum0
}

// waitFullSync waits until every bulk Service's element is in the kernel
// and returns the time since the process started. It polls the last bulk
// Service's element first (one cheap lookup), then dumps the map. A proxy
// that exits or does not finish within syncTimeout is an error, not a fatal
// one: the other proxy's figures are still worth printing.
func waitFullSync(p *proxyProc, probe *nftProbe, n int, syncTimeout time.Duration) (time.Duration, error) {
	last := bulkKey(n - 1)
	want := bulkKeys(n)
	got := 0
	lastSeen := false
	for ; ; time.Sleep(pollInterval) {
		if p.exited() {
			return 0, errors.New(p.exitedWith())
		}
		if time.Since(p.started) > syncTimeout {
			what := fmt.Sprintf("only %d of %d Services", got, n)
			if !lastSeen {
				what = fmt.Sprintf("not even the last Service's (%s)", bulkName(n-1))
			}
			return 0, fmt.Errorf("%s: %s in %s %s after %s; log %s", p.name, what, probe.table, probe.set, syncTimeout, p.logPath)
		}
		if !lastSeen {
			ok, err := probe.has(last)
			if err != nil {
				return 0, err
			}
			if lastSeen = ok; !ok {
				continue
			}
		}
		var err error
		if got, err = probe.count(want); err != nil {
			return 0, err
		}
		if got == n {
			return time.Since(p.started), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitElement polls the key set for key every pollInterval.
func waitElement(b *testing.B, p *proxyProc, probe *nftProbe, key []byte, timeout time.Duration) time.Time {
	b.Helper()
	t, err := pollElement(p, probe, key, timeout)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// pollElement is waitElement returning its failure.
func pollElement(p *proxyProc, probe *nftProbe, key []byte, timeout time.Duration) (time.Time, error) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var at time.Time
	var failed error // not worth polling on
	err := wait.Every(ctx, timeout, pollInterval, func() error {
		ok, err := probe.has(key)
		switch {
		case err != nil:
			failed = err
		case ok:
			at = time.Now()
			return nil
		case p.exited():
			failed = errors.New(p.exitedWith())
		default:
			return fmt.Errorf("%s: element %x not in %s %s", p.name, key, probe.table, probe.set)
		}
		cancel()
		return failed
	})
	if failed != nil {
		return time.Time{}, failed
	}
	return at, err
}

// serviceChanges creates env.changes Services one at a time and times each
// create until the Service's map element is in the kernel. Their slices are
// created first, together, so that each timed step is one event (kube-proxy
// syncs at most once per min-sync-period, and an untimed event just before a
// timed one would delay it). It returns the durations, those of the create
// calls alone, and the names to delete.
func serviceChanges(b *testing.B, env *benchEnv, p *proxyProc, probe *nftProbe, tag string, base netip.Addr) ([]time.Duration, []time.Duration, []string) {
	b.Helper()
	ctx := context.Background()
	var names []string
	for i := range env.changes {
		name := fmt.Sprintf("change-%s-%d-%02d", tag, base.As4()[2], i)
		if _, err := env.cs.DiscoveryV1().EndpointSlices(benchNamespace).Create(ctx, endpointSlice(name, []netip.Addr{changeEP}), metav1.CreateOptions{}); err != nil {
			b.Fatalf("EndpointSlice %s: %v", name, err)
		}
		names = append(names, name)
	}
	time.Sleep(2 * settle)
	var out, api []time.Duration
	timedOut := 0
	for i, name := range names {
		time.Sleep(settle)
		ip := addAddr(base, i+1)
		start := time.Now()
		must(b, env.objs.createServiceOnly(ctx, name, ip))
		api = append(api, time.Since(start))
		done, err := pollElement(p, probe, serviceKey(ip, servicePort), changeTimeout)
		if err != nil {
			// Counted as the timeout; a proxy this slow gets no more tries.
			b.Log(err)
			out = append(out, changeTimeout)
			if timedOut++; timedOut == maxTimeouts {
				break
			}
			continue
		}
		out = append(out, done.Sub(start))
	}
	time.Sleep(settle)
	return out, api, names
}

// endpointChanges flips the "switch" Service's only endpoint env.changes
// times and times each update until new connections from the client reach
// the new endpoint; also the durations of the update calls alone.
func endpointChanges(b *testing.B, env *benchEnv, pn *proxyNet) ([]time.Duration, []time.Duration) {
	b.Helper()
	ctx := context.Background()
	addr := net.JoinHostPort(switchIP.String(), strconv.Itoa(servicePort))
	var out, api []time.Duration
	timedOut := 0
	for range env.changes {
		next := 1 - env.switchAt
		s, err := env.objs.switchSlice(ctx, switchEPs[next])
		must(b, err)
		time.Sleep(settle)
		start := make(chan time.Time, 1)
		type result struct {
			d   time.Duration
			err error
		}
		res := make(chan result, 1)
		go func() {
			d, err := waitGreeting(pn.client, addr, switchEPs[next].As4()[3], start, changeTimeout)
			res <- result{d, err}
		}()
		began := time.Now()
		start <- began
		must(b, env.objs.updateSlice(ctx, s))
		api = append(api, time.Since(began))
		r := <-res
		env.switchAt = next
		if r.err != nil {
			b.Log(r.err)
			out = append(out, changeTimeout)
			if timedOut++; timedOut == maxTimeouts {
				break
			}
			continue
		}
		out = append(out, r.d)
	}
	return out, api
}
