package policy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/netpol"
	"github.com/wgmesh/wgmesh/podnet"
)

// The CNI hook's server: wgmesh-guard's policy role asks, at a pod's ADD,
// that the pod be judged (cni/guard.PolicyRequest); the agent reads the Pod
// (its cache, else the API server), puts it in the index with the
// addresses the bridge plugin gave it, and answers once a sync that
// includes it is in the kernel. Until then, and when the agent cannot
// answer, the pod's addresses are not in policy-programmed: it is denied.
//
// The socket is a new way into the agent: only root on the host may
// connect (mode 0600 and the peer's credentials), a request is small and
// checked (names, addresses inside this node's pod CIDRs, the pod on this
// node with that UID per the API server), and it can only make the agent
// program a pod as its API objects say.

// Reasons of the CNI hook's Events (on the Node).
const (
	// ReasonPodNotProgrammed: a pod's policy could not be programmed
	// before its ADD returned; it stays denied until the Pod watch
	// programs it.
	ReasonPodNotProgrammed = "PodPolicyNotProgrammed"
)

const (
	// judgeTimeout bounds one request inside the agent, below the
	// plugin's wait (guard.DefaultPolicyTimeout) so that the plugin hears
	// why.
	judgeTimeout = guard.DefaultPolicyTimeout - 2*time.Second
	// cniRecordTTL: how long addresses from a CNI ADD win over different
	// ones in the Pod's status (the kubelet reports a new sandbox's
	// addresses shortly after its ADD).
	cniRecordTTL = time.Minute
)

// cniRecord is what a CNI ADD said of a local pod.
type cniRecord struct {
	uid types.UID
	ips []netip.Addr
	at  time.Time
	// byUID: the runtime named the pod's UID, so events about another pod
	// of the name are an older one's.
	byUID bool
}

// errRefused marks a request the agent will not serve as asked.
type errRefused struct{ error }

// listen makes the unix socket at path, root's only.
func (c *Controller) listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("network policy socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("network policy socket %s: removing the last one: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("network policy socket %s: %w", path, err)
	}
	// Made with the umask (connecting needs write permission); only root
	// from now on.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("network policy socket %s: %w", path, err)
	}
	return l, nil
}

// serve answers requests on l until ctx ends, then closes it.
func (c *Controller) serve(ctx context.Context, l net.Listener) {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	c.o.Log.Info("serving the CNI plugin's requests", "socket", l.Addr().String())
	for {
		conn, err := l.Accept()
		if err != nil {
			if ctx.Err() == nil {
				c.o.Log.Error(err, "the CNI plugin's requests are no longer served: new pods stay denied until the Pod watch programs them")
				c.setSocketErr(fmt.Errorf("network policy: the CNI hook is no longer served: %w", err))
			}
			return
		}
		go c.handle(ctx, conn.(*net.UnixConn))
	}
}

// handle answers one request.
func (c *Controller) handle(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, judgeTimeout)
	defer cancel()
	_ = conn.SetDeadline(start.Add(judgeTimeout + time.Second))
	// Read first (at most MaxPolicyRequest), so that a refused peer hears
	// why rather than a reset.
	var req guard.PolicyRequest
	err := json.NewDecoder(bufio.NewReader(io.LimitReader(conn, guard.MaxPolicyRequest))).Decode(&req)
	if err != nil {
		err = errRefused{fmt.Errorf("bad request: %w", err)}
	}
	if perr := peerIsRoot(conn); perr != nil {
		err = perr
	}
	if err == nil {
		err = c.Judge(ctx, req)
	}
	result := ResultProgrammed
	var refused errRefused
	switch {
	case errors.As(err, &refused):
		result = ResultRefused
	case err != nil:
		result = ResultFailed
	}
	c.metrics.CNIRequests.WithLabelValues(result).Inc()
	c.metrics.CNIRequestDuration.Observe(time.Since(start).Seconds())
	var resp guard.PolicyResponse
	log := c.o.Log.WithValues("pod", req.Namespace+"/"+req.Name, "uid", req.UID, "ips", req.IPs, "result", result, "duration", time.Since(start))
	if err != nil {
		resp.Refused = result == ResultRefused
		resp.Error = fmt.Sprintf("wgmesh agent on node %s: pod %s/%s not programmed: %v", c.o.NodeName, req.Namespace, req.Name, err)
		log.Error(err, "CNI request not served; the pod stays denied until its policy is programmed")
		c.nodeEvent(corev1.EventTypeWarning, ReasonPodNotProgrammed, "%s; it stays denied until the Pod watch programs it", resp.Error)
	} else {
		log.V(1).Info("CNI request served")
	}
	_ = json.NewEncoder(conn).Encode(resp)
}

// peerIsRoot checks the connecting process' credentials.
func peerIsRoot(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) { cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("reading the peer's credentials: %w", credErr)
	}
	if cred.Uid != 0 {
		return errRefused{fmt.Errorf("the peer (pid %d) runs as uid %d: only root may ask", cred.Pid, cred.Uid)}
	}
	return nil
}

// Judge programs the pod req names with the addresses in req, as its API
// object says, and returns once a sync including it is in the kernel (or
// ctx ends). An errRefused: the request is wrong (names, addresses, the
// pod not on this node).
func (c *Controller) Judge(ctx context.Context, req guard.PolicyRequest) error {
	if errs := validation.IsDNS1123Label(req.Namespace); len(errs) > 0 {
		return errRefused{fmt.Errorf("namespace %q: %v", req.Namespace, errs)}
	}
	if errs := validation.IsDNS1123Subdomain(req.Name); len(errs) > 0 {
		return errRefused{fmt.Errorf("pod name %q: %v", req.Name, errs)}
	}
	select {
	case <-c.started:
	case <-ctx.Done():
		return fmt.Errorf("the agent's caches are not synced yet: %w", ctx.Err())
	}
	ips, err := c.checkIPs(req.IPs)
	if err != nil {
		return err
	}
	pod, err := c.getPod(ctx, req)
	if err != nil {
		return err
	}
	switch {
	case pod.Spec.NodeName != c.o.NodeName:
		return errRefused{fmt.Errorf("the pod (uid %s) is bound to node %q, not this one (%s)", pod.UID, pod.Spec.NodeName, c.o.NodeName)}
	case pod.Spec.HostNetwork:
		return errRefused{errors.New("the pod has hostNetwork: it has no pod address to judge")}
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return errRefused{fmt.Errorf("the pod has finished (%s)", pod.Status.Phase)}
	}
	m := netpol.PodFromAPI(pod)
	m.IPs = ips
	c.mu.Lock()
	if _, gone := c.deleted[pod.UID]; gone {
		// Read just before its deletion, which the watch has brought since:
		// putting it in now would leave it there for good.
		c.mu.Unlock()
		return errRefused{fmt.Errorf("the pod (uid %s) has been deleted", pod.UID)}
	}
	key := m.Key()
	c.claim(key, m.UID, ips)
	if req.UID != "" {
		r := c.cni[key]
		r.byUID = true
		c.cni[key] = r
	}
	c.ix.SetPod(m)
	c.local[key] = true
	// Dirty with the count, so that a sync that sees the count renders.
	c.judged++
	want := c.judged
	c.dirty = true
	if c.since.IsZero() {
		c.since = time.Now()
	}
	c.mu.Unlock()
	c.run.Wake("cni")
	return c.waitSynced(ctx, want)
}

// checkIPs: one or two addresses, at most one per family, each a pod
// address of this node (in its pod CIDRs, neither the network address nor
// the bridge gateway).
func (c *Controller) checkIPs(in []netip.Addr) ([]netip.Addr, error) {
	c.mu.Lock()
	cidrs := c.podCIDRs
	c.mu.Unlock()
	if len(cidrs) == 0 {
		return nil, fmt.Errorf("node %s has no pod CIDRs yet", c.o.NodeName)
	}
	if len(in) == 0 || len(in) > 2 {
		return nil, errRefused{fmt.Errorf("%d addresses: want one or two (one per family)", len(in))}
	}
	var out []netip.Addr
	for _, a := range in {
		a = a.Unmap()
		ok := false
		for _, p := range cidrs {
			gw, _ := podnet.Gateway(p)
			if p.Contains(a) && a != p.Masked().Addr() && a != gw.Addr() {
				ok = true
			}
		}
		if !ok || a.Zone() != "" {
			return nil, errRefused{fmt.Errorf("address %s is not a pod address of node %s (pod CIDRs %v)", a, c.o.NodeName, cidrs)}
		}
		if slices.ContainsFunc(out, func(b netip.Addr) bool { return b.Is4() == a.Is4() }) {
			return nil, errRefused{fmt.Errorf("two addresses of one family (%v): want at most one per family", in)}
		}
		out = append(out, a)
	}
	return out, nil
}

// mirrorAnnotation is on a static pod's mirror Pod: the kubelet's UID of
// the static pod, which the runtime passes as K8S_POD_UID (the mirror Pod
// has a UID of its own).
const mirrorAnnotation = "kubernetes.io/config.mirror"

// isPod says whether p is the pod the runtime named by uid ("" any).
func isPod(p *corev1.Pod, uid string) bool {
	return uid == "" || p.UID == types.UID(uid) || p.Annotations[mirrorAnnotation] == uid
}

// getPod is the pod from the cache, or from the API server when the cache
// does not have it yet, has an older pod of that name, or has a mirror Pod
// (the cache keeps no annotations).
func (c *Controller) getPod(ctx context.Context, req guard.PolicyRequest) (*corev1.Pod, error) {
	if c.pods != nil {
		if p, err := c.pods.Pods(req.Namespace).Get(req.Name); err == nil && isPod(p, req.UID) {
			return p, nil
		}
	}
	if c.apiReader == nil {
		return nil, errRefused{fmt.Errorf("pod %s/%s is not known", req.Namespace, req.Name)}
	}
	// A list by name: the agent may list Pods, not get them (the same read).
	var list corev1.PodList
	if err := c.apiReader.List(ctx, &list, client.InNamespace(req.Namespace), client.MatchingFields{"metadata.name": req.Name}); err != nil {
		return nil, fmt.Errorf("reading pod %s/%s from the API server: %w", req.Namespace, req.Name, err)
	}
	for i := range list.Items {
		if p := &list.Items[i]; p.Name == req.Name && isPod(p, req.UID) {
			return p, nil
		}
	}
	if req.UID != "" {
		return nil, errRefused{fmt.Errorf("no pod %s/%s with uid %s in the API server", req.Namespace, req.Name, req.UID)}
	}
	return nil, errRefused{fmt.Errorf("no pod %s/%s in the API server", req.Namespace, req.Name)}
}

// claim records that a CNI ADD gave key (uid) the addresses ips: they are
// its, and no longer any other local pod's (an address reused before the
// old pod's deletion reached the cache), until key goes. mu held.
func (c *Controller) claim(key string, uid types.UID, ips []netip.Addr) {
	if old, ok := c.cni[key]; ok {
		for _, a := range old.ips {
			if c.owner[a] == key {
				delete(c.owner, a)
			}
		}
	}
	c.cni[key] = cniRecord{uid: uid, ips: slices.Clone(ips), at: time.Now()}
	for _, a := range ips {
		if prev, ok := c.owner[a]; ok && prev != key {
			if r, ok := c.cni[prev]; ok {
				r.ips = slices.DeleteFunc(slices.Clone(r.ips), func(b netip.Addr) bool { return b == a })
				c.cni[prev] = r
			}
		}
		c.owner[a] = key
	}
	for other := range c.local {
		if other == key {
			continue
		}
		if p, ok := c.ix.Pod(other); ok && slices.ContainsFunc(p.IPs, func(a netip.Addr) bool { return slices.Contains(ips, a) }) {
			q := *p
			q.IPs = slices.DeleteFunc(slices.Clone(p.IPs), func(a netip.Addr) bool { return slices.Contains(ips, a) })
			c.ix.SetPod(&q)
		}
	}
}

// forget drops a local pod's CNI record. mu held.
func (c *Controller) forget(key string) {
	if r, ok := c.cni[key]; ok {
		for _, a := range r.ips {
			if c.owner[a] == key {
				delete(c.owner, a)
			}
		}
		delete(c.cni, key)
	}
}

// podIPs are the addresses a local pod from the API gets in the index: a
// CNI ADD's while the status has none or others not yet reported (for
// cniRecordTTL), else the status' (which then become the record's), less
// those a CNI ADD gave another pod since. mu held.
func (c *Controller) podIPs(m *netpol.Pod) []netip.Addr {
	key := m.Key()
	ips := m.IPs
	if r, ok := c.cni[key]; ok {
		switch {
		case r.uid != m.UID:
			c.forget(key)
		case len(ips) == 0 || !sameAddrs(ips, r.ips) && time.Since(r.at) < cniRecordTTL:
			ips = r.ips
		case !sameAddrs(ips, r.ips):
			c.claim(key, m.UID, ips)
		}
	}
	return slices.DeleteFunc(slices.Clone(ips), func(a netip.Addr) bool {
		owner, ok := c.owner[a]
		return ok && owner != key
	})
}

func sameAddrs(a, b []netip.Addr) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(x netip.Addr) bool { return !slices.Contains(b, x) })
}

// waitSynced waits until a sync that began after the want'th judged pod
// entered the index has programmed the kernel.
func (c *Controller) waitSynced(ctx context.Context, want uint64) error {
	for {
		c.stateMu.Lock()
		done, ch, lastErr := c.doneJudged, c.syncedCh, c.lastErr
		c.stateMu.Unlock()
		if done >= want {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("not programmed in time: the last sync failed: %w", lastErr)
			}
			return fmt.Errorf("not programmed in time: %w", ctx.Err())
		}
	}
}

// deletedTTL is how long a deleted pod's UID is remembered: far longer than
// a CNI request takes (guard.DefaultPolicyTimeout).
const deletedTTL = 10 * time.Minute

// tombstone remembers a deleted pod's UID and forgets those older than
// deletedTTL. Callers hold c.mu.
func (c *Controller) tombstone(uid types.UID, now time.Time) {
	if uid == "" {
		return
	}
	for u, t := range c.deleted {
		if now.Sub(t) > deletedTTL {
			delete(c.deleted, u)
		}
	}
	c.deleted[uid] = now
}
