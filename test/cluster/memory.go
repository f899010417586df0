package cluster

import (
	"fmt"
	"sort"
	"strings"

	"github.com/wgmesh/wgmesh/test/proc"
)

// Memory is the resident memory of the cluster's processes, in bytes.
type Memory struct {
	// ControlPlane per component: etcd, kube-apiserver, kube-controller-manager,
	// wgmesh-operator.
	ControlPlane map[string]int64
	// Nodes per node: every process in the node's namespaces (agent, userspace WireGuard,
	// node runtime, ...), summed; NodeProcesses per node and command name.
	Nodes         map[string]int64
	NodeProcesses map[string]map[string]int64
}

// rss is pid's resident memory (VmRSS) in bytes, 0 when it cannot be read.
func rss(pid int) int64 {
	kib, err := proc.StatusKiB(pid, "VmRSS")
	if err != nil {
		return 0
	}
	return kib * 1024
}

// Memory measures the resident memory of the control plane and of each node now.
func (c *Cluster) Memory() Memory {
	m := Memory{ControlPlane: map[string]int64{}, Nodes: map[string]int64{}, NodeProcesses: map[string]map[string]int64{}}
	for _, p := range []*process{c.cp.etcd, c.cp.apiserver, c.cp.kcm, c.cp.scheduler, c.cp.operator} {
		if p != nil && p.running() {
			m.ControlPlane[p.name] = rss(p.pid())
		}
	}
	c.mu.Lock()
	nodes := append([]*Node(nil), c.Nodes...)
	c.mu.Unlock()
	for _, n := range nodes {
		pids, _ := n.Machine.PIDs()
		if n.real != nil {
			// Pods outside the node's namespaces are found through the node's cgroups.
			pids = uniquePIDs(append(pids, n.real.pids()...))
		}
		per := map[string]int64{}
		for _, pid := range pids {
			r := rss(pid)
			per[proc.Name(pid)] += r
			m.Nodes[n.Name] += r
		}
		m.NodeProcesses[n.Name] = per
	}
	return m
}

// String formats the measurement in MiB.
func (m Memory) String() string {
	mib := func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
	var b strings.Builder
	var total int64
	var names []string
	for k := range m.ControlPlane {
		names = append(names, k)
	}
	sort.Strings(names)
	b.WriteString("control plane:")
	for _, k := range names {
		fmt.Fprintf(&b, " %s %s,", k, mib(m.ControlPlane[k]))
		total += m.ControlPlane[k]
	}
	names = names[:0]
	for k := range m.Nodes {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		fmt.Fprintf(&b, "\nnode %s: %s (", k, mib(m.Nodes[k]))
		var ps []string
		for p := range m.NodeProcesses[k] {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		for i, p := range ps {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %s", p, mib(m.NodeProcesses[k][p]))
		}
		b.WriteString(")")
		total += m.Nodes[k]
	}
	fmt.Fprintf(&b, "\ntotal: %s", mib(total))
	return b.String()
}

func uniquePIDs(pids []int) []int {
	seen := map[int]bool{}
	out := pids[:0]
	for _, p := range pids {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}
