package agent

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
	"github.com/wgmesh/wgmesh/agent/probe"
	"github.com/wgmesh/wgmesh/agent/sysctl"
	"github.com/wgmesh/wgmesh/test/metricnames"
)

// perPeerFamilies are the series labelled by peer: with N nodes, N-1 per
// agent each, N² across the cluster.
var perPeerFamilies = []string{"wgmesh_peer_reachable", "wgmesh_peer_rtt_seconds", "wgmesh_peer_last_handshake_timestamp_seconds",
	"wgmesh_peer_receive_bytes_total", "wgmesh_peer_transmit_bytes_total"}

// meshView is a reconcile's view of n node peers node-0000...: each has
// received 100 and sent 10 bytes, peer i last handshook i seconds before
// now, and every tenth (node-0000, node-0010, ...) did not answer its last
// probe.
func meshView(n int, now time.Time) peerView {
	v := peerView{DeviceRead: true, Names: map[wgtypes.Key]string{}, Probes: map[string]probe.State{}}
	for i := range n {
		k := wgtypes.Key{byte(i), byte(i >> 8), 1}
		name := fmt.Sprintf("node-%04d", i)
		v.Names[k] = name
		v.Device = append(v.Device, wgtypes.Peer{PublicKey: k, ReceiveBytes: 100, TransmitBytes: 10,
			LastHandshakeTime: now.Add(-time.Duration(i) * time.Second)})
		v.Probes[name] = probe.State{Probed: true, Reachable: i%10 != 0, RTT: time.Millisecond, LastAnswer: now}
	}
	return v
}

// gathered is every wgmesh_ family the registry exports, by name.
func gathered(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value is the single series of the family, or fails.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	mf := fams[name]
	if mf == nil || len(mf.GetMetric()) != 1 {
		t.Fatalf("%s: want one series, got %v", name, mf)
	}
	m := mf.GetMetric()[0]
	if m.GetCounter() != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// peerLabels are the peer label values of a family's series.
func peerLabels(mf *dto.MetricFamily) []string {
	var out []string
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "peer" {
				out = append(out, l.GetValue())
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestDefaultMetricsDoNotGrowWithTheMesh: by default the agent exports no
// series labelled by peer, and as many series with 1,000 peers as with 3;
// the aggregates say what the per-peer series would.
func TestDefaultMetricsDoNotGrowWithTheMesh(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	series := map[int]int{}
	for _, n := range []int{3, 1000} {
		reg := prometheus.NewRegistry()
		m := NewMetrics(reg, PerPeerMetrics{}) // the flags' defaults
		probe.NewMetrics(reg)
		m.setPeers(meshView(n, now))
		fams := gathered(t, reg)
		for name, mf := range fams {
			series[n] += len(mf.GetMetric())
			if slices.Contains(perPeerFamilies, name) {
				t.Errorf("%d peers: the default exports %s (%d series), a per-peer family", n, name, len(mf.GetMetric()))
			}
			if l := peerLabels(mf); len(l) > 0 {
				t.Errorf("%d peers: the default exports %s with %d peer labels", n, name, len(l))
			}
		}
		if got, want := value(t, fams, "wgmesh_peers_unreachable"), float64((n+9)/10); got != want {
			t.Errorf("%d peers: wgmesh_peers_unreachable = %v, want %v", n, got, want)
		}
		if got, want := value(t, fams, "wgmesh_receive_bytes_total"), float64(100*n); got != want {
			t.Errorf("%d peers: wgmesh_receive_bytes_total = %v, want %v", n, got, want)
		}
		if got, want := value(t, fams, "wgmesh_transmit_bytes_total"), float64(10*n); got != want {
			t.Errorf("%d peers: wgmesh_transmit_bytes_total = %v, want %v", n, got, want)
		}
		if got, want := value(t, fams, "wgmesh_peers_oldest_handshake_timestamp_seconds"), float64(now.Unix()-int64(n-1)); got != want {
			t.Errorf("%d peers: wgmesh_peers_oldest_handshake_timestamp_seconds = %v, want %v", n, got, want)
		}
		if got := value(t, fams, "wgmesh_peer_metrics_dropped"); got != 0 {
			t.Errorf("%d peers: wgmesh_peer_metrics_dropped = %v with per-peer metrics off, want 0", n, got)
		}
	}
	if series[3] != series[1000] {
		t.Errorf("the agent exports %d series with 3 peers and %d with 1,000: the default must not grow with the mesh", series[3], series[1000])
	}
}

// TestPerPeerMetricsAreCapped: --per-peer-metrics exports each per-peer
// family for at most --per-peer-metrics-limit peers, the first by name, and
// counts the others in wgmesh_peer_metrics_dropped.
func TestPerPeerMetricsAreCapped(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	for _, tc := range []struct {
		peers, limit, exported int
	}{
		{peers: 3, limit: 5, exported: 3},
		{peers: 5, limit: 5, exported: 5},
		{peers: 20, limit: 5, exported: 5},
		{peers: 1000, limit: 0, exported: DefaultPerPeerMetricsLimit}, // the default limit
	} {
		t.Run(fmt.Sprintf("%d peers, limit %d", tc.peers, tc.limit), func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg, PerPeerMetrics{Enabled: true, Limit: tc.limit})
			m.setPeers(meshView(tc.peers, now))
			fams := gathered(t, reg)
			var want []string
			for i := range tc.exported {
				want = append(want, fmt.Sprintf("node-%04d", i))
			}
			for _, name := range perPeerFamilies {
				if got := peerLabels(fams[name]); !slices.Equal(got, want) {
					t.Errorf("%s: %d peers exported (%v...), want the first %d by name", name, len(got), got[:min(3, len(got))], tc.exported)
				}
			}
			if got := value(t, fams, "wgmesh_peer_metrics_dropped"); got != float64(tc.peers-tc.exported) {
				t.Errorf("wgmesh_peer_metrics_dropped = %v, want %d", got, tc.peers-tc.exported)
			}
			// The aggregates still cover every peer.
			if got := value(t, fams, "wgmesh_receive_bytes_total"); got != float64(100*tc.peers) {
				t.Errorf("wgmesh_receive_bytes_total = %v, want %d", got, 100*tc.peers)
			}
		})
	}
}

// TestPerPeerSeries: what each per-peer series says, and which peers have
// which: RTT only after an answer, reachability only for probed node peers,
// device figures for every peer (an external or unnamed one too).
func TestPerPeerSeries(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	kA, kB, kX := wgtypes.Key{1}, wgtypes.Key{2}, wgtypes.Key{3}
	v := peerView{DeviceRead: true, Names: map[wgtypes.Key]string{kA: "a", kB: "b"},
		Device: []wgtypes.Peer{
			{PublicKey: kA, ReceiveBytes: 5, TransmitBytes: 6, LastHandshakeTime: now},
			{PublicKey: kB},
			{PublicKey: kX, ReceiveBytes: 1}, // no MeshPeer names it
		},
		Probes: map[string]probe.State{"a": {Probed: true, Reachable: true, RTT: 3 * time.Millisecond, LastAnswer: now}, "b": {Probed: true}}}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, PerPeerMetrics{Enabled: true})
	m.setPeers(v)
	fams := gathered(t, reg)
	got := map[string]map[string]float64{}
	for _, name := range perPeerFamilies {
		got[name] = map[string]float64{}
		for _, s := range fams[name].GetMetric() {
			val := s.GetGauge().GetValue()
			if s.GetCounter() != nil {
				val = s.GetCounter().GetValue()
			}
			got[name][s.GetLabel()[0].GetValue()] = val
		}
	}
	want := map[string]map[string]float64{
		"wgmesh_peer_reachable":                        {"a": 1, "b": 0},
		"wgmesh_peer_rtt_seconds":                      {"a": 0.003},
		"wgmesh_peer_last_handshake_timestamp_seconds": {"a": float64(now.Unix()), "b": 0, kX.String(): 0},
		"wgmesh_peer_receive_bytes_total":              {"a": 5, "b": 0, kX.String(): 1},
		"wgmesh_peer_transmit_bytes_total":             {"a": 6, "b": 0, kX.String(): 0},
	}
	for name, w := range want {
		if fmt.Sprint(got[name]) != fmt.Sprint(w) {
			t.Errorf("%s = %v, want %v", name, got[name], w)
		}
	}
	// b never handshook: the oldest handshake among probed peers is "never".
	if got := value(t, fams, "wgmesh_peers_oldest_handshake_timestamp_seconds"); got != 0 {
		t.Errorf("wgmesh_peers_oldest_handshake_timestamp_seconds = %v, want 0 (b never handshook)", got)
	}
	// Without probes there is no probed peer, so no oldest handshake.
	v.Probes = nil
	m.setPeers(v)
	if mf := gathered(t, reg)["wgmesh_peers_oldest_handshake_timestamp_seconds"]; mf != nil {
		t.Errorf("probes off: wgmesh_peers_oldest_handshake_timestamp_seconds = %v, want none", mf)
	}
}

// TestByteTotalsNeverGoDown: the totals over all peers are counters, so a
// peer that leaves keeps its bytes in them, a peer whose counters restart
// (removed and added again) does not take them back, and a reconcile that
// could not read the device changes nothing.
func TestByteTotalsNeverGoDown(t *testing.T) {
	kA, kB := wgtypes.Key{1}, wgtypes.Key{2}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, PerPeerMetrics{})
	for i, step := range []struct {
		what   string
		view   peerView
		rx, tx float64
	}{
		{"two peers", peerView{DeviceRead: true, Device: []wgtypes.Peer{{PublicKey: kA, ReceiveBytes: 100, TransmitBytes: 10}, {PublicKey: kB, ReceiveBytes: 50, TransmitBytes: 5}}}, 150, 15},
		{"the device unreadable", peerView{}, 150, 15},
		{"b left", peerView{DeviceRead: true, Device: []wgtypes.Peer{{PublicKey: kA, ReceiveBytes: 120, TransmitBytes: 12}}}, 170, 17},
		{"b back, counting from 0", peerView{DeviceRead: true, Device: []wgtypes.Peer{{PublicKey: kA, ReceiveBytes: 120, TransmitBytes: 12}, {PublicKey: kB, ReceiveBytes: 1}}}, 171, 17},
		{"a's counters restarted", peerView{DeviceRead: true, Device: []wgtypes.Peer{{PublicKey: kA, ReceiveBytes: 2, TransmitBytes: 1}, {PublicKey: kB, ReceiveBytes: 1}}}, 173, 18},
		{"no peers", peerView{DeviceRead: true}, 173, 18},
	} {
		m.setPeers(step.view)
		fams := gathered(t, reg)
		if rx, tx := value(t, fams, "wgmesh_receive_bytes_total"), value(t, fams, "wgmesh_transmit_bytes_total"); rx != step.rx || tx != step.tx {
			t.Errorf("step %d, %s: received %v, sent %v; want %v, %v", i, step.what, rx, tx, step.rx, step.tx)
		}
	}
}

// TestMetricNames: every agent and probe metric, per-peer ones included,
// follows Prometheus' naming conventions.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg, PerPeerMetrics{Enabled: true})
	pm := probe.NewMetrics(reg)
	m.setPeers(meshView(3, time.Now()))
	m.setSysctls([]sysctl.Result{{Key: "net.ipv4.ip_forward", Current: "1"}})
	m.ReconcileErrors.WithLabelValues("kernel")
	m.setPaths([]mesh.Peer{{Name: "a", Path: paths.KindPrivate}, {Name: "b", Path: paths.KindPrivate}, {Name: "c", Path: paths.KindRelayNeeded}})
	pm.RTT.Observe(0.001)
	fams := gathered(t, reg)
	for _, name := range append(slices.Clone(perPeerFamilies), "wgmesh_sysctl", "wgmesh_reconcile_errors_total", "wgmesh_peer_probe_rtt_seconds", "wgmesh_peer_paths") {
		if fams[name] == nil {
			t.Errorf("%s not gathered: the names check would miss it", name)
		}
	}
	metricnames.Check(t, reg, "")
	if mf := fams["wgmesh_peer_paths"]; mf == nil || len(mf.GetMetric()) != len(paths.Kinds) {
		t.Errorf("wgmesh_peer_paths: %v, want one series per path kind (%d)", mf, len(paths.Kinds))
	}
}
