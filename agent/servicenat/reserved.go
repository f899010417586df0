package servicenat

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
)

// Reserved are the addresses of the cluster's own plumbing, which no
// externalIP or load-balancer IP may take: a Service that names one would
// otherwise capture its traffic on every node (CVE-2020-8554's class: the
// API server, a kubelet, another Service's ClusterIP, a pod). They are
// refused when converted and reported on the Service; kube-proxy leaves this
// to an admission plugin users must remember to turn on.
type Reserved struct {
	prefixes []reservedPrefix
	addrs    map[netip.Addr]string
}

type reservedPrefix struct {
	p    netip.Prefix
	what string
}

// AddPrefix reserves every address of p; what says whose they are ("the
// service CIDR 10.96.0.0/12").
func (r *Reserved) AddPrefix(p netip.Prefix, what string) {
	r.prefixes = append(r.prefixes, reservedPrefix{p.Masked(), what})
}

// AddAddr reserves one address; the first reason given is kept.
func (r *Reserved) AddAddr(a netip.Addr, what string) {
	if !a.IsValid() {
		return
	}
	if r.addrs == nil {
		r.addrs = map[netip.Addr]string{}
	}
	if _, ok := r.addrs[a.Unmap()]; !ok {
		r.addrs[a.Unmap()] = what
	}
}

// Merge adds every reservation of o.
func (r *Reserved) Merge(o Reserved) {
	r.prefixes = append(r.prefixes, o.prefixes...)
	for _, a := range sortedAddrs(o.addrs) {
		r.AddAddr(a, o.addrs[a])
	}
}

// Lookup says whose a is, if it is reserved.
func (r Reserved) Lookup(a netip.Addr) (string, bool) {
	a = a.Unmap()
	if what, ok := r.addrs[a]; ok {
		return what, true
	}
	for _, p := range r.prefixes {
		if p.p.Contains(a) {
			return p.what, true
		}
	}
	return "", false
}

// Equal reports whether r and o reserve the same addresses for the same
// reasons (in any order).
func (r Reserved) Equal(o Reserved) bool {
	return maps.Equal(r.addrs, o.addrs) && slices.Equal(r.sortedPrefixes(), o.sortedPrefixes())
}

func (r Reserved) sortedPrefixes() []string {
	out := make([]string, len(r.prefixes))
	for i, p := range r.prefixes {
		out[i] = p.p.String() + " " + p.what
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Len is the number of reserved single addresses and prefixes (metrics).
func (r Reserved) Len() int { return len(r.addrs) + len(r.sortedPrefixes()) }

func sortedAddrs(m map[netip.Addr]string) []netip.Addr {
	out := slices.Collect(maps.Keys(m))
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// externalRefusal is the reason an external address (spec.externalIPs[i],
// status.loadBalancer.ingress[i].ip) is not programmed, or "".
func (r Reserved) externalRefusal(a netip.Addr) string {
	what, ok := r.Lookup(a)
	if !ok {
		return ""
	}
	return fmt.Sprintf("is %s: a Service may not take it as an external address (it would capture that traffic on every node); not programmed", what)
}
