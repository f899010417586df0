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
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/wgmesh/wgmesh/agent/keyrotation"
	"github.com/wgmesh/wgmesh/agent/keys"
	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/routes"
	"github.com/wgmesh/wgmesh/agent/runner"
	"github.com/wgmesh/wgmesh/agent/servicenat"
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
	// events and statusWriter are the runtime's (agent/kube), shared with
	// the service NAT.
	events       recorder.EventRecorder
	statusWriter *kube.StatusWriter
	// run runs the reconciles: woken by watches, netlink, probes, paced,
	// retried with back-off.
	run *runner.Runner
	// synced are the agent's informers' (Nodes, MeshPeers): the first
	// reconcile waits for them.
	synced []toolscache.InformerSynced
	ready  atomic.Bool
	// readyErr says why the agent is not ready (for /readyz).
	readyErr atomic.Value
	// reported remembers which problems were already announced (Events,
	// log lines) so that a resync does not repeat them; losing it on
	// restart only repeats each Event once.
	reported map[string]bool
	// relays are the relays peers were reached through at the last
	// reconcile (reportRelays).
	relays relayState
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
	a := &Agent{o: o, log: log, key: key, rotation: rot, reported: map[string]bool{},
		run: runner.New(runner.Options{Period: o.Resync, Reasons: triggerReasons, Pace: true,
			Fatal:     func(err error) bool { return errors.Is(err, errRefuseToRun) },
			OnFailure: func(err error, after time.Duration) { log.Error(err, "reconcile failed; retrying", "after", after) }}),
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
func Scheme() *runtime.Scheme { return kube.Scheme() }

// Run runs the agent until ctx ends. Then it removes what it created from
// the node when it is being uninstalled (its DaemonSet is gone or being
// deleted) or with --cleanup-on-exit, and leaves the data plane up
// otherwise (see exitCleanup).
func (a *Agent) Run(ctx context.Context, cfg *rest.Config) error {
	// One runtime for the whole process (agent/kube): one client stack, one
	// informer cache in which each resource is watched once, shared with
	// the service NAT, one status writer, one Event writer.
	var serviceNAT map[client.Object]cache.ByObject
	if a.o.ServiceProxy != nil {
		serviceNAT = servicenat.CacheOptions()
	}
	mgr, err := kube.New(cfg, kube.Options{NodeName: a.o.NodeName, Scheme: Scheme(), Log: a.log,
		MetricsBindAddress: a.o.MetricsBindAddress, HealthProbeAddress: a.o.HealthProbeAddress, ByObject: serviceNAT})
	if err != nil {
		return err
	}
	a.client = mgr.GetClient()
	a.reader = mgr.GetCache()
	a.apiReader = mgr.GetAPIReader()
	a.events = mgr.Events.For(FieldManager)
	a.statusWriter = mgr.Status
	reg := a.o.Registerer
	if reg == nil {
		reg = metrics.Registry
	}
	a.metrics = NewMetrics(reg, a.o.PerPeerMetrics)
	a.rotation.Bind(keyrotation.ClientAPI{NodeName: a.o.NodeName, Reader: a.reader, Client: a.client, Events: a.events}, func() { a.run.Wake("other") })
	if a.o.ProbeInterval > 0 {
		a.prober = probe.New(probe.Options{Interval: a.o.ProbeInterval, Timeout: a.o.ProbeTimeout, Pinger: probe.NewICMPPinger(),
			Metrics: probe.NewMetrics(reg), Log: a.log.WithName("probe"), OnRecovery: func() { a.run.Wake("probe") }})
		if err := mgr.Add(manager.RunnableFunc(a.prober.Run)); err != nil {
			return err
		}
	}
	nodeInf, err := mgr.Informer(ctx, &corev1.Node{})
	if err != nil {
		return err
	}
	peerInf, err := mgr.Informer(ctx, &wgv1.MeshPeer{})
	if err != nil {
		return err
	}
	a.synced = []toolscache.InformerSynced{nodeInf.HasSynced, peerInf.HasSynced}
	hasPeer := func(name string) bool {
		return a.reader.Get(ctx, client.ObjectKey{Name: name}, &wgv1.MeshPeer{}) == nil
	}
	if a.nodes, err = newNodeDirectory(nodeInf, func() { a.run.Wake("watch") }, hasPeer); err != nil {
		return err
	}
	if err := mgr.Add(a.nodes); err != nil {
		return err
	}
	a.apiServer = mgr.APIServer
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
	// nodes every agent's status write reaches every agent. Of the Nodes,
	// only this node's own (the others are the node directory's).
	for _, w := range []struct {
		kind    string
		inf     toolscache.SharedIndexInformer
		changed func(old, new any) bool
		filter  func(obj any) bool
	}{{"Node", nodeInf, ownNodeChanged, isNamed(a.o.NodeName)}, {"MeshPeer", peerInf, meshPeerChanged, nil}} {
		changed := w.changed
		woke, ignored := a.metrics.WatchEvents.WithLabelValues(w.kind, "reconcile"), a.metrics.WatchEvents.WithLabelValues(w.kind, "ignored")
		wake := func() { woke.Inc(); a.run.Wake("watch") }
		var h toolscache.ResourceEventHandler = toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { wake() },
			UpdateFunc: func(old, new any) {
				if changed(old, new) {
					wake()
				} else {
					ignored.Inc()
				}
			},
			DeleteFunc: func(any) { wake() },
		}
		if w.filter != nil {
			h = toolscache.FilteringResourceEventHandler{FilterFunc: w.filter, Handler: h}
		}
		if _, err := w.inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	if err := mgr.Add(manager.RunnableFunc(a.loop)); err != nil {
		return err
	}
	if sp := a.o.ServiceProxy; sp != nil {
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return sp.Run(ctx, mgr) })); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("service-nat", func(*http.Request) error { return sp.Synced() }); err != nil {
			return err
		}
	}
	if np := a.o.NetworkPolicy; np != nil {
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error { return np.Run(ctx, mgr) })); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("network-policy", func(*http.Request) error { return np.Synced() }); err != nil {
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

// loop reconciles on every wake-up (watches, netlink drift, probes), every
// Resync and after a failure, with the runner's pacing: a reconcile is
// followed by a rest as long as it took, so reconciles hold at most half a
// core however fast events come. A small mesh reconciles in a few
// milliseconds and never notices; with a thousand peers a reconcile takes
// about 0.1 s, and a burst of joins (a cluster's nodes coming up) would
// otherwise keep a core busy on every node, starving the API server and the
// operator that publish the joins. A failure is retried after a back-off
// (1 s doubling to 30 s) while wake-ups still reconcile at once; a refusal
// to run (errRefuseToRun) ends the agent.
func (a *Agent) loop(ctx context.Context) error {
	// The first reconcile waits for both informers: without the list of
	// Nodes it cannot tell node peers from external ones, and failing on
	// that would only grow the retry back-off before the real work. (Not
	// for the service NAT's: the mesh does not wait for the Services.)
	if !toolscache.WaitForCacheSync(ctx.Done(), a.synced...) {
		return errors.New("cache did not sync")
	}
	if a.nodes != nil && !a.nodes.WaitForSync(ctx) {
		return nil
	}
	if err := routes.Watch(ctx, routes.WatchOptions{
		Links:   []string{a.o.LinkName, a.o.BridgeName},
		OnError: func(err error) { a.log.V(1).Info("netlink subscription", "error", err.Error()) },
	}, func() { a.run.Wake("netlink") }); err != nil {
		a.log.Error(err, "netlink subscription failed; drift is repaired by the periodic resync only", "resync", a.o.Resync)
	}
	a.run.Wake("start")
	return a.run.Run(ctx, func(ctx context.Context, c runner.Cause) error {
		a.metrics.Reconciles.WithLabelValues(c.Reason).Inc()
		return a.reconcile(ctx)
	})
}

// Reconcile triggers (the label of wgmesh_reconciles_total), most specific
// first: a reconcile woken for several reasons counts under the first;
// resync (runner.ReasonPeriod) when only the period woke it.
var triggerReasons = []string{"watch", "netlink", "probe", runner.ReasonRetry, "start", "other", runner.ReasonPeriod}

// cleanup removes wgmesh from the node, the one way for an uninstall and for
// --cleanup-on-exit: the service NAT, then every NodeDataplane in the reverse
// of the order they were applied (the CNI conflist and the plugins the agent
// installed, egress, and last the leak guard, whose cleanup deletes nftables
// table wgmesh with every part in it, the network policy's too), the routes, the bridge and the
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
