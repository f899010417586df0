package servicenat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/kube"
	"github.com/wgmesh/wgmesh/agent/runner"
	"github.com/wgmesh/wgmesh/nft"
	"github.com/wgmesh/wgmesh/podnet"
)

// Defaults.
const (
	// DefaultSyncPeriod is how often the kernel is compared with the
	// desired table (cheap when the ruleset generation has not moved).
	DefaultSyncPeriod = 30 * time.Second
	// fullCheckEvery forces a real comparison every so many periods even
	// when the generation did not move (hourly at the default period, as
	// kube-proxy's full resync): at 10,000 Services reading the table back
	// takes seconds, during which changes wait.
	fullCheckEvery = 120
	// EventSource is the component name on Events (their reporting
	// controller).
	EventSource = "wgmesh-service-nat"
	// ActionProgramService is the action of the Events about a Service.
	ActionProgramService = "ProgramService"
)

// Options configure a Proxy.
type Options struct {
	NodeName     string
	ClusterCIDRs []netip.Prefix
	ServiceCIDRs []netip.Prefix
	// NodePortAddresses are the ranges whose local addresses serve
	// NodePorts; empty: the node's InternalIP addresses.
	NodePortAddresses []netip.Prefix
	// TunnelIf is the WireGuard link (default wgmesh0).
	TunnelIf   string
	SyncPeriod time.Duration
	// NetNSFd selects the network namespace (tests); 0 = the current one.
	NetNSFd int
	// NFT writes the service NAT's part of table wgmesh; nil: the kernel
	// of NetNSFd (an nft.Kernel). Unit tests pass an nft.Fake's.
	NFT nft.Programmer
	// HealthCheck serves HealthCheckNodePorts; nil: a HealthServer on
	// all addresses.
	HealthCheck *HealthServer
	// StandAside (--service-proxy=auto): program nothing while kube-proxy
	// programs this node (aside.go).
	StandAside bool
	// KubeProxyHealthz is where kube-proxy's /healthz is looked for
	// (KubeProxyHealthzAddr); empty: its rules only.
	KubeProxyHealthz string
	Log              logr.Logger
	Registerer       prometheus.Registerer
}

// Proxy is the node's service NAT: it watches Services and EndpointSlices
// and keeps table wgmesh's service part equal to their rendering.
type Proxy struct {
	o       Options
	k       nft.Programmer
	metrics *Metrics
	events  events.EventRecorder
	ct      *Conntrack

	svcLister   corelisters.ServiceLister
	sliceLister discoverylisters.EndpointSliceLister
	sliceIndex  cache.Indexer // with sliceServiceIndex
	nodeLister  corelisters.NodeLister

	mu      sync.Mutex
	dirty   map[ServiceKey]bool
	trigger map[ServiceKey]time.Time // earliest endpoint change trigger time
	all     bool
	run     *runner.Runner

	// State of what is in the kernel (owned by the sync loop).
	table    *Table
	models   map[ServiceKey]Service
	reported map[string]bool
	// conflicts is the contest each Service was last told of.
	conflicts map[ServiceKey]string
	// externals are the Services with externalIPs or load-balancer IPs:
	// the ones to re-check when the reserved addresses change.
	externals     map[ServiceKey]bool
	apiServer     []netip.Addr // from the rest config: reserved from the first sync on
	reserved      Reserved     // what the last sync checked against
	extraReserved Reserved     // from SetReserved, under mu
	lastGen       uint32
	periods       int
	kpWarned      bool
	kpChecked     bool
	aside         bool // standing aside for kube-proxy (aside.go)
	// apiReader reads the node's MeshPeer from the API server; status
	// writes its KubeProxyConflict condition (the runtime's).
	apiReader client.Reader
	status    *kube.StatusWriter
	synced    bool
	syncedMu  sync.Mutex
	lastError error
}

// New returns a Proxy.
func New(o Options) *Proxy {
	if o.SyncPeriod == 0 {
		o.SyncPeriod = DefaultSyncPeriod
	}
	if o.TunnelIf == "" {
		o.TunnelIf = "wgmesh0"
	}
	if o.HealthCheck == nil {
		o.HealthCheck = NewHealthServer(nil, o.Log)
	}
	if o.NFT == nil {
		o.NFT = &nft.Kernel{Part: Part, NetNSFd: o.NetNSFd}
	}
	return &Proxy{
		o: o, k: o.NFT, metrics: NewMetrics(o.Registerer), ct: &Conntrack{NetNSFd: o.NetNSFd},
		dirty: map[ServiceKey]bool{}, trigger: map[ServiceKey]time.Time{},
		run: runner.New(runner.Options{Period: o.SyncPeriod, HoldOnFailure: true, OnFailure: func(err error, after time.Duration) {
			o.Log.Error(err, "service NAT sync failed; retrying", "after", after)
		}}),
		models: map[ServiceKey]Service{}, reported: map[string]bool{},
		conflicts: map[ServiceKey]string{}, externals: map[ServiceKey]bool{},
	}
}

// Synced reports whether the first full sync is done (readiness).
func (p *Proxy) Synced() error {
	p.syncedMu.Lock()
	defer p.syncedMu.Unlock()
	if !p.synced {
		return errors.New("service NAT: first sync not done")
	}
	return p.lastError
}

func (p *Proxy) markDirty(k ServiceKey, trigger time.Time) {
	p.mu.Lock()
	p.dirty[k] = true
	if !trigger.IsZero() {
		if t, ok := p.trigger[k]; !ok || trigger.Before(t) {
			p.trigger[k] = trigger
		}
	}
	p.mu.Unlock()
	p.fire()
}

func (p *Proxy) markAll() {
	p.mu.Lock()
	p.all = true
	p.mu.Unlock()
	p.fire()
}

func (p *Proxy) fire() { p.run.Wake("change") }

// CacheOptions are the service NAT's settings of the agent's informer cache
// (agent/kube): only the EndpointSlices it programs, those of a Service
// (kubernetes.io/service-name) that is not headless; no periodic resync of
// Services and EndpointSlices (each would mark every Service dirty: the
// periodic check of the kernel and its hourly full comparison repair what
// an event missed). Services are cached whole but for managedFields; Nodes
// as the runtime keeps them (this node's whole, the others' names,
// addresses and pod CIDRs).
func CacheOptions() map[client.Object]crcache.ByObject {
	sliceReq, _ := labels.NewRequirement(discoveryv1.LabelServiceName, selection.Exists, nil)
	headless, _ := labels.NewRequirement(LabelHeadless, selection.DoesNotExist, nil)
	noResync := ptr.To(time.Duration(0))
	return map[client.Object]crcache.ByObject{
		&corev1.Service{}:            {SyncPeriod: noResync},
		&discoveryv1.EndpointSlice{}: {Label: labels.NewSelector().Add(*sliceReq, *headless), SyncPeriod: noResync},
	}
}

// Run programs the kernel until ctx ends, from the Services, EndpointSlices
// and Nodes of the agent's one informer cache (rt, built with
// CacheOptions); it reports through the runtime's Event and status
// writers. The service rules stay in place when it returns.
func (p *Proxy) Run(ctx context.Context, rt *kube.Runtime) error {
	p.apiReader, p.status, p.apiServer = rt.GetAPIReader(), rt.Status, rt.APIServer
	p.events = rt.Events.For(EventSource)
	// The kernel connection kept between writes goes with the run (a
	// later Delete dials again).
	if cl, ok := p.k.(io.Closer); ok {
		defer cl.Close()
	}

	onSvc := func(obj any) {
		if s, ok := unwrap[*corev1.Service](obj); ok {
			p.markDirty(ServiceKey{s.Namespace, s.Name}, time.Time{})
		}
	}
	onSlice := func(obj any) {
		if s, ok := unwrap[*discoveryv1.EndpointSlice](obj); ok {
			var trig time.Time
			if v, ok := s.Annotations[corev1.EndpointsLastChangeTriggerTime]; ok {
				trig, _ = time.Parse(time.RFC3339Nano, v)
			}
			p.markDirty(ServiceKey{s.Namespace, s.Labels[discoveryv1.LabelServiceName]}, trig)
		}
	}
	// Every Node: its own gives the NodePort addresses and the SNAT source,
	// all of them are reserved addresses no Service may take as an external
	// address. A Node change matters only when it changes those (addresses,
	// podCIDRs), which every sync recomputes: not a heartbeat.
	onNode := func(o, n any) {
		on, ok1 := o.(*corev1.Node)
		nn, ok2 := n.(*corev1.Node)
		if !ok1 || !ok2 || on.Spec.PodCIDR != nn.Spec.PodCIDR || !reflect.DeepEqual(on.Spec.PodCIDRs, nn.Spec.PodCIDRs) ||
			!reflect.DeepEqual(on.Status.Addresses, nn.Status.Addresses) {
			p.fire()
		}
	}
	var synced []cache.InformerSynced
	for _, w := range []struct {
		obj     client.Object
		lister  func(cache.Indexer)
		handler cache.ResourceEventHandlerFuncs
	}{
		{&corev1.Service{}, func(i cache.Indexer) { p.svcLister = corelisters.NewServiceLister(i) },
			cache.ResourceEventHandlerFuncs{AddFunc: onSvc, UpdateFunc: func(_, n any) { onSvc(n) }, DeleteFunc: onSvc}},
		{&discoveryv1.EndpointSlice{}, func(i cache.Indexer) { p.sliceLister, p.sliceIndex = discoverylisters.NewEndpointSliceLister(i), i },
			cache.ResourceEventHandlerFuncs{AddFunc: onSlice, UpdateFunc: func(_, n any) { onSlice(n) }, DeleteFunc: onSlice}},
		{&corev1.Node{}, func(i cache.Indexer) { p.nodeLister = corelisters.NewNodeLister(i) },
			cache.ResourceEventHandlerFuncs{AddFunc: func(any) { p.fire() }, UpdateFunc: onNode, DeleteFunc: func(any) { p.fire() }}},
	} {
		inf, err := rt.Informer(ctx, w.obj)
		if err != nil {
			return fmt.Errorf("service NAT: %w", err)
		}
		w.lister(inf.GetIndexer())
		reg, err := inf.AddEventHandler(w.handler)
		if err != nil {
			return fmt.Errorf("service NAT: %w", err)
		}
		defer func() { _ = inf.RemoveEventHandler(reg) }()
		synced = append(synced, reg.HasSynced)
	}
	if err := addSliceIndex(p.sliceIndex); err != nil {
		return fmt.Errorf("service NAT: %w", err)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return ctx.Err()
	}
	p.o.Log.Info("service NAT started", "node", p.o.NodeName, "clusterCIDRs", p.o.ClusterCIDRs, "serviceCIDRs", p.o.ServiceCIDRs,
		"nodePortAddresses", p.o.NodePortAddresses, "syncPeriod", p.o.SyncPeriod)
	go p.o.HealthCheck.Run(ctx)
	return p.loop(ctx)
}

// loop syncs on every change, every SyncPeriod (the periodic check of the
// kernel) and after a failure: nothing runs during a failure's back-off (1 s
// doubling to 30 s), then everything is synced again.
func (p *Proxy) loop(ctx context.Context) error {
	p.markAll()
	return p.run.Run(ctx, func(_ context.Context, c runner.Cause) error {
		err := p.sync(c.Periodic)
		p.syncedMu.Lock()
		p.lastError = err
		p.syncedMu.Unlock()
		if err != nil {
			p.markAll()
		}
		return err
	})
}

// sync programs what changed: everything on the first run, after an
// error, on a node change and when the periodic check finds the kernel
// moved; otherwise only the dirty Services.
func (p *Proxy) sync(periodic bool) error {
	if p.standAside(periodic) {
		return nil
	}
	p.mu.Lock()
	dirty, triggers, all := p.dirty, p.trigger, p.all
	p.dirty, p.trigger, p.all = map[ServiceKey]bool{}, map[ServiceKey]time.Time{}, false
	p.mu.Unlock()

	globals, err := p.computeGlobals()
	if err != nil {
		p.metrics.SyncErrors.WithLabelValues("node").Inc()
		return err
	}
	if p.table == nil || !sameGlobals(globals, p.table.Input()) {
		all = true
		p.table = NewTable(globals)
		for k := range p.models {
			dirty[k] = true
		}
	}
	if r := p.computeReserved(); !r.Equal(p.reserved) {
		p.reserved = r
		p.metrics.ReservedAddresses.Set(float64(r.Len()))
		for k := range p.externals {
			dirty[k] = true
		}
	}
	if periodic && !all {
		p.periods++
		gen, err := p.k.Generation()
		if err != nil || gen != p.lastGen || p.periods%fullCheckEvery == 0 {
			all = true
		}
	}
	if all && !p.o.StandAside {
		p.detectKubeProxy()
	}
	if !all && len(dirty) == 0 {
		if p.k.HasStale() {
			if err := p.k.FlushStale(); err != nil {
				return err
			}
			// Our own write moved the generation: not drift.
			p.recordGeneration()
		}
		return nil
	}
	start := time.Now()
	kind := "partial"
	if all {
		kind = "full"
		// Written whole (Full): the table need not keep each change.
		p.table.Bulk()
		// Every Service, in case an event was missed.
		svcs, _ := p.svcLister.List(labels.Everything())
		for _, s := range svcs {
			dirty[ServiceKey{s.Namespace, s.Name}] = true
		}
	}
	oldModels := map[ServiceKey]Service{}
	for k := range dirty {
		oldModels[k] = p.models[k]
		p.update(k)
	}
	p.reportConflicts(p.table.Changed())
	writes := 0
	for _, f := range nft.Families {
		var ch *nft.Changes
		var want *nft.Ruleset
		if all {
			if err := p.k.EnsureSkeleton(f); err != nil {
				p.metrics.SyncErrors.WithLabelValues("kernel").Inc()
				return err
			}
			cur, err := p.k.Read(f)
			if err != nil {
				p.metrics.SyncErrors.WithLabelValues("read").Inc()
				return err
			}
			want = p.table.Full(f)
			ch = nft.Diff(cur, want)
			if periodic && !ch.Empty() {
				p.o.Log.Info("service NAT drift repaired", "family", f.String(), "objects", ch.Size(want))
			}
		} else {
			var before *nft.Ruleset
			before, want = p.table.Changes(f)
			ch = nft.Diff(nft.DigestOf(before), want)
		}
		writes += ch.Size(want)
		if _, err := p.k.Apply(f, ch, want); err != nil {
			p.metrics.SyncErrors.WithLabelValues("kernel").Inc()
			return err
		}
	}
	p.table.Commit()
	if p.k.HasStale() {
		// Chains this write left unreferenced go in a second commit
		// shortly after, or with the next change, whichever comes first.
		time.AfterFunc(time.Second, p.fire)
	}
	p.recordGeneration()
	p.metrics.Writes.WithLabelValues(kind).Add(float64(writes))
	p.metrics.SyncDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	now := time.Now()
	for _, t := range triggers {
		p.metrics.NetworkProgrammingDuration.Observe(now.Sub(t).Seconds())
	}
	// Stale UDP flows, now that the rules no longer lead to them.
	for k := range dirty {
		n, err := p.ct.CleanStale(oldModels[k], p.models[k], globals.NodePortIPs)
		if err != nil {
			p.metrics.SyncErrors.WithLabelValues("conntrack").Inc()
			p.o.Log.Error(err, "removing stale UDP conntrack entries", "service", k.String())
		}
		p.metrics.ConntrackDeleted.Add(float64(n))
	}
	p.o.HealthCheck.Set(healthTargets(p.models))
	p.setGauges()
	if writes > 0 || all {
		p.o.Log.V(1).Info("service NAT synced", "kind", kind, "services", len(dirty), "writes", writes, "duration", time.Since(start))
	}
	p.syncedMu.Lock()
	p.synced = true
	p.syncedMu.Unlock()
	return nil
}

// recordGeneration remembers the ruleset generation after our own write,
// so that the periodic check reads the kernel back only when someone else
// changed it.
func (p *Proxy) recordGeneration() {
	if gen, err := p.k.Generation(); err == nil {
		p.lastGen = gen
	}
}

// update re-renders one Service from the listers into the table.
func (p *Proxy) update(k ServiceKey) {
	svc, err := p.svcLister.Services(k.Namespace).Get(k.Name)
	if err != nil || !Proxied(svc) {
		p.table.Delete(k)
		delete(p.models, k)
		return
	}
	model, probs := Convert(svc, p.slicesOf(k), ConvertOptions{NodeName: p.o.NodeName, ServiceCIDRs: p.o.ServiceCIDRs, Reserved: p.reserved})
	p.table.Update(model)
	if hasExternalAddrs(svc) {
		p.externals[k] = true
	} else {
		delete(p.externals, k)
	}
	p.report(svc, probs)
	p.models[k] = model
}

// sliceServiceIndex indexes the EndpointSlices by namespace/Service name,
// so that a Service's slices are found without matching every slice of its
// namespace against a selector (quadratic: a full sync of 10,000 Services
// in one namespace matched 10^8 slices).
const sliceServiceIndex = "wgmesh-service-nat-service"

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
}

// addSliceIndex adds sliceServiceIndex to the EndpointSlice informer's
// indexer, once per process (the informer outlives a Run).
func addSliceIndex(i cache.Indexer) error {
	if _, ok := i.GetIndexers()[sliceServiceIndex]; ok {
		return nil
	}
	return i.AddIndexers(cache.Indexers{sliceServiceIndex: sliceService})
}

// slicesOf are the EndpointSlices of Service k.
func (p *Proxy) slicesOf(k ServiceKey) []*discoveryv1.EndpointSlice {
	objs, err := p.sliceIndex.ByIndex(sliceServiceIndex, k.String())
	if err != nil {
		return nil
	}
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if s, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, s)
		}
	}
	return out
}

func hasExternalAddrs(svc *corev1.Service) bool {
	return len(svc.Spec.ExternalIPs) > 0 || len(svc.Status.LoadBalancer.Ingress) > 0
}

// Reasons of the Events about contested addresses.
const (
	ReasonAddressConflict         = "ServiceAddressConflict"
	ReasonAddressConflictResolved = "ServiceAddressConflictResolved"
)

// reportConflicts tells both sides of every contested address and port
// among the Services ks (a Warning Event on each, naming the owner and the
// rule that made it the owner), and tells a Service when its contest ends.
func (p *Proxy) reportConflicts(ks []ServiceKey) {
	for _, k := range ks {
		cs := p.table.Conflicts(k)
		text := make([]string, len(cs))
		for i, c := range cs {
			text[i] = c.String()
		}
		now, before := strings.Join(text, "; "), p.conflicts[k]
		if now == before {
			continue
		}
		if now == "" {
			delete(p.conflicts, k)
		} else {
			p.conflicts[k] = now
		}
		p.metrics.AddressConflicts.Set(float64(len(p.conflicts)))
		svc, err := p.svcLister.Services(k.Namespace).Get(k.Name)
		if err != nil {
			continue // deleted: its contest ended with it, the others hear of it
		}
		if now == "" {
			p.o.Log.Info("service address conflict ended", "service", k.String(), "was", before)
			if p.events != nil {
				p.events.Eventf(svc, nil, corev1.EventTypeNormal, ReasonAddressConflictResolved, ActionProgramService, "node %s: no other Service claims the addresses and ports of %s any more", p.o.NodeName, k)
			}
			continue
		}
		for _, c := range cs {
			p.o.Log.Info("service address conflict", "service", k.String(), "map", c.Map, "key", c.Key.String(), "owner", c.Owner.String(), "byClusterIP", c.OwnerByClusterIP)
			if p.events != nil {
				verdict := "kept by this Service"
				if c.Owner != k {
					verdict = "not programmed for this Service"
				}
				p.events.Eventf(svc, nil, corev1.EventTypeWarning, ReasonAddressConflict, ActionProgramService, "node %s: %s (%s)", p.o.NodeName, c, verdict)
			}
		}
	}
}

// SetReserved gives the addresses only the agent knows that no externalIP or
// load-balancer IP may take (the API server's, the WireGuard endpoints in
// use, MeshPeers' endpoints and allowedIPs); the proxy adds the service and
// cluster CIDRs and the Nodes' addresses. A change re-checks every Service
// with an external address.
func (p *Proxy) SetReserved(r Reserved) {
	p.mu.Lock()
	same := p.extraReserved.Equal(r)
	p.extraReserved = r
	p.mu.Unlock()
	if !same {
		p.fire()
	}
}

// computeReserved is every reserved address: the agent's (SetReserved), the
// cluster CIDRs (pod addresses) and every Node's addresses and pod CIDRs.
// The service CIDRs are added by Convert.
func (p *Proxy) computeReserved() Reserved {
	p.mu.Lock()
	var r Reserved
	r.Merge(p.extraReserved)
	p.mu.Unlock()
	for _, a := range p.apiServer {
		r.AddAddr(a, "the API server's address")
	}
	// The API server as pods reach it: the endpoints of default/kubernetes.
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: "kubernetes"})
	if p.sliceLister != nil {
		slices, _ := p.sliceLister.EndpointSlices(metav1.NamespaceDefault).List(sel)
		for _, sl := range slices {
			for _, e := range sl.Endpoints {
				for _, s := range e.Addresses {
					if a, err := netip.ParseAddr(s); err == nil {
						r.AddAddr(a, "the API server's address (an endpoint of Service default/kubernetes)")
					}
				}
			}
		}
	}
	for _, c := range p.o.ClusterCIDRs {
		r.AddPrefix(c, "a pod address (cluster CIDR "+c.Masked().String()+")")
	}
	nodes, _ := p.nodeLister.List(labels.Everything())
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				r.AddAddr(ip, fmt.Sprintf("the %s of Node %s", a.Type, n.Name))
			}
		}
		for _, pfx := range podnet.NodeCIDRs(n) {
			r.AddPrefix(pfx, fmt.Sprintf("a pod address (pod CIDR %s of Node %s)", pfx, n.Name))
		}
	}
	return r
}

func (p *Proxy) report(svc *corev1.Service, probs []Problem) {
	for _, pr := range probs {
		key := pr.String()
		if p.reported[key] {
			continue
		}
		p.reported[key] = true
		p.o.Log.Info("service NAT skips an unusable field", "kind", pr.Kind, "namespace", pr.Namespace, "name", pr.Name,
			"field", pr.Field, "value", pr.Value, "reason", pr.Reason)
		if p.events != nil {
			p.events.Eventf(svc, nil, corev1.EventTypeWarning, "InvalidServiceField", ActionProgramService, "node %s: %s", p.o.NodeName, pr.String())
		}
	}
}

func (p *Proxy) setGauges() {
	eps := 0
	for _, m := range p.models {
		for _, pt := range m.Ports {
			eps += len(pt.Endpoints)
		}
	}
	p.metrics.Services.Set(float64(len(p.models)))
	p.metrics.Endpoints.Set(float64(eps))
	probs := 0
	for range p.reported {
		probs++
	}
	p.metrics.Problems.Set(float64(probs))
}

// computeGlobals reads the node-wide inputs: NodePort addresses and the
// pod bridge gateways (the SNAT source towards the tunnel).
func (p *Proxy) computeGlobals() (Input, error) {
	in := Input{ClusterCIDRs: p.o.ClusterCIDRs, ServiceCIDRs: p.o.ServiceCIDRs, TunnelIf: p.o.TunnelIf}
	node, err := p.nodeLister.Get(p.o.NodeName)
	if err != nil {
		return in, fmt.Errorf("service NAT: reading Node %s: %w", p.o.NodeName, err)
	}
	for _, pfx := range podnet.NodeCIDRs(node) {
		if gw, ok := podnet.Gateway(pfx); ok {
			in.SNATAddrs = append(in.SNATAddrs, gw.Addr())
		}
	}
	var local []netip.Addr
	if len(p.o.NodePortAddresses) > 0 {
		if local, err = localAddrs(p.o.NetNSFd); err != nil {
			return in, err
		}
	}
	in.NodePortIPs = NodePortIPs(node, local, p.o.NodePortAddresses)
	return in, nil
}

// NodePortIPs are the addresses NodePorts are served on: with no ranges
// given (--nodeport-addresses), the Node's InternalIP addresses; else the
// node's own addresses within the ranges. Never loopback.
func NodePortIPs(node *corev1.Node, local []netip.Addr, ranges []netip.Prefix) []netip.Addr {
	var out []netip.Addr
	if len(ranges) == 0 {
		for _, a := range node.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil && !ip.IsLoopback() {
				out = append(out, ip.Unmap())
			}
		}
		return out
	}
	for _, a := range local {
		if !a.IsLoopback() && inAny(a, ranges) {
			out = append(out, a.Unmap())
		}
	}
	return out
}

func sameGlobals(a, b Input) bool {
	return fmt.Sprint(a.ClusterCIDRs, a.ServiceCIDRs, a.NodePortIPs, a.SNATAddrs, a.TunnelIf) ==
		fmt.Sprint(b.ClusterCIDRs, b.ServiceCIDRs, b.NodePortIPs, b.SNATAddrs, b.TunnelIf)
}

func unwrap[T any](obj any) (T, bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	v, ok := obj.(T)
	return v, ok
}

// Delete removes the service NAT from the kernel (--cleanup-on-exit, or
// when the service proxy is turned off).
func (p *Proxy) Delete() error {
	var errs []error
	for _, f := range nft.Families {
		errs = append(errs, p.k.Delete(f))
	}
	return errors.Join(errs...)
}
