package wireguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Resolver turns host:port endpoints into UDP addresses. DNS names are
// re-resolved after TTL; when a lookup fails the last good address is kept
// (and the error still returned, so that it is reported).
type Resolver struct {
	TTL    time.Duration
	Lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	Now    func() time.Time

	mu    sync.Mutex
	cache map[string]entry
}

type entry struct {
	addr    *net.UDPAddr // last good address, nil if never resolved
	err     error        // last lookup error, nil on success
	expires time.Time
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Resolve returns the UDP address for endpoint (host:port).
func (r *Resolver) Resolve(ctx context.Context, endpoint string) (*net.UDPAddr, error) {
	host, portStr, err := net.SplitHostPort(endpoint)
	if err != nil {
		return nil, fmt.Errorf("endpoint %q is not host:port: %w", endpoint, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("endpoint %q: port %q is not in 1-65535", endpoint, portStr)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(port))), nil
	}
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]entry{}
	}
	e, ok := r.cache[endpoint]
	r.mu.Unlock()
	if ok && r.now().Before(e.expires) {
		// Failures are cached too, so that an unresolvable name does not
		// slow every reconcile down by a lookup timeout.
		return e.addr, e.err
	}
	lookup := r.Lookup
	if lookup == nil {
		lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		}
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	addrs, err := lookup(lctx, host)
	if err == nil && len(addrs) == 0 {
		err = fmt.Errorf("no addresses")
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = 30 * time.Second
	}
	if err != nil {
		err = fmt.Errorf("cannot resolve endpoint %q: %w", endpoint, err)
		r.mu.Lock()
		r.cache[endpoint] = entry{addr: e.addr, err: err, expires: r.now().Add(ttl)}
		r.mu.Unlock()
		return e.addr, err
	}
	best := addrs[0]
	for _, a := range addrs {
		if a.Unmap().Is4() {
			best = a
			break
		}
	}
	addr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(best.Unmap(), uint16(port)))
	r.mu.Lock()
	r.cache[endpoint] = entry{addr: addr, expires: r.now().Add(ttl)}
	r.mu.Unlock()
	return addr, nil
}

// Forget drops cache entries for endpoints not in keep.
func (r *Resolver) Forget(keep map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.cache {
		if !keep[k] {
			delete(r.cache, k)
		}
	}
}
