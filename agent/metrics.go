package agent

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/sysctl"
)

// Metrics are the agent's Prometheus metrics (prefix wgmesh_).
type Metrics struct {
	Peers             prometheus.Gauge
	PeersConnected    prometheus.Gauge
	ReconcileDuration prometheus.Histogram
	ReconcileErrors   *prometheus.CounterVec
	MTU               prometheus.Gauge
	Sysctl            *prometheus.GaugeVec
	PeerProblems      prometheus.Gauge
	Reconciles        *prometheus.CounterVec
	StatusWrites      prometheus.Counter
	WatchEvents       *prometheus.CounterVec
	device            *deviceCollector
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Peers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_peers",
			Help: "WireGuard peers configured on this node."}),
		PeersConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_peers_connected",
			Help: "Node peers reachable now: the last probe through the tunnel was answered (with --probe-interval=0: a handshake in the last 3 minutes)."}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wgmesh_reconcile_duration_seconds",
			Help: "Duration of one agent reconcile (mesh, link, routes, node data plane).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_reconcile_errors_total",
			Help: "Failed agent reconciles, by stage."}, []string{"stage"}),
		MTU: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_mtu",
			Help: "MTU of the WireGuard link and the pod bridge."}),
		Sysctl: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wgmesh_sysctl",
			Help: "Value of each kernel parameter the data plane needs (after the agent set it)."}, []string{"key"}),
		PeerProblems: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_peer_problems",
			Help: "MeshPeers this node cannot use (see the Degraded condition and Events)."}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_reconciles_total",
			Help: "Agent reconciles run (mesh, link, routes, node data plane, status), by what woke them: watch (a MeshPeer or Node change that matters), netlink (drift), probe (a peer's reachability changed), retry, start, resync (the periodic check)."},
			[]string{"trigger"}),
		StatusWrites: prometheus.NewCounter(prometheus.CounterOpts{Name: "wgmesh_status_writes_total",
			Help: "Writes of this node's MeshPeer status."}),
		WatchEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_watch_events_total",
			Help: "MeshPeer and own-Node watch events, by kind and effect: reconcile (a change that matters woke the agent) or ignored (a status-only or unrelated change)."},
			[]string{"kind", "effect"}),
		device: &deviceCollector{},
	}
	for _, r := range triggerReasons {
		m.Reconciles.WithLabelValues(r)
	}
	for _, k := range []string{"MeshPeer", "Node"} {
		for _, e := range []string{"reconcile", "ignored"} {
			m.WatchEvents.WithLabelValues(k, e)
		}
	}
	if reg != nil {
		reg.MustRegister(m.Peers, m.PeersConnected, m.ReconcileDuration, m.ReconcileErrors, m.MTU, m.Sysctl, m.PeerProblems, m.Reconciles, m.StatusWrites, m.WatchEvents, m.device)
	}
	return m
}

func (m *Metrics) setSysctls(rs []sysctl.Result) {
	for _, r := range rs {
		var v float64
		if _, err := fmt.Sscan(r.Current, &v); err == nil {
			m.Sysctl.WithLabelValues(r.Key).Set(v)
		}
	}
}

// setDevice records the device state for the per-peer metrics; names maps
// public keys to MeshPeer names (the peer label).
func (m *Metrics) setDevice(peers []wgtypes.Peer, names map[wgtypes.Key]string) {
	m.device.mu.Lock()
	defer m.device.mu.Unlock()
	m.device.peers = peers
	m.device.names = names
}

var (
	descHandshake = prometheus.NewDesc("wgmesh_peer_last_handshake_seconds",
		"Unix time of the latest handshake with the peer (0: never).", []string{"peer"}, nil)
	descRx = prometheus.NewDesc("wgmesh_peer_receive_bytes_total",
		"Bytes received from the peer over WireGuard.", []string{"peer"}, nil)
	descTx = prometheus.NewDesc("wgmesh_peer_transmit_bytes_total",
		"Bytes sent to the peer over WireGuard.", []string{"peer"}, nil)
)

// deviceCollector reports per-peer figures from the last device snapshot;
// the counters are WireGuard's own.
type deviceCollector struct {
	mu    sync.Mutex
	peers []wgtypes.Peer
	names map[wgtypes.Key]string
}

func (d *deviceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descHandshake
	ch <- descRx
	ch <- descTx
}

func (d *deviceCollector) Collect(ch chan<- prometheus.Metric) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.peers {
		name := d.names[p.PublicKey]
		if name == "" {
			name = p.PublicKey.String()
		}
		hs := 0.0
		if !p.LastHandshakeTime.IsZero() {
			hs = float64(p.LastHandshakeTime.Unix())
		}
		ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, hs, name)
		ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(p.ReceiveBytes), name)
		ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(p.TransmitBytes), name)
	}
}
