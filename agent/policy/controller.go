package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"

	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/agent/runner"
	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/nft"
)

// Defaults.
const (
	// DefaultSyncPeriod is how often the kernel is checked against the
	// desired table (cheap while the ruleset generation has not moved) and
	// the drop counters are read.
	DefaultSyncPeriod = 10 * time.Second
	// DefaultMinInterval bounds the sync frequency: events within it of a
	// sync's start are programmed together by the next one.
	DefaultMinInterval = 100 * time.Millisecond
	// fullCheckEvery forces a read-back comparison every so many periods
	// even when the generation did not move (10 minutes at the default).
	fullCheckEvery = 60
	// EventSource is the component name on Events (their reporting
	// controller).
	EventSource = "wgmesh-network-policy"
	// ActionProgram is the action of the Events.
	ActionProgram = "ProgramNetworkPolicy"
)

// Reasons of the Events.
const (
	// ReasonInvalid: a NetworkPolicy field the model cannot use, on the
	// NetworkPolicy (what fails closed instead).
	ReasonInvalid = "InvalidNetworkPolicy"
	// ReasonFailed: the policy could not be written to the kernel, on the
	// Node.
	ReasonFailed = "NetworkPolicyFailed"
	// ReasonBridgeNetfilterMissing: without br_netfilter, traffic between
	// pods of this node bypasses the policy, on the Node.
	ReasonBridgeNetfilterMissing = "BridgeNetfilterMissing"
)

// Options configure a Controller.
type Options struct {
	NodeName string
	// NFT writes the network policy's part of table wgmesh; nil: the kernel
	// of NetNSFd (an nft.Kernel). Unit tests pass an nft.Fake's.
	NFT nft.Programmer
	// NetNSFd selects the network namespace (tests); 0 = the current one.
	NetNSFd int
	// SyncPeriod: DefaultSyncPeriod when 0. MinInterval: DefaultMinInterval
	// when 0.
	SyncPeriod, MinInterval time.Duration
	// BridgeNetfilter is br_netfilter's state (agent/egress's last
	// outcome: nil before its first check). Without br_netfilter the rules
	// are written but pods of this node reach each other around them, and
	// the controller says so (not ready). nil: assumed on (tests).
	BridgeNetfilter func() *egress.BridgeNFStatus
	// Socket is the unix socket the CNI plugin asks on (server.go;
	// --network-policy-socket); empty: none.
	Socket     string
	Log        logr.Logger
	Registerer prometheus.Registerer
}

// Controller enforces NetworkPolicy on one node: it keeps a netpol.Index
// of the cluster's Pods, Namespaces, NetworkPolicies and Nodes from the
// agent's informer cache, renders the node's share of table wgmesh (Render)
// and writes what changed.
//
// Writes are incremental: the changes from the last desired table to the
// new one (nft.Diff of its digest), so a pod coming or going writes set and
// map elements. The kernel is read back and compared (drift repair) on the
// first sync, after a failure, when the ruleset generation moved without
// our writing, and every fullCheckEvery periods. Events within MinInterval
// of a sync's start are programmed together.
//
// Invalid policy fields are reported once per agent process as a Warning
// Event on the NetworkPolicy (ReasonInvalid): every agent reports, each
// under its own reporting instance, since none knows which other agents
// run (choosing one, say the first ready node by name, would need every
// Node's conditions in the cache, where heartbeats would churn it).
type Controller struct {
	o       Options
	k       nft.Programmer
	metrics *Metrics
	run     *runner.Runner

	// Guarded by mu: the index and what the handlers tell the sync loop.
	mu    sync.Mutex
	ix    *netpol.Index
	dirty bool
	all   bool
	// since is when the oldest change not yet programmed arrived.
	since time.Time
	// local are the keys of this node's pods; policies the NetworkPolicies'
	// UIDs by key.
	local    map[string]bool
	policies map[string]types.UID
	// podCIDRs are this node's (its Node's spec.podCIDRs).
	podCIDRs []netip.Prefix
	// cni are the local pods' CNI records (server.go), owner the pod
	// (key) a CNI ADD last gave each address; judged counts the CNI
	// requests that changed the index.
	cni    map[string]cniRecord
	owner  map[netip.Addr]string
	judged uint64
	// deleted are the UIDs of pods whose deletion the watch brought, with
	// when: a CNI request that read such a pod just before (from the API
	// server) must not put it back (server.go). Kept deletedTTL.
	deleted map[types.UID]time.Time
	// invalid are the problems of policies set since the last sync;
	// reported the problems already reported, by policy key (with its UID).
	invalid  []invalidPolicy
	reported map[string]map[string]bool

	// Owned by the sync loop.
	last      map[nft.Family]*nft.Ruleset
	lastGen   uint32
	periods   int
	counts    map[counterKey]uint64
	events    recorder.EventRecorder
	nodes     corelisters.NodeLister
	pods      corelisters.PodLister
	apiReader client.Reader
	// started is closed once the caches have synced.
	started   chan struct{}
	brnfShown string // the br_netfilter problem last reported
	recheck   bool   // a wake-up to check br_netfilter again is pending

	stateMu sync.Mutex
	// doneJudged: the CNI requests whose pods are in the kernel; syncedCh
	// is closed (and replaced) when it moves.
	doneJudged uint64
	syncedCh   chan struct{}
	synced     bool
	lastErr    error
	brnfErr    error
	socketErr  error
}

type invalidPolicy struct {
	namespace, name string
	uid             types.UID
	problems        []string
}

type counterKey struct {
	f     nft.Family
	chain string
}

// New returns a Controller.
func New(o Options) *Controller {
	if o.SyncPeriod == 0 {
		o.SyncPeriod = DefaultSyncPeriod
	}
	if o.MinInterval == 0 {
		o.MinInterval = DefaultMinInterval
	}
	if o.NFT == nil {
		o.NFT = &nft.Kernel{Part: Part, NetNSFd: o.NetNSFd}
	}
	return &Controller{
		o: o, k: o.NFT, metrics: NewMetrics(o.Registerer),
		run: runner.New(runner.Options{Period: o.SyncPeriod, MinInterval: o.MinInterval, HoldOnFailure: true,
			OnFailure: func(err error, after time.Duration) {
				o.Log.Error(err, "network policy sync failed; retrying", "after", after)
			}}),
		ix: netpol.NewIndex(), local: map[string]bool{}, policies: map[string]types.UID{}, reported: map[string]map[string]bool{},
		counts: map[counterKey]uint64{}, cni: map[string]cniRecord{}, owner: map[netip.Addr]string{}, deleted: map[types.UID]time.Time{},
		started: make(chan struct{}), syncedCh: make(chan struct{}),
	}
}

// Synced is nil once the policy is in the kernel as desired and enforced
// for every pod of the node (readiness), else why not.
func (c *Controller) Synced() error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	switch {
	case !c.synced:
		return errors.New("network policy: first sync not done")
	case c.lastErr != nil:
		return c.lastErr
	case c.socketErr != nil:
		return c.socketErr
	}
	return c.brnfErr
}

// setSocketErr records that the CNI plugin's requests are not served (nil:
// they are): new pods then wait, denied, for the Pod watch, and the agent
// is not ready.
func (c *Controller) setSocketErr(err error) {
	c.stateMu.Lock()
	c.socketErr = err
	c.stateMu.Unlock()
	c.setReady()
}

// Delete removes the network policy from the kernel (when --network-policy
// is turned off; an uninstall deletes the whole table).
func (c *Controller) Delete() error {
	var errs []error
	for _, f := range nft.Families {
		errs = append(errs, c.k.Delete(f))
	}
	return errors.Join(errs...)
}

// Run programs the kernel until ctx ends, from the Pods, Namespaces,
// NetworkPolicies and Nodes of the agent's one informer cache (Pods trimmed
// by agent/kube to what the policy reads); it reports through the
// runtime's Event writer. The rules stay in place when it returns.
func (c *Controller) Run(ctx context.Context, rt *kube.Runtime) error {
	c.events = rt.Events.For(EventSource)
	c.apiReader = rt.GetAPIReader()
	// The kernel connection kept between writes goes with the run (a
	// later Delete dials again).
	if cl, ok := c.k.(io.Closer); ok {
		defer cl.Close()
	}
	var synced []cache.InformerSynced
	for _, w := range []struct {
		obj     client.Object
		handler cache.ResourceEventHandlerFuncs
	}{
		{&corev1.Pod{}, cache.ResourceEventHandlerFuncs{AddFunc: c.onPod, UpdateFunc: func(_, n any) { c.onPod(n) }, DeleteFunc: c.onPodDelete}},
		{&corev1.Namespace{}, cache.ResourceEventHandlerFuncs{AddFunc: c.onNamespace, UpdateFunc: func(_, n any) { c.onNamespace(n) }, DeleteFunc: c.onNamespaceDelete}},
		{&networkingv1.NetworkPolicy{}, cache.ResourceEventHandlerFuncs{AddFunc: c.onPolicy, UpdateFunc: c.onPolicyUpdate, DeleteFunc: c.onPolicyDelete}},
		{&corev1.Node{}, cache.ResourceEventHandlerFuncs{AddFunc: c.onNode, UpdateFunc: func(_, n any) { c.onNode(n) }, DeleteFunc: c.onNodeDelete}},
	} {
		inf, err := rt.Informer(ctx, w.obj)
		if err != nil {
			return fmt.Errorf("network policy: %w", err)
		}
		switch w.obj.(type) {
		case *corev1.Node:
			c.nodes = corelisters.NewNodeLister(inf.GetIndexer())
		case *corev1.Pod:
			c.pods = corelisters.NewPodLister(inf.GetIndexer())
		}
		reg, err := inf.AddEventHandler(w.handler)
		if err != nil {
			return fmt.Errorf("network policy: %w", err)
		}
		defer func() { _ = inf.RemoveEventHandler(reg) }()
		synced = append(synced, reg.HasSynced)
	}
	// The CNI plugin may ask from now on; requests wait for the caches. A
	// socket that cannot be made leaves new pods denied until the Pod
	// watch programs them: logged, not fatal.
	if c.o.Socket != "" {
		if l, err := c.listen(c.o.Socket); err != nil {
			c.o.Log.Error(err, "the CNI plugin's requests are not served: new pods stay denied until the Pod watch programs them")
			c.setSocketErr(fmt.Errorf("network policy: the CNI hook is not served: %w", err))
		} else {
			go c.serve(ctx, l)
		}
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	close(c.started)
	c.o.Log.Info("network policy started", "node", c.o.NodeName, "syncPeriod", c.o.SyncPeriod, "minInterval", c.o.MinInterval)
	// The caches' first lists are the start, not changes to time.
	c.mu.Lock()
	c.since = time.Time{}
	c.mu.Unlock()
	c.markAll()
	return c.loop(ctx)
}

// loop syncs on every wake-up and period until ctx ends.
func (c *Controller) loop(ctx context.Context) error {
	return c.run.Run(ctx, func(_ context.Context, cause runner.Cause) error {
		err := c.sync(cause.Periodic)
		c.stateMu.Lock()
		c.lastErr = err
		c.stateMu.Unlock()
		c.setReady()
		if err != nil {
			c.markAll()
			c.nodeEvent(corev1.EventTypeWarning, ReasonFailed, "node %s: NetworkPolicy not programmed: %v", c.o.NodeName, err)
		}
		return err
	})
}

// markAll makes the next sync render and compare with the kernel read back.
func (c *Controller) markAll() {
	c.mu.Lock()
	c.dirty, c.all = true, true
	c.mu.Unlock()
	c.run.Wake("all")
}

// sync programs the kernel: the changes since the last desired table when
// only events happened, the difference with the kernel read back on the
// first run, after a failure and when the periodic check finds the
// generation moved (or every fullCheckEvery periods).
func (c *Controller) sync(periodic bool) error {
	c.checkBridgeNetfilter()
	c.mu.Lock()
	judged := c.judged
	dirty, all, since := c.dirty, c.all, c.since
	c.dirty, c.all, c.since = false, false, time.Time{}
	invalid := c.invalid
	c.invalid = nil
	want := c.last
	if dirty || want == nil {
		want = map[nft.Family]*nft.Ruleset{}
		for _, f := range nft.Families {
			want[f] = Render(c.ix, Node{Name: c.o.NodeName, PodCIDRs: c.podCIDRs}, f)
		}
		c.setGauges()
	}
	c.mu.Unlock()
	c.reportInvalid(invalid)
	// A failed sync's events wait for the next one.
	restore := func() {
		c.mu.Lock()
		if !since.IsZero() && (c.since.IsZero() || since.Before(c.since)) {
			c.since = since
		}
		c.mu.Unlock()
	}

	if c.last == nil {
		all = true
	}
	if periodic && !all {
		c.periods++
		gen, err := c.k.Generation()
		if err != nil || gen != c.lastGen || c.periods%fullCheckEvery == 0 {
			all = true
		}
	}
	if periodic {
		defer c.readCounters()
	}
	if !all && !dirty {
		if c.k.HasStale() {
			if err := c.k.FlushStale(); err != nil {
				c.metrics.SyncErrors.WithLabelValues("kernel").Inc()
				return err
			}
			c.recordGeneration() // our own write: not drift
		}
		return nil
	}

	start := time.Now()
	kind := "partial"
	if all {
		kind = "full"
	}
	writes := 0
	if c.last == nil {
		c.last = map[nft.Family]*nft.Ruleset{}
	}
	for _, f := range nft.Families {
		var ch *nft.Changes
		if all || c.last[f] == nil {
			if err := c.k.EnsureSkeleton(f); err != nil {
				c.metrics.SyncErrors.WithLabelValues("kernel").Inc()
				restore()
				return fmt.Errorf("table %s %s: %w", f, nft.Table, err)
			}
			cur, err := c.k.Read(f)
			if err != nil {
				c.metrics.SyncErrors.WithLabelValues("read").Inc()
				restore()
				return fmt.Errorf("table %s %s: %w", f, nft.Table, err)
			}
			ch = nft.Diff(cur, want[f])
			if periodic && !ch.Empty() {
				c.o.Log.Info("network policy drift repaired", "family", f.String(), "objects", ch.Size(want[f]))
			}
		} else {
			ch = nft.Diff(nft.DigestOf(c.last[f]), want[f])
		}
		if !ch.Empty() {
			if _, err := c.k.Apply(f, ch, want[f]); err != nil {
				c.metrics.SyncErrors.WithLabelValues("kernel").Inc()
				restore()
				return fmt.Errorf("table %s %s: %w", f, nft.Table, err)
			}
			writes += ch.Size(want[f])
		}
		c.last[f] = want[f]
	}
	if c.k.HasStale() {
		// Chains and sets this write left unreferenced go in a second
		// commit shortly after, or with the next change.
		time.AfterFunc(time.Second, func() { c.run.Wake("stale") })
	}
	c.recordGeneration()
	c.metrics.Writes.WithLabelValues(kind).Add(float64(writes))
	c.metrics.SyncDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	if !since.IsZero() {
		c.metrics.ProgrammingDuration.Observe(time.Since(since).Seconds())
	}
	if writes > 0 || all {
		c.o.Log.V(1).Info("network policy synced", "kind", kind, "writes", writes, "duration", time.Since(start))
	}
	c.stateMu.Lock()
	c.synced = true
	c.stateMu.Unlock()
	c.programmed(judged)
	return nil
}

// programmed records that the pods of the first judged CNI requests are in
// the kernel, waking their waiters.
func (c *Controller) programmed(judged uint64) {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if judged > c.doneJudged {
		c.doneJudged = judged
		close(c.syncedCh)
		c.syncedCh = make(chan struct{})
	}
}

// recordGeneration remembers the ruleset generation after our own write,
// so that the periodic check reads the kernel back only when someone else
// changed it.
func (c *Controller) recordGeneration() {
	if gen, err := c.k.Generation(); err == nil {
		c.lastGen = gen
	}
}
