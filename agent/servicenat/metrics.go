package servicenat

import "github.com/prometheus/client_golang/prometheus"

// Metrics of the service NAT, modelled on kube-proxy's.
type Metrics struct {
	SyncDuration               *prometheus.HistogramVec
	NetworkProgrammingDuration prometheus.Histogram
	Services                   prometheus.Gauge
	Endpoints                  prometheus.Gauge
	SyncErrors                 *prometheus.CounterVec
	Writes                     *prometheus.CounterVec
	Problems                   prometheus.Gauge
	ConntrackDeleted           prometheus.Counter
	KubeProxyDetected          prometheus.Gauge
	StandingAside              prometheus.Gauge
	AddressConflicts           prometheus.Gauge
	ReservedAddresses          prometheus.Gauge
}

// NewMetrics creates the metrics and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		SyncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "wgmesh_service_sync_duration_seconds",
			Help:    "Time to compute and program the service NAT: kind=full (the whole table compared with the kernel) or partial (changed Services only).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"kind"}),
		NetworkProgrammingDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "wgmesh_service_network_programming_duration_seconds",
			Help:    "Time from an endpoint change (the EndpointSlice's endpoints.kubernetes.io/last-change-trigger-time) to its rules being in the kernel.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}),
		Services: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_services", Help: "Services programmed in the service NAT."}),
		Endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_service_endpoints", Help: "Endpoints (per Service port) programmed in the service NAT."}),
		SyncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_service_sync_errors_total", Help: "Failed service NAT syncs, by stage."}, []string{"stage"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "wgmesh_service_nftables_writes_total", Help: "Objects (chains, rules, map and set elements) written to nftables, by sync kind."}, []string{"kind"}),
		Problems: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_service_problems", Help: "Service and EndpointSlice fields the service NAT skips as unusable."}),
		ConntrackDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "wgmesh_service_conntrack_deleted_total", Help: "Stale UDP conntrack entries removed after endpoint or Service changes."}),
		KubeProxyDetected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_service_kube_proxy_detected", Help: "1 when kube-proxy's rules are present on this node while wgmesh's service NAT is on."}),
		StandingAside: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_service_nat_standing_aside", Help: "1 while the service NAT stands aside because kube-proxy programs this node's Services (--service-proxy=auto)."}),
		AddressConflicts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_service_address_conflicts", Help: "Services with an address and port another Service claims too (each side counts; one side is not programmed)."}),
		ReservedAddresses: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "wgmesh_service_reserved_addresses", Help: "Addresses and prefixes no externalIP or load-balancer IP may take (nodes, the API server, WireGuard endpoints, pod and service CIDRs)."}),
	}
	if reg != nil {
		reg.MustRegister(m.SyncDuration, m.NetworkProgrammingDuration, m.Services, m.Endpoints, m.SyncErrors, m.Writes,
			m.Problems, m.ConntrackDeleted, m.KubeProxyDetected, m.StandingAside, m.AddressConflicts, m.ReservedAddresses)
	}
	return m
}
