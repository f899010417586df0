// Package kube is the agent process's one runtime against the API server:
// one client stack (a controller-runtime manager: its client, its uncached
// reader, its metrics and health endpoints), one shared informer cache in
// which every resource is watched once and trimmed to what the agent reads
// (cache.go), one writer of this node's MeshPeer status (status.go) and one
// Event writer (events.go). The mesh reconcile (agent) and the service NAT
// (agent/servicenat) both run on it: the service NAT takes its informers
// from the same cache instead of watching on its own.
package kube

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Options configure the runtime.
type Options struct {
	// NodeName is this node: its Node is the one cached whole (the others
	// are trimmed), its MeshPeer the one Status writes, and it names the
	// Events' reporting instance.
	NodeName string
	// Scheme knows every type the agent reads and reports on (nil:
	// Scheme()).
	Scheme *runtime.Scheme
	Log    logr.Logger
	// MetricsBindAddress and HealthProbeAddress are the manager's
	// endpoints ("0": off; "" for HealthProbeAddress: off).
	MetricsBindAddress string
	HealthProbeAddress string
	// ByObject adds cache settings of resources only a part of the agent
	// watches (the service NAT's EndpointSlice selector).
	ByObject map[client.Object]cache.ByObject
}

// Runtime is the agent process's client stack. Everything that reads or
// writes the API server goes through it.
type Runtime struct {
	manager.Manager
	// Events writes Events; each part reports under its own name
	// (Events.For).
	Events *Events
	// Status writes this node's MeshPeer status.
	Status *StatusWriter
	// APIServer are the API server's addresses (from the rest config).
	APIServer []netip.Addr
}

// New builds the runtime; nothing connects before its manager starts.
func New(cfg *rest.Config, o Options) (*Runtime, error) {
	if o.Scheme == nil {
		o.Scheme = Scheme()
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:                 o.Scheme,
		Logger:                 o.Log,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress: o.HealthProbeAddress,
		Cache:                  cacheOptions(o.NodeName, o.ByObject),
	})
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return &Runtime{
		Manager:   mgr,
		Events:    NewEvents(mgr.GetClient(), o.Scheme, o.NodeName, o.Log.WithName("events")),
		Status:    &StatusWriter{Client: mgr.GetClient(), Name: o.NodeName},
		APIServer: wgv1.URLHostAddrs(cfg.Host),
	}, nil
}

// Scheme holds the Kubernetes types and wgmesh's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = wgv1.AddToScheme(s)
	return s
}

// Informer is the shared cache's informer of obj's resource: the one watch
// of that resource in the process, whoever asks. It does not wait for the
// informer to sync: callers wait on their handler registrations. (The
// cache's informers are client-go shared index informers; their indexer
// backs listers, which read without copying.)
func (r *Runtime) Informer(ctx context.Context, obj client.Object) (toolscache.SharedIndexInformer, error) {
	inf, err := r.GetCache().GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return nil, fmt.Errorf("informer for %T: %w", obj, err)
	}
	sii, ok := inf.(toolscache.SharedIndexInformer)
	if !ok {
		return nil, fmt.Errorf("informer for %T is a %T, not a shared index informer", obj, inf)
	}
	return sii, nil
}
