package egress

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/podnet"
)

// EventFunc records a Kubernetes Event on the agent's Node.
type EventFunc func(eventType, reason, message string)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	ClusterCIDRs []netip.Prefix // --cluster-cidrs
	ServiceCIDRs []netip.Prefix // --service-cidrs
	TunnelIf     string         // defaults to wgmesh0
	BridgeIf     string         // defaults to wgmesh-br0
	NetNSFd      int            // 0 = current network namespace
	ProcSys      string         // defaults to /proc/sys
	Log          logr.Logger
	Events       EventFunc // optional
	Metrics      *Metrics  // optional
}

// Manager applies egress masquerade and br_netfilter for the node's podCIDRs.
type Manager struct {
	opts     ManagerOptions
	nft      *Reconciler
	brnf     BridgeNetfilter
	lastBrNF *BridgeNFStatus
	guardErr error
	guardOK  bool
}

// NewManager returns a Manager.
func NewManager(opts ManagerOptions) *Manager {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Events == nil {
		opts.Events = func(string, string, string) {}
	}
	return &Manager{
		opts: opts,
		nft:  NewReconciler(ReconcilerOptions{NetNSFd: opts.NetNSFd, Log: opts.Log, Metrics: opts.Metrics}),
		brnf: BridgeNetfilter{ProcSys: opts.ProcSys},
	}
}

// Apply programs the leak guard (over the cluster's, every known node's and
// the service ranges) and masquerade for podCIDRs (the node's
// spec.podCIDRs), and enables br_netfilter. br_netfilter being unavailable
// is reported (log, Warning event once, metric 0), not returned as an error.
func (m *Manager) Apply(_ context.Context, podCIDRs []string, peerRanges ...netip.Prefix) error {
	pods, err := podnet.ParseCIDRs("node spec.podCIDRs", podCIDRs)
	if err != nil {
		m.guardErr, m.guardOK = err, false
		return err
	}
	progs := Desired(Options{PodCIDRs: pods, ClusterCIDRs: m.opts.ClusterCIDRs, ServiceCIDRs: m.opts.ServiceCIDRs, PeerRanges: peerRanges,
		TunnelIf: m.opts.TunnelIf, BridgeIf: m.opts.BridgeIf})
	if _, err := m.nft.Apply(progs); err != nil {
		m.guardErr, m.guardOK = fmt.Errorf("leak guard and egress masquerade: %w", err), false
		m.opts.Events(corev1.EventTypeWarning, "EgressMasqueradeFailed", err.Error())
		return m.guardErr
	}
	m.guardErr, m.guardOK = nil, true

	st, err := m.brnf.Ensure()
	if err != nil {
		m.opts.Metrics.Errors.WithLabelValues("br_netfilter").Inc()
		return fmt.Errorf("br_netfilter: %w", err)
	}
	if st.Enabled {
		m.opts.Metrics.BridgeNFCallReady.Set(1)
		if len(st.Changed) > 0 {
			m.opts.Log.Info("enabled br_netfilter sysctls", "sysctls", st.Changed)
		}
	} else {
		m.opts.Metrics.BridgeNFCallReady.Set(0)
		if m.lastBrNF == nil || m.lastBrNF.Enabled || m.lastBrNF.Reason != st.Reason {
			m.opts.Log.Info("br_netfilter unavailable", "reason", st.Reason)
			m.opts.Events(corev1.EventTypeWarning, "BridgeNetfilterUnavailable", st.Reason)
		}
	}
	m.lastBrNF = &st
	return nil
}

// GuardErr is why the leak guard is not in place after the last Apply (nil
// when it is). The CNI configuration is written only after it is.
func (m *Manager) GuardErr() error {
	if m.guardErr == nil && !m.guardOK {
		return fmt.Errorf("the leak guard has not been programmed yet")
	}
	return m.guardErr
}

// BridgeNetfilterStatus is the last br_netfilter outcome (nil before Apply).
func (m *Manager) BridgeNetfilterStatus() *BridgeNFStatus { return m.lastBrNF }

// Cleanup removes the egress chains (sysctls are left as they are: other
// components on the host may rely on them).
func (m *Manager) Cleanup(_ context.Context) error { return m.nft.Cleanup() }
