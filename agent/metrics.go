package agent

import (
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/sysctl"
)

// DefaultPerPeerMetricsLimit is --per-peer-metrics-limit: the most peers
// whose own series one agent exports with --per-peer-metrics.
const DefaultPerPeerMetricsLimit = 250

// PerPeerMetrics is the per-peer metrics policy. Series labelled by peer
// grow with the square of the node count across a cluster (every agent has
// every other node as a peer), so by default the agent exports only
// aggregates over its peers; Enabled (--per-peer-metrics) adds the
// wgmesh_peer_*{peer} series for at most Limit peers
// (--per-peer-metrics-limit), the first by name, and
// wgmesh_peer_metrics_dropped counts the others.
type PerPeerMetrics struct {
	Enabled bool
	Limit   int // <= 0: DefaultPerPeerMetricsLimit
}

// Metrics are the agent's Prometheus metrics (prefix wgmesh_).
type Metrics struct {
	Peers             prometheus.Gauge
	PeerPaths         *prometheus.GaugeVec
	PeersConnected    prometheus.Gauge
	ReconcileDuration prometheus.Histogram
	ReconcileErrors   *prometheus.CounterVec
	MTU               prometheus.Gauge
	Sysctl            *prometheus.GaugeVec
	PeerProblems      prometheus.Gauge
	Reconciles        *prometheus.CounterVec
	StatusWrites      prometheus.Counter
	WatchEvents       *prometheus.CounterVec
	peers             *peerCollector
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered, for tests); perPeer says which per-peer series to export.
func NewMetrics(reg prometheus.Registerer, perPeer PerPeerMetrics) *Metrics {
	if perPeer.Limit <= 0 {
		perPeer.Limit = DefaultPerPeerMetricsLimit
	}
	m := &Metrics{
		Peers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_peers",
			Help: "WireGuard peers configured on this node."}),
		PeerPaths: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wgmesh_peer_paths",
			Help: "Peers by how this node reaches them (agent/paths): endpoint (spec.endpoint: no location), private, public, punched, relayed (through another node), relay-needed (no path, no relay: pods cannot talk)."}, []string{"path"}),
		PeersConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_peers_connected",
			Help: "Node peers reachable now: the last probe through the tunnel was answered (with --probe-interval=0: a handshake in the last 3 minutes)."}),
		ReconcileDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wgmesh_reconcile_duration_seconds",
			Help: "Duration of one agent reconcile (mesh, link, routes, node data plane).", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		ReconcileErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wgmesh_reconcile_errors_total",
			Help: "Failed agent reconciles, by stage."}, []string{"stage"}),
		MTU: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wgmesh_mtu_bytes",
			Help: "MTU of the WireGuard link and the pod bridge, in bytes."}),
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
		peers: &peerCollector{policy: perPeer},
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
		reg.MustRegister(m.Peers, m.PeerPaths, m.PeersConnected, m.ReconcileDuration, m.ReconcileErrors, m.MTU, m.Sysctl, m.PeerProblems, m.Reconciles, m.StatusWrites, m.WatchEvents, m.peers)
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

// peerView is what one reconcile knows about the peers, for the metrics.
type peerView struct {
	// DeviceRead: the WireGuard device was read, and Device are its peers
	// (when it was not, the byte counters keep their last figures).
	DeviceRead bool
	Device     []wgtypes.Peer
	// Names maps public keys to MeshPeer names (the peer label; a device
	// peer without one is labelled with its public key).
	Names map[wgtypes.Key]string
	// Probes are the probe states of the node peers, by MeshPeer name (nil:
	// probes are off).
	Probes map[string]probe.State
}

// setPaths counts the topology's peers by path kind; every kind is
// exported, 0 included.
func (m *Metrics) setPaths(peers []mesh.Peer) {
	n := map[paths.Kind]int{}
	for _, p := range peers {
		n[p.Path]++
	}
	for _, k := range paths.Kinds {
		m.PeerPaths.WithLabelValues(string(k)).Set(float64(n[k]))
	}
}

// setPeers records a reconcile's view of the peers for the next scrapes.
func (m *Metrics) setPeers(v peerView) { m.peers.set(v) }

var (
	// Aggregates over the peers: a fixed number of series per agent.
	descUnreachable = prometheus.NewDesc("wgmesh_peers_unreachable",
		"Node peers whose last probe through the tunnel was not answered (0 with --probe-interval=0).", nil, nil)
	descOldestHandshake = prometheus.NewDesc("wgmesh_peers_oldest_handshake_timestamp_seconds",
		"Unix time of the oldest latest WireGuard handshake among the probed node peers (0: one of them never handshook); absent without probed peers. Probes keep sessions warm, so an old one means trouble.", nil, nil)
	descRxAll = prometheus.NewDesc("wgmesh_receive_bytes_total",
		"Bytes received over WireGuard from all peers (including peers since removed).", nil, nil)
	descTxAll = prometheus.NewDesc("wgmesh_transmit_bytes_total",
		"Bytes sent over WireGuard to all peers (including peers since removed).", nil, nil)
	descDropped = prometheus.NewDesc("wgmesh_peer_metrics_dropped",
		"Peers whose own series (wgmesh_peer_*{peer}) are not exported because of --per-peer-metrics-limit (0 with --per-peer-metrics off).", nil, nil)

	// Per peer, only with --per-peer-metrics.
	descReachable = prometheus.NewDesc("wgmesh_peer_reachable",
		"1 when the last reachability probe to the node peer through the tunnel was answered, 0 when it was not (--per-peer-metrics).", []string{"peer"}, nil)
	descRTT = prometheus.NewDesc("wgmesh_peer_rtt_seconds",
		"Round-trip time of the last answered reachability probe to the node peer (--per-peer-metrics).", []string{"peer"}, nil)
	descHandshake = prometheus.NewDesc("wgmesh_peer_last_handshake_timestamp_seconds",
		"Unix time of the latest WireGuard handshake with the peer (0: never; --per-peer-metrics).", []string{"peer"}, nil)
	descRx = prometheus.NewDesc("wgmesh_peer_receive_bytes_total",
		"Bytes received from the peer over WireGuard (--per-peer-metrics).", []string{"peer"}, nil)
	descTx = prometheus.NewDesc("wgmesh_peer_transmit_bytes_total",
		"Bytes sent to the peer over WireGuard (--per-peer-metrics).", []string{"peer"}, nil)
)

// byteCounts are a peer's WireGuard counters.
type byteCounts struct{ rx, tx int64 }

// peerCollector reports the peers from the last reconcile's view: the
// aggregates always, the per-peer series as its policy says. The byte
// counters are WireGuard's own, summed.
type peerCollector struct {
	policy PerPeerMetrics

	mu   sync.Mutex
	view peerView
	// last are the device's counters by public key at the last read; gone
	// the counts of peers since removed (or whose counters restarted), so
	// that the totals never go down when a peer leaves.
	last map[wgtypes.Key]byteCounts
	gone byteCounts
}

func (c *peerCollector) set(v peerView) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.view = v
	if !v.DeviceRead {
		return
	}
	now := make(map[wgtypes.Key]byteCounts, len(v.Device))
	for _, p := range v.Device {
		now[p.PublicKey] = byteCounts{p.ReceiveBytes, p.TransmitBytes}
	}
	for k, old := range c.last {
		cur, ok := now[k]
		if !ok || cur.rx < old.rx {
			c.gone.rx += old.rx
		}
		if !ok || cur.tx < old.tx {
			c.gone.tx += old.tx
		}
	}
	c.last = now
}

func (c *peerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUnreachable, descOldestHandshake, descRxAll, descTxAll, descDropped,
		descReachable, descRTT, descHandshake, descRx, descTx} {
		ch <- d
	}
}

func (c *peerCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.view

	unreachable := 0
	for _, s := range v.Probes {
		if s.Probed && !s.Reachable {
			unreachable++
		}
	}
	ch <- prometheus.MustNewConstMetric(descUnreachable, prometheus.GaugeValue, float64(unreachable))

	total := c.gone
	for _, b := range c.last {
		total.rx += b.rx
		total.tx += b.tx
	}
	ch <- prometheus.MustNewConstMetric(descRxAll, prometheus.CounterValue, float64(total.rx))
	ch <- prometheus.MustNewConstMetric(descTxAll, prometheus.CounterValue, float64(total.tx))

	byName := make(map[string]wgtypes.Peer, len(v.Device))
	oldest, probed := 0.0, false
	for _, p := range v.Device {
		name := peerLabel(p.PublicKey, v.Names)
		byName[name] = p
		if s := v.Probes[name]; s.Probed {
			hs := handshakeTimestamp(p)
			if !probed || hs < oldest {
				oldest = hs
			}
			probed = true
		}
	}
	if probed {
		ch <- prometheus.MustNewConstMetric(descOldestHandshake, prometheus.GaugeValue, oldest)
	}

	if !c.policy.Enabled {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.GaugeValue, 0)
		return
	}
	names := make([]string, 0, len(byName)+len(v.Probes))
	for name := range byName {
		names = append(names, name)
	}
	for name := range v.Probes {
		if _, ok := byName[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	dropped := max(0, len(names)-c.policy.Limit)
	names = names[:len(names)-dropped]
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.GaugeValue, float64(dropped))
	for _, name := range names {
		if p, ok := byName[name]; ok {
			ch <- prometheus.MustNewConstMetric(descHandshake, prometheus.GaugeValue, handshakeTimestamp(p), name)
			ch <- prometheus.MustNewConstMetric(descRx, prometheus.CounterValue, float64(p.ReceiveBytes), name)
			ch <- prometheus.MustNewConstMetric(descTx, prometheus.CounterValue, float64(p.TransmitBytes), name)
		}
		s, ok := v.Probes[name]
		if !ok || !s.Probed {
			continue
		}
		reachable := 0.0
		if s.Reachable {
			reachable = 1
		}
		ch <- prometheus.MustNewConstMetric(descReachable, prometheus.GaugeValue, reachable, name)
		if !s.LastAnswer.IsZero() {
			ch <- prometheus.MustNewConstMetric(descRTT, prometheus.GaugeValue, s.RTT.Seconds(), name)
		}
	}
}

// peerLabel is a device peer's peer label: its MeshPeer's name, or its
// public key when no MeshPeer names it.
func peerLabel(k wgtypes.Key, names map[wgtypes.Key]string) string {
	if n := names[k]; n != "" {
		return n
	}
	return k.String()
}

// handshakeTimestamp is the peer's latest handshake as Unix time, 0 for never.
func handshakeTimestamp(p wgtypes.Peer) float64 {
	if p.LastHandshakeTime.IsZero() {
		return 0
	}
	return float64(p.LastHandshakeTime.Unix())
}
