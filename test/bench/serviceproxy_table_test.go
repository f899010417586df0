package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// Targets of the service NAT issue (wgmesh against kube-proxy).
const (
	targetFullSyncRatio = 0.5                   // full sync at most 0.5x kube-proxy's
	targetChange        = 20 * time.Millisecond // one change at 10,000 Services
	targetConnectGrowth = 1.1                   // connect at 10,000 at most 1.1x that at 100
	targetRSSRatio      = 1.0                   // RSS not above kube-proxy's
)

type tableRow struct{ what, kp, ours, ratio, target string }

// printServiceProxyTable prints both proxies side by side with ratios
// (wgmesh / kube-proxy) and targets, and reports the main figures as
// benchmark metrics.
func printServiceProxyTable(b *testing.B, sizes []int, results map[string]map[int]*proxyResult) {
	kp, ours := results["kube-proxy"], results["wgmesh"]
	get := func(m map[int]*proxyResult, n int) *proxyResult {
		if m == nil {
			return nil
		}
		return m[n]
	}
	var rows []tableRow
	add := func(what string, n int, val func(*proxyResult) (float64, string), target func(ratio, oursVal float64) string) {
		k, o := get(kp, n), get(ours, n)
		row := tableRow{what: what, kp: "-", ours: "not available"}
		var kv, ov float64
		if k != nil && k.failed != "" {
			row.kp, k = "failed", nil
		}
		if o != nil && o.failed != "" {
			row.ours, o = "failed", nil
		}
		if k != nil {
			kv, row.kp = val(k)
		}
		if o != nil {
			ov, row.ours = val(o)
		}
		// No ratio where either side measured nothing (no nft child, no sync).
		if k != nil && o != nil && kv > 0 && ov > 0 {
			row.ratio = fmt.Sprintf("%.2fx", ov/kv)
			if target != nil {
				row.target = target(ov/kv, ov)
			}
		} else if target != nil {
			row.target = target(-1, -1)
		}
		rows = append(rows, row)
	}
	ratioTarget := func(limit float64) func(float64, float64) string {
		return func(ratio, _ float64) string {
			return verdict(fmt.Sprintf("<= %.1fx", limit), ratio >= 0, ratio <= limit)
		}
	}
	last := sizes[len(sizes)-1]
	for _, n := range sizes {
		ns := fmt.Sprintf("%d Services", n)
		var syncTarget, rssTarget func(float64, float64) string
		if n >= fullAt {
			syncTarget, rssTarget = ratioTarget(targetFullSyncRatio), ratioTarget(targetRSSRatio)
		}
		add("full sync (start -> all elements), "+ns, n, func(r *proxyResult) (float64, string) {
			return r.fullSync.Seconds(), fmt.Sprintf("%.2f s", r.fullSync.Seconds())
		}, syncTarget)
		add("  its own sync metric, summed", n, func(r *proxyResult) (float64, string) {
			return r.fullSyncMetric, fmt.Sprintf("%.3f s", r.fullSyncMetric)
		}, nil)
		add("peak RSS (VmHWM), "+ns, n, func(r *proxyResult) (float64, string) {
			return float64(r.rssKiB), mib(r.rssKiB)
		}, rssTarget)
		add("  its nft runs' peak RSS (largest)", n, func(r *proxyResult) (float64, string) {
			return float64(r.childRSSKiB), mib(r.childRSSKiB)
		}, nil)
		if n >= fullAt {
			var changeTarget func(float64, float64) string
			if n == last && n >= 10000 {
				changeTarget = func(_ float64, oursP99 float64) string {
					return verdict(fmt.Sprintf("p99 <= %s", targetChange), oursP99 >= 0, time.Duration(oursP99*float64(time.Millisecond)) <= targetChange)
				}
			}
			// A Service create waits for the API server to allocate its
			// ClusterIP (an IPAddress object, then the Service): tens of
			// milliseconds at 10,000 Services, before any proxy hears of
			// it. The goal is on what comes after the call returned.
			add("Service create -> element, p50 / p99, "+ns, n, func(r *proxyResult) (float64, string) {
				return ms(percentile(r.svcChange, 99)), fmt.Sprintf("%s / %s%s", fmtMS(percentile(r.svcChange, 50)), fmtMS(percentile(r.svcChange, 99)), timeouts(r.svcChange))
			}, nil)
			add("  of which the create call (API server), p50 / p99", n, func(r *proxyResult) (float64, string) {
				return ms(percentile(r.svcAPI, 99)), fmt.Sprintf("%s / %s", fmtMS(percentile(r.svcAPI, 50)), fmtMS(percentile(r.svcAPI, 99)))
			}, nil)
			add("  after the create call returned, p50 / p99", n, func(r *proxyResult) (float64, string) {
				after := afterCall(r.svcChange, r.svcAPI)
				return ms(percentile(after, 99)), fmt.Sprintf("%s / %s%s", fmtMS(percentile(after, 50)), fmtMS(percentile(after, 99)), timeouts(after))
			}, changeTarget)
			add("endpoint replaced -> traffic, p50 / p99, "+ns, n, func(r *proxyResult) (float64, string) {
				return ms(percentile(r.epChange, 99)), fmt.Sprintf("%s / %s%s", fmtMS(percentile(r.epChange, 50)), fmtMS(percentile(r.epChange, 99)), timeouts(r.epChange))
			}, changeTarget)
			add("  of which the update call (API server), p50 / p99", n, func(r *proxyResult) (float64, string) {
				return ms(percentile(r.epAPI, 99)), fmt.Sprintf("%s / %s", fmtMS(percentile(r.epAPI, 50)), fmtMS(percentile(r.epAPI, 99)))
			}, nil)
			add("no-op resync: CPU per minute idle, "+ns, n, func(r *proxyResult) (float64, string) {
				perMin := float64(r.quietCPU) * float64(time.Minute) / float64(r.quiet)
				return perMin, fmtMS(time.Duration(perMin))
			}, nil)
			add("  syncs in the window, mean (own metric)", n, func(r *proxyResult) (float64, string) {
				if r.quietSyncs == 0 {
					return 0, "0 syncs"
				}
				mean := r.quietSyncSum / r.quietSyncs
				return mean, fmt.Sprintf("%.0f, %.1f ms", r.quietSyncs, mean*1000)
			}, nil)
			add("forced no-op full resync (Node zone label): CPU", n, func(r *proxyResult) (float64, string) {
				if r.forcedSyncs == 0 {
					return 0, "no sync"
				}
				return ms(r.forcedCPU), fmtMS(r.forcedCPU)
			}, nil)
			add("  syncs, summed duration (own metric)", n, func(r *proxyResult) (float64, string) {
				return r.forcedSyncSum, fmt.Sprintf("%.0f, %.1f ms", r.forcedSyncs, r.forcedSyncSum*1000)
			}, nil)
		}
		add("TCP connect p50 / p99, "+ns, n, func(r *proxyResult) (float64, string) {
			return ms(percentile(r.connect, 50)), fmt.Sprintf("%s / %s", fmtUS(percentile(r.connect, 50)), fmtUS(percentile(r.connect, 99)))
		}, nil)
	}
	if first := sizes[0]; len(sizes) > 1 {
		rows = append(rows, growthRow(fmt.Sprintf("connect p50 at %d / at %d Services", last, first), get(kp, last), get(kp, first), get(ours, last), get(ours, first)))
	}

	w := tabwriter.NewWriter(os.Stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(w, "\nService proxies side by side (one API server, same objects, one proxy at a time; %d endpoints per Service; %d connects; %s quiet window):\n", endpointsPerService, connects, firstQuiet(results))
	fmt.Fprintln(w, "\tkube-proxy (nftables)\twgmesh\twgmesh/kube-proxy\ttarget")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.what, r.kp, r.ours, r.ratio, r.target)
	}
	w.Flush()
	for _, name := range []string{"kube-proxy", "wgmesh"} {
		for _, n := range sizes {
			if r := get(results[name], n); r != nil && r.failed != "" {
				fmt.Printf("%s at %d Services failed: %s\n", name, n, r.failed)
			}
		}
	}
	fmt.Println()

	for name, m := range results {
		short := strings.ReplaceAll(name, "-", "")
		for n, r := range m {
			if r.failed != "" {
				continue
			}
			b.ReportMetric(r.fullSync.Seconds(), fmt.Sprintf("%s-fullsync-%d-s", short, n))
			b.ReportMetric(float64(r.rssKiB)/1024, fmt.Sprintf("%s-rss-%d-MiB", short, n))
			b.ReportMetric(ms(percentile(r.connect, 50)), fmt.Sprintf("%s-connect-p50-%d-ms", short, n))
			if len(r.svcChange) > 0 {
				b.ReportMetric(ms(percentile(r.svcChange, 99)), fmt.Sprintf("%s-svcchange-p99-%d-ms", short, n))
				b.ReportMetric(ms(percentile(r.epChange, 99)), fmt.Sprintf("%s-epchange-p99-%d-ms", short, n))
			}
		}
	}
}

// growthRow compares connect latency at the largest and the smallest count,
// for each proxy; the target applies to wgmesh's own growth.
func growthRow(what string, kpLast, kpFirst, oLast, oFirst *proxyResult) tableRow {
	row := tableRow{what: what, kp: "-", ours: "not available"}
	for _, r := range []**proxyResult{&kpLast, &kpFirst, &oLast, &oFirst} {
		if *r != nil && (*r).failed != "" {
			*r = nil
		}
	}
	g := func(last, first *proxyResult) float64 {
		return float64(percentile(last.connect, 50)) / float64(percentile(first.connect, 50))
	}
	if kpLast != nil && kpFirst != nil {
		row.kp = fmt.Sprintf("%.2fx", g(kpLast, kpFirst))
	}
	ok := oLast != nil && oFirst != nil
	var og float64
	if ok {
		og = g(oLast, oFirst)
		row.ours = fmt.Sprintf("%.2fx", og)
	}
	row.target = verdict(fmt.Sprintf("wgmesh <= %.1fx", targetConnectGrowth), ok, og <= targetConnectGrowth)
	return row
}

// timeouts says how many of ds hit changeTimeout, if any.
func timeouts(ds []time.Duration) string {
	n := 0
	for _, d := range ds {
		if d >= changeTimeout {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d of %d timed out at %s)", n, len(ds), changeTimeout)
}

func verdict(target string, measured, met bool) string {
	switch {
	case !measured:
		return target
	case met:
		return target + " met"
	default:
		return target + " MISSED"
	}
}

func firstQuiet(results map[string]map[int]*proxyResult) time.Duration {
	for _, m := range results {
		for _, r := range m {
			if r.quiet > 0 {
				return r.quiet
			}
		}
	}
	return 0
}

func ms(d time.Duration) float64   { return float64(d) / float64(time.Millisecond) }
func fmtMS(d time.Duration) string { return fmt.Sprintf("%.1f ms", ms(d)) }
func fmtUS(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}
func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

// afterCall is, per timed change, how long after the API call returned the
// proxy had programmed it (0 when it had before: the watch event can come
// before the call's answer).
func afterCall(total, call []time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(total))
	for i, d := range total {
		if d >= changeTimeout {
			out = append(out, d) // timed out: stays counted as such
			continue
		}
		if i < len(call) {
			d -= call[i]
		}
		out = append(out, max(d, 0))
	}
	return out
}
