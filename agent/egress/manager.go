package egress

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/nft"
)

// EventFunc records a Kubernetes Event on the agent's Node.
type EventFunc func(eventType, reason, message string)

// ManagerOptions configure a Manager.
type ManagerOptions struct {
	ClusterCIDRs []netip.Prefix // --cluster-cidrs
	ServiceCIDRs []netip.Prefix // --service-cidrs
	TunnelIf     string         // defaults to wgmesh0
	// NFT writes egress's part of table wgmesh (an nft.Kernel on a node).
	NFT     nft.Programmer
	ProcSys string // defaults to /proc/sys
	Log     logr.Logger
	Events  EventFunc // optional
	Metrics *Metrics  // optional
}

// Manager applies egress masquerade and br_netfilter for the node's podCIDRs.
type Manager struct {
	opts ManagerOptions
	brnf BridgeNetfilter
	// lastBrNF is read by the network policy's goroutine too.
	mu       sync.Mutex
	lastBrNF *BridgeNFStatus
}

// NewManager returns a Manager.
func NewManager(opts ManagerOptions) *Manager {
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Events == nil {
		opts.Events = func(string, string, string) {}
	}
	return &Manager{opts: opts, brnf: BridgeNetfilter{ProcSys: opts.ProcSys}}
}

// Apply programs masquerade for podCIDRs (the node's spec.podCIDRs) and
// enables br_netfilter. br_netfilter being unavailable is reported (log,
// Warning event once, metric 0), not returned as an error.
func (m *Manager) Apply(_ context.Context, podCIDRs []netip.Prefix) error {
	for _, f := range nft.Families {
		want := Desired(Options{PodCIDRs: podCIDRs, ClusterCIDRs: m.opts.ClusterCIDRs, ServiceCIDRs: m.opts.ServiceCIDRs, TunnelIf: m.opts.TunnelIf}, f)
		wrote, err := nft.Sync(m.opts.NFT, f, want)
		if err != nil {
			m.opts.Metrics.Errors.WithLabelValues("apply").Inc()
			err = fmt.Errorf("egress masquerade, table %s %s: %w", f, nft.Table, err)
			m.opts.Events(corev1.EventTypeWarning, "EgressMasqueradeFailed", err.Error())
			return err
		}
		if wrote {
			m.opts.Metrics.Syncs.WithLabelValues(f.String()).Inc()
			m.opts.Log.Info("programmed egress masquerade", "family", f.String(), "table", nft.Table, "rules", len(want.Chains[ChainName]))
		}
	}

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
		if last := m.BridgeNetfilterStatus(); last == nil || last.Enabled || last.Reason != st.Reason {
			m.opts.Log.Info("br_netfilter unavailable", "reason", st.Reason)
			m.opts.Events(corev1.EventTypeWarning, "BridgeNetfilterUnavailable", st.Reason)
		}
	}
	m.mu.Lock()
	m.lastBrNF = &st
	m.mu.Unlock()
	return nil
}

// BridgeNetfilterStatus is the last br_netfilter outcome (nil before Apply).
// Other goroutines may call it (the network policy's readiness depends on
// it: without br_netfilter, same-node pod traffic bypasses the policy).
func (m *Manager) BridgeNetfilterStatus() *BridgeNFStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastBrNF
}
