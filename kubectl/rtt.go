package kubectl

import (
	"bufio"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// rttMetric is the agents' gauge of the last probe's round trip per peer,
// which they export only with --per-peer-metrics (agent.perPeerMetrics), for
// at most --per-peer-metrics-limit peers; droppedMetric counts the others.
const (
	rttMetric     = "wgmesh_peer_rtt_seconds"
	droppedMetric = "wgmesh_peer_metrics_dropped"
)

// Reading the agents' metrics: at most this many at once, each bounded.
const (
	rttParallel = 16
	rttTimeout  = 5 * time.Second
)

// fetchRTT reads wgmesh_peer_rtt_seconds from every agent pod through the
// API server's pod proxy (pods/proxy; the agents run on the host network
// and the chart names their metrics port "metrics"). It returns RTT by
// node and peer, and notes on what could not be read: a picture without
// RTT is still a picture.
func fetchRTT(ctx context.Context, cs kubernetes.Interface) (map[string]map[string]float64, []string) {
	sel := labels.SelectorFromSet(labels.Set(agentSelector)).String()
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, []string{fmt.Sprintf("RTT unavailable: listing the agent pods (%s): %v", sel, err)}
	}
	type target struct {
		node, ns, pod string
		port          int32
	}
	var targets []target
	var notes []string
	for _, p := range pods.Items {
		if p.Spec.NodeName == "" || p.Status.Phase != corev1.PodRunning {
			continue
		}
		port := metricsPort(&p)
		if port == 0 {
			notes = append(notes, fmt.Sprintf("RTT unavailable from %s: agent pod %s/%s has no port named \"metrics\" (agent.metricsBindAddress \"0\"?)", p.Spec.NodeName, p.Namespace, p.Name))
			continue
		}
		targets = append(targets, target{node: p.Spec.NodeName, ns: p.Namespace, pod: p.Name, port: port})
	}
	if len(targets) == 0 && len(notes) == 0 {
		return nil, []string{fmt.Sprintf("RTT unavailable: no running wgmesh agent pods (%s); agents not installed by the chart?", sel)}
	}

	out := map[string]map[string]float64{}
	var mu sync.Mutex
	var failed []string
	capped := 0
	sem := make(chan struct{}, rttParallel)
	var wg sync.WaitGroup
	for _, t := range targets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			rctx, cancel := context.WithTimeout(ctx, rttTimeout)
			defer cancel()
			body, err := cs.CoreV1().Pods(t.ns).ProxyGet("http", t.pod, strconv.Itoa(int(t.port)), "metrics", nil).DoRaw(rctx)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, fmt.Sprintf("%s (pod %s/%s port %d): %v", t.node, t.ns, t.pod, t.port, err))
				return
			}
			if rtt := parseRTT(string(body)); len(rtt) > 0 {
				out[t.node] = rtt
			}
			if parseDropped(string(body)) > 0 {
				capped++
			}
		}()
	}
	wg.Wait()
	sort.Strings(failed)
	if len(failed) > 0 {
		shown := failed
		if len(shown) > 3 {
			shown = shown[:3]
		}
		notes = append(notes, fmt.Sprintf("RTT unavailable from %d of %d agents: %s", len(failed), len(targets), strings.Join(shown, "; ")))
	}
	if len(out) == 0 && len(failed) < len(targets) {
		notes = append(notes, "RTT unavailable: the agents export no "+rttMetric+": per-peer metrics are off (agent.perPeerMetrics=false, the default; set it to true), or so are reachability probes (--probe-interval=0)")
	}
	if capped > 0 {
		notes = append(notes, fmt.Sprintf("RTT missing for some peers of %d agents: they export per-peer series for at most agent.perPeerMetricsLimit peers (%s)", capped, droppedMetric))
	}
	return out, notes
}

// metricsPort is the pod's container port named "metrics", or 0.
func metricsPort(p *corev1.Pod) int32 {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "metrics" {
				return port.ContainerPort
			}
		}
	}
	return 0
}

// parseRTT reads wgmesh_peer_rtt_seconds{peer="..."} samples from the
// Prometheus text format.
func parseRTT(text string) map[string]float64 {
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, rttMetric+"{")
		if !ok {
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			continue
		}
		peer, ok := labelValue(rest[:end], "peer")
		if !ok {
			continue
		}
		fields := strings.Fields(rest[end+1:])
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || v < 0 {
			continue
		}
		out[peer] = v
	}
	return out
}

// parseDropped reads wgmesh_peer_metrics_dropped (an unlabelled gauge) from
// the Prometheus text format; 0 when absent.
func parseDropped(text string) float64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == droppedMetric {
			if v, err := strconv.ParseFloat(fields[1], 64); err == nil {
				return v
			}
		}
	}
	return 0
}

// labelValue finds name="value" in a label set (a="x",b="y").
func labelValue(set, name string) (string, bool) {
	for set != "" {
		eq := strings.IndexByte(set, '=')
		if eq < 0 || eq+1 >= len(set) || set[eq+1] != '"' {
			return "", false
		}
		key := strings.TrimSpace(set[:eq])
		// Find the closing quote, skipping escaped ones.
		i := eq + 2
		for ; i < len(set); i++ {
			if set[i] == '\\' {
				i++
				continue
			}
			if set[i] == '"' {
				break
			}
		}
		if i >= len(set) {
			return "", false
		}
		if key == name {
			v, err := strconv.Unquote(set[eq+1 : i+1])
			return v, err == nil
		}
		set = strings.TrimPrefix(set[i+1:], ",")
	}
	return "", false
}
