package operator

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/operator/cidr"
)

// LeaderElectionID is the Lease the operator replicas compete for.
const LeaderElectionID = "wgmesh-operator.wgmesh.io"

// ManagerOptions configure NewManager. Zero durations mean
// controller-runtime's defaults.
type ManagerOptions struct {
	Pools                   []cidr.PoolSpec
	LeaderElect             bool
	LeaderElectionNamespace string
	MetricsBindAddress      string // "0" turns the metrics endpoint off
	HealthProbeBindAddress  string // "0" turns the probes off
	// Registerer receives the wgmesh_operator_* metrics; controller-runtime's
	// registry (served on MetricsBindAddress) when nil.
	Registerer                                prometheus.Registerer
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// SkipNameValidation allows several managers in one process (tests).
	SkipNameValidation bool
	Logger             logr.Logger
	Now                func() time.Time
	// Locations say where a node's location comes from.
	Locations LocationOptions
}

// NewScheme is the scheme the operator works with: core types and MeshPeer.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := wgv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// NewManager builds a controller-runtime manager running the operator's
// controllers, with leader election, metrics and /healthz, /readyz.
func NewManager(cfg *rest.Config, o ManagerOptions) (ctrl.Manager, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	opts := ctrl.Options{
		Scheme:                        scheme,
		Logger:                        o.Logger,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Metrics:                       metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:        o.HealthProbeBindAddress,
	}
	if o.LeaseDuration > 0 {
		opts.LeaseDuration, opts.RenewDeadline, opts.RetryPeriod = &o.LeaseDuration, &o.RenewDeadline, &o.RetryPeriod
	}
	if o.SkipNameValidation {
		skip := true
		opts.Controller = config.Controller{SkipNameValidation: &skip}
	}
	mgr, err := ctrl.NewManager(cfg, opts)
	if err != nil {
		return nil, fmt.Errorf("create manager: %w", err)
	}
	reg := o.Registerer
	if reg == nil {
		reg = metrics.Registry
	}
	if err := Setup(mgr, Options{Pools: o.Pools, Registerer: reg, Now: o.Now, APIServer: wgv1.URLHostAddrs(cfg.Host), Locations: o.Locations}); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}
