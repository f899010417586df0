package policy

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the network policy: a fixed number of series per agent (kind,
// stage and direction take a few values each), whatever the cluster's size.
type Metrics struct {
	SyncDuration        *prometheus.HistogramVec
	ProgrammingDuration prometheus.Histogram
	Writes              *prometheus.CounterVec
	SyncErrors          *prometheus.CounterVec
	Policies            prometheus.Gauge
	IsolatedPods        *prometheus.GaugeVec
	DeniedPackets       *prometheus.CounterVec
	UnjudgedPackets     *prometheus.CounterVec
	Ready               prometheus.Gauge
	// CNIRequests and CNIRequestDuration: the CNI hook's requests
	// (server.go), by result.
	CNIRequests        *prometheus.CounterVec
	CNIRequestDuration prometheus.Histogram
}

// Results of a CNI hook request (the result label).
const (
	ResultProgrammed = "programmed" // the pod's policy is in the kernel
	ResultRefused    = "refused"    // a bad request: names, addresses, a pod not on this node
	ResultFailed     = "failed"     // not programmed in time (the API server, a write)
)

// NewMetrics creates the metrics and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wgmesh_policy_sync_duration_seconds",
			Help:    "Time to render the network policy for this node and program it: kind=full (compared with the kernel read back) or partial (written from the last desired table).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"kind"}),
		ProgrammingDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wgmesh_policy_programming_duration_seconds",
			Help:    "Time from a Pod, Namespace or NetworkPolicy event that changes this node's network policy to its rules being in the kernel.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_policy_nftables_writes_total",
			Help: "Objects (chains, rules, map and set elements) of the network policy written to nftables, by sync kind.",
		}, []string{"kind"}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_policy_sync_errors_total",
			Help: "Failed network policy syncs, by stage: read (the kernel's table), kernel (a write), counters (reading the drop counters).",
		}, []string{"stage"}),
		Policies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_policy_policies",
			Help: "NetworkPolicies in the cluster, as this agent sees them.",
		}),
		IsolatedPods: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "wgmesh_policy_isolated_pods",
			Help: "Pods on this node that some NetworkPolicy isolates, by direction (ingress, egress).",
		}, []string{"direction"}),
		DeniedPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_policy_denied_packets_total",
			Help: "Connections to (ingress) or from (egress) this node's isolated pods that no NetworkPolicy rule allows: the packets the combination chains' final drops counted, read every sync period.",
		}, []string{"direction"}),
		UnjudgedPackets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_policy_unjudged_packets_total",
			Help: "Packets from (egress) or to (ingress) addresses of this node's pod CIDRs that the agent had not judged yet (a new pod before its policy was programmed, an address no pod holds): the fail-closed drops, read every sync period.",
		}, []string{"direction"}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_policy_ready",
			Help: "1 when the network policy is in the kernel as desired and br_netfilter is on; 0 otherwise (the last sync failed, or same-node pod traffic bypasses the policy).",
		}),
		CNIRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_policy_cni_requests_total",
			Help: "Requests of the CNI plugin (wgmesh-guard's policy role, at a pod's ADD) to judge a new pod, by result: programmed, refused (a bad request), failed (not programmed in time; the pod stays denied until it is).",
		}, []string{"result"}),
		CNIRequestDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wgmesh_policy_cni_request_duration_seconds",
			Help:    "Time from the CNI plugin's request to the agent's answer (the pod's policy in the kernel, or the failure).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
	}
	for _, r := range []string{ResultProgrammed, ResultRefused, ResultFailed} {
		m.CNIRequests.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.SyncDuration, m.ProgrammingDuration, m.Writes, m.SyncErrors, m.Policies, m.IsolatedPods, m.DeniedPackets, m.UnjudgedPackets, m.Ready,
			m.CNIRequests, m.CNIRequestDuration)
	}
	return m
}
