// Package agent is wgmesh's per-node agent. It keeps this node's part of the
// encrypted mesh in the state the API server describes:
//
//   - keys: the node's WireGuard key (agent/keys), published with the chosen
//     endpoint (agent/endpoint) as annotations on its own Node;
//   - mesh: the desired peers and routes, computed without side effects from
//     all MeshPeers (agent/mesh);
//   - kernel: the WireGuard link and its peers (agent/wireguard), MTU
//     (agent/mtu), pod bridge and routes (agent/routes), sysctls
//     (agent/sysctl) — see Kernel;
//   - node data plane: every NodeDataplane in Options.Dataplanes (CNI
//     configuration, egress masquerade, the leak guard, ...), applied after the mesh with
//     the same NodeState;
//   - status, metrics and Events for what it did and what it could not do.
//
// One reconcile does all of that, level-based: it is triggered by MeshPeer
// and Node changes, by netlink events on its links (drift), and by a periodic
// resync, and it writes nothing where nothing differs.
package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/wgmesh/wgmesh/agent/keyrotation"
	"github.com/wgmesh/wgmesh/agent/keys"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/routes"
	"github.com/wgmesh/wgmesh/agent/tunnel"
	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Agent is one node's agent.
type Agent struct {
	o       Options
	log     logr.Logger
	key     wgtypes.Key
	kernel  Tunnel
	metrics *Metrics
	client  client.Client
	reader  client.Reader
	// apiReader reads from the API server, not the cache (the agent's own
	// DaemonSet, the Node as the agent stops).
	apiReader client.Reader
	events    recorder.EventRecorder
	trigger   *trigger
	ready     atomic.Bool
	// readyErr says why the agent is not ready (for /readyz).
	readyErr atomic.Value
	// reported remembers which problems were already announced (Events,
	// log lines) so that a resync does not repeat them; losing it on
	// restart only repeats each Event once.
	reported map[string]bool
	// nodes knows every Node's UID (which MeshPeers are node peers);
	// apiServer are the API server's addresses (never into the tunnel).
	nodes     *nodeDirectory
	apiServer []netip.Addr
	// learned are the endpoints WireGuard uses for each peer after the last
	// reconcile (learned from handshakes when a peer is behind NAT).
	learned []learnedEndpoint
	// prober checks every node peer through the tunnel (nil: probes off);
	// status decides when the MeshPeer status is written.
	prober *probe.Prober
	status statusPolicy

	// rotation owns the key (agent/keyrotation): key is what it decides.
	rotation *keyrotation.Rotator
}

// New prepares an agent: it loads or creates the private key.
func New(o Options, log logr.Logger) (*Agent, error) {
	o.defaults()
	if o.NodeName == "" {
		return nil, errors.New("no node name: set --node-name or the NODE_NAME environment variable")
	}
	kr := o.KeyRotation
	kr.StateDir, kr.NodeName, kr.Log = o.StateDir, o.NodeName, log.WithName("keyrotation")
	rot, err := keyrotation.Open(kr)
	if err != nil {
		return nil, err
	}
	key := rot.Key()
	a := &Agent{o: o, log: log, key: key, rotation: rot, trigger: newTrigger(), reported: map[string]bool{},
		status: statusPolicy{MinInterval: o.StatusMinInterval, MembershipDelay: o.StatusMembershipDelay, rand: rand.Int64N}}
	a.kernel = o.Tunnel
	if a.kernel == nil {
		a.kernel = tunnel.New(tunnel.Options{
			LinkName: o.LinkName, BridgeName: o.BridgeName, Mode: o.WireGuardMode, ListenPort: o.ListenPort, MTU: o.MTU,
			UserspaceLog: o.StateDir + "/wireguard-go.log", UserspaceExternal: o.UserspaceSidecar, Log: log.WithName("kernel"),
		})
	}
	log.Info("WireGuard key ready", "publicKey", key.PublicKey().String(), "keyFile", o.StateDir+"/"+keys.FileName)
	return a, nil
}

// PublicKey is the node's public key.
func (a *Agent) PublicKey() wgtypes.Key { return a.key.PublicKey() }

// Scheme returns the scheme the agent's clients use.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = wgv1.AddToScheme(s)
	return s
}

// Run runs the agent until ctx ends. Then it removes what it created from
// the node when it is being uninstalled (its DaemonSet is gone or being
// deleted) or with --cleanup-on-exit, and leaves the data plane up
// otherwise (see exitCleanup).
func (a *Agent) Run(ctx context.Context, cfg *rest.Config) error {
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 Scheme(),
		Logger:                 a.log,
		Metrics:                metricsserver.Options{BindAddress: a.o.MetricsBindAddress},
		HealthProbeBindAddress: a.o.HealthProbeAddress,
		Cache: cache.Options{
			// Nothing in the agent reads managedFields: with a thousand
			// MeshPeers they are a third of what the cache holds.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// Only this node's Node: with thousands of nodes the agent
				// must not cache them all.
				&corev1.Node{}: {Field: fields.OneTermEqualSelector("metadata.name", a.o.NodeName)},
			}},
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	a.client = mgr.GetClient()
	a.reader = mgr.GetCache()
	a.apiReader = mgr.GetAPIReader()
	a.events = mgr.GetEventRecorder(FieldManager)
	reg := a.o.Registerer
	if reg == nil {
		reg = metrics.Registry
	}
	a.metrics = NewMetrics(reg, a.o.PerPeerMetrics)
	a.rotation.Bind(keyrotation.ClientAPI{NodeName: a.o.NodeName, Reader: a.reader, Client: a.client, Events: a.events}, a.trigger.fire)
	if a.o.ProbeInterval > 0 {
		a.prober = probe.New(probe.Options{Interval: a.o.ProbeInterval, Timeout: a.o.ProbeTimeout, Pinger: probe.NewICMPPinger(),
			Metrics: probe.NewMetrics(reg), Log: a.log.WithName("probe"), OnRecovery: func() { a.trigger.fireFor("probe") }})
		if err := mgr.Add(manager.RunnableFunc(a.prober.Run)); err != nil {
			return err
		}
	}
	hasPeer := func(name string) bool {
		return a.reader.Get(ctx, client.ObjectKey{Name: name}, &wgv1.MeshPeer{}) == nil
	}
	if a.nodes, err = newNodeDirectory(cfg, func() { a.trigger.fireFor("watch") }, hasPeer); err != nil {
		return err
	}
	if err := mgr.Add(a.nodes); err != nil {
		return err
	}
	a.apiServer = wgv1.URLHostAddrs(cfg.Host)
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("dataplane", func(*http.Request) error {
		if !a.ready.Load() {
			if msg, _ := a.readyErr.Load().(string); msg != "" {
				return errors.New(msg)
			}
			return errors.New("WireGuard link not configured yet")
		}
		return nil
	}); err != nil {
		return err
	}
	// Reconcile on what the mesh is made of, never on status alone: with N
	// nodes every agent's status write reaches every agent.
	for _, w := range []struct {
		kind    string
		obj     client.Object
		changed func(old, new any) bool
	}{{"Node", &corev1.Node{}, ownNodeChanged}, {"MeshPeer", &wgv1.MeshPeer{}, meshPeerChanged}} {
		inf, err := mgr.GetCache().GetInformer(ctx, w.obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", w.obj, err)
		}
		changed := w.changed
		woke, ignored := a.metrics.WatchEvents.WithLabelValues(w.kind, "reconcile"), a.metrics.WatchEvents.WithLabelValues(w.kind, "ignored")
		wake := func() { woke.Inc(); a.trigger.fireFor("watch") }
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { wake() },
			UpdateFunc: func(old, new any) {
				if changed(old, new) {
					wake()
				} else {
					ignored.Inc()
				}
			},
			DeleteFunc: func(any) { wake() },
		}); err != nil {
			return err
		}
	}
	if err := mgr.Add(manager.RunnableFunc(a.loop)); err != nil {
		return err
	}
	if sp := a.o.ServiceProxy; sp != nil {
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return sp.Run(ctx, cfg) })); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("service-nat", func(*http.Request) error { return sp.Synced() }); err != nil {
			return err
		}
	}
	runErr := mgr.Start(ctx)
	clean, why := exitCleanup(context.Background(), a.o, a.apiReader)
	if !clean {
		a.log.Info("stopping; the data plane stays", "reason", why)
		return runErr
	}
	a.log.Info("stopping; removing wgmesh from the node", "reason", why)
	a.nodeEvent(corev1.EventTypeNormal, ReasonUninstalling, fmt.Sprintf("%s: removing wgmesh from node %s (link %s, routes, bridge %s, nftables table %s, CNI config and plugins, annotations)",
		why, a.o.NodeName, a.o.LinkName, a.o.BridgeName, "wgmesh"))
	if err := a.cleanup(); err != nil {
		a.log.Error(err, "removing wgmesh from the node", "reason", why)
		a.nodeEvent(corev1.EventTypeWarning, ReasonUninstallFailed, fmt.Sprintf("%s, but removing wgmesh from node %s failed: %v", why, a.o.NodeName, err))
		return errors.Join(runErr, err)
	}
	a.nodeEvent(corev1.EventTypeNormal, ReasonUninstalled, fmt.Sprintf("removed wgmesh from node %s (%s)", a.o.NodeName, why))
	return runErr
}

// loop reconciles on every trigger, on netlink drift and every Resync.
func (a *Agent) loop(ctx context.Context) error {
	// The first reconcile waits for both caches: without the list of
	// Nodes it cannot tell node peers from external ones, and failing on
	// that would only grow the retry back-off before the real work.
	if !a.reader.(cache.Cache).WaitForCacheSync(ctx) {
		return errors.New("cache did not sync")
	}
	if a.nodes != nil && !a.nodes.WaitForSync(ctx) {
		return nil
	}
	if err := routes.Watch(ctx, routes.WatchOptions{
		Links:   []string{a.o.LinkName, a.o.BridgeName},
		OnError: func(err error) { a.log.V(1).Info("netlink subscription", "error", err.Error()) },
	}, func() { a.trigger.fireFor("netlink") }); err != nil {
		a.log.Error(err, "netlink subscription failed; drift is repaired by the periodic resync only", "resync", a.o.Resync)
	}
	tick := time.NewTicker(a.o.Resync)
	defer tick.Stop()
	a.trigger.fireFor("start")
	backoff := time.Second
	var notBefore time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger.c:
		case <-tick.C:
		}
		// Paced: the wake-ups that arrive meanwhile join this reconcile.
		if wait := time.Until(notBefore); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		a.trigger.drain()
		a.metrics.Reconciles.WithLabelValues(a.trigger.take()).Inc()
		start := time.Now()
		err := a.reconcile(ctx)
		// Rest as long as the reconcile took, so reconciles hold at most
		// half a core however fast events come. A small mesh reconciles in
		// a few milliseconds and never notices; with a thousand peers a
		// reconcile takes about 0.1 s, and a burst of joins (a cluster's
		// nodes coming up) would otherwise keep a core busy on every node,
		// starving the API server and the operator that publish the joins.
		notBefore = time.Now().Add(time.Since(start))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, errRefuseToRun) {
				return err
			}
			a.log.Error(err, "reconcile failed; retrying", "after", backoff)
			time.AfterFunc(backoff, func() { a.trigger.fireFor("retry") })
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
}

// trigger coalesces wake-ups: many events while a reconcile runs cause one
// more reconcile, not many. It remembers why it fired, for
// wgmesh_reconciles_total{trigger}.
type trigger struct {
	c       chan struct{}
	mu      sync.Mutex
	reasons map[string]bool
}

// Reconcile triggers (the label of wgmesh_reconciles_total), most specific
// first: a reconcile woken for several reasons counts under the first.
var triggerReasons = []string{"watch", "netlink", "probe", "retry", "start", "other", "resync"}

func newTrigger() *trigger { return &trigger{c: make(chan struct{}, 1), reasons: map[string]bool{}} }

func (t *trigger) fire() { t.fireFor("other") }

func (t *trigger) fireFor(reason string) {
	t.mu.Lock()
	t.reasons[reason] = true
	t.mu.Unlock()
	select {
	case t.c <- struct{}{}:
	default:
	}
}

// drain drops a pending wake-up: called before take, whose reconcile
// covers it. (A wake-up between the two leaves its reason to this
// reconcile and its signal for one more: never lost.)
func (t *trigger) drain() {
	select {
	case <-t.c:
	default:
	}
}

// take returns the reason of the wake-up and forgets them all.
func (t *trigger) take() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	defer clear(t.reasons)
	for _, r := range triggerReasons {
		if t.reasons[r] {
			return r
		}
	}
	return "resync"
}

// cleanup removes wgmesh from the node, the one way for an uninstall and for
// --cleanup-on-exit: the service NAT, then every NodeDataplane in the reverse
// of the order they were applied (the CNI conflist and the plugins the agent
// installed, egress, and last the leak guard, whose cleanup deletes nftables
// table wgmesh with every part in it), the routes, the bridge and the
// WireGuard link, and this node's annotations (the operator then deletes
// the node's MeshPeer). The private key stays in the state directory.
func (a *Agent) cleanup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var errs []error
	if a.o.ServiceProxy != nil {
		if err := a.o.ServiceProxy.Delete(); err != nil {
			errs = append(errs, fmt.Errorf("service NAT cleanup: %w", err))
		}
	}
	for _, d := range slices.Backward(a.o.Dataplanes) {
		if err := d.Cleanup(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s cleanup: %w", d.Name(), err))
		}
	}
	if err := a.kernel.Cleanup(); err != nil {
		errs = append(errs, err)
	}
	if err := withdrawAnnotations(ctx, a.client, a.o.NodeName); err != nil {
		errs = append(errs, err)
	}
	a.log.Info("removed wgmesh from the node", "link", a.o.LinkName, "bridge", a.o.BridgeName, "errors", len(errs))
	return errors.Join(errs...)
}

// Tunnel returns what applies the mesh to the node (tests and tooling).
func (a *Agent) Tunnel() Tunnel { return a.kernel }
