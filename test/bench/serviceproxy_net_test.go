package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/wait"
)

// Addresses inside each proxy's namespaces (the namespaces of the two proxies
// are separate, so they reuse them).
const (
	nodeClientIP    = "198.18.1.1" // the node's address towards the client; its InternalIP
	clientIP        = "198.18.1.2"
	nodeEndpointsIP = "198.18.2.1"
	endpointsIP     = "198.18.2.2"
)

// proxyNet is one proxy's world: a node namespace where the proxy runs and
// routes, a client namespace routed through it (like a pod), and an endpoint
// namespace holding the probe Services' endpoint addresses and a listener.
type proxyNet struct {
	node, client, endpoints *netns.NS
	closers                 []func()
}

// newProxyNet creates the namespaces wgm-bsp-<name>-{node,client,endpoints}
// and an API server forwarder in the node namespace (apiAddr, the envtest
// API server's 127.0.0.1:port, answers there too). Everything goes away with
// close, and with the test also when it fails.
func newProxyNet(tb testing.TB, name, apiAddr string) *proxyNet {
	tb.Helper()
	p := &proxyNet{}
	tb.Cleanup(p.close)
	prefix := "wgm-bsp-" + name + "-"
	for i, slot := range []**netns.NS{&p.node, &p.client, &p.endpoints} {
		n, err := netns.New(prefix + [...]string{"node", "client", "endpoints"}[i])
		if err != nil {
			tb.Fatal(err)
		}
		*slot = n
		p.closers = append(p.closers, func() { _ = n.Close() })
	}
	must(tb, netns.Veth(p.node, "to-client", p.client, "eth0", 0))
	must(tb, netns.Veth(p.node, "to-endpoints", p.endpoints, "eth0", 0))
	must(tb, netns.AddAddr(p.node, "to-client", nodeClientIP+"/24"))
	must(tb, netns.AddAddr(p.node, "to-endpoints", nodeEndpointsIP+"/24"))
	must(tb, netns.AddAddr(p.client, "eth0", clientIP+"/24"))
	must(tb, netns.AddRoute(p.client, "default", nodeClientIP, ""))
	must(tb, netns.AddAddr(p.endpoints, "eth0", endpointsIP+"/24"))
	eps := append(append(append([]netip.Addr{}, probeEPs...), switchEPs[:]...), changeEP)
	for _, a := range eps {
		must(tb, netns.AddAddr(p.endpoints, "eth0", a.String()+"/24"))
	}
	must(tb, netns.AddRoute(p.endpoints, "default", nodeEndpointsIP, ""))
	must(tb, p.node.Sysctl("net.ipv4.ip_forward", "1"))

	l, err := listenIn(p.endpoints, fmt.Sprintf("0.0.0.0:%d", endpointPort))
	must(tb, err)
	p.closers = append(p.closers, func() { l.Close() })
	go serveGreeting(l)

	fl, err := listenIn(p.node, apiAddr)
	must(tb, err)
	p.closers = append(p.closers, func() { fl.Close() })
	go forward(fl, apiAddr)
	return p
}

func (p *proxyNet) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// listenIn opens a TCP listener whose socket lives in ns.
func listenIn(ns *netns.NS, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() error {
		var err error
		l, err = net.Listen("tcp4", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s in %s: %w", addr, ns, err)
	}
	return l, nil
}

// dialIn returns a DialContext whose sockets live in ns.
func dialIn(ns *netns.NS) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// serveGreeting answers every connection with one byte, the last octet of the
// address it reached, so that a client sees which endpoint the DNAT chose.
func serveGreeting(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		if a, ok := c.LocalAddr().(*net.TCPAddr); ok {
			_, _ = c.Write([]byte{a.IP.To4()[3]})
		}
		c.Close()
	}
}

// forward relays connections accepted in a proxy's namespace to the same
// address in the host namespace, where envtest's API server listens.
func forward(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
			<-done
		}()
	}
}

// connectLatencies connects n times from the client namespace to addr and
// returns each connect's duration (the handshake through the proxy's DNAT),
// after warm-up connects that are not counted. The connects are blocking
// system calls on one thread, so that the Go scheduler's wake-ups stay out of
// the figures.
func connectLatencies(client *netns.NS, addr netip.AddrPort, warmup, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	err := client.Do(func() error {
		for i := 0; i < warmup+n; i++ {
			d, err := connectOnce(addr)
			if err != nil {
				return fmt.Errorf("connect %d to %s: %w", i, addr, err)
			}
			if i >= warmup {
				out = append(out, d)
			}
		}
		return nil
	})
	return out, err
}

// connectOnce times one blocking TCP connect to addr and resets the connection.
func connectOnce(addr netip.AddrPort) (time.Duration, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	// Close with a reset: no TIME_WAIT piles up over thousands of connects.
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		return 0, err
	}
	tv := unix.NsecToTimeval(int64(connectTimeout)) // bounds a blocking connect
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv); err != nil {
		return 0, err
	}
	start := time.Now()
	err = unix.Connect(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
	if errors.Is(err, unix.EINTR) {
		// A signal (the Go runtime's preemption, SIGURG) interrupted the wait, not the
		// connect: the handshake goes on in the kernel, and connect() again would say
		// EALREADY. Wait for it to finish instead.
		err = finishConnect(fd, start.Add(connectTimeout))
	}
	return time.Since(start), err
}

// connectTimeout bounds one connect of the latency loop.
const connectTimeout = 2 * time.Second

// finishConnect waits until a connect in progress on fd completes or the deadline
// passes, and returns its outcome (SO_ERROR), retrying waits a signal interrupts.
func finishConnect(fd int, deadline time.Time) error {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(fds, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) || (err == nil && n == 0) {
			continue
		}
		if err != nil {
			return err
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}

// greeting connects once to addr from the client namespace's thread (the
// caller's) and returns the endpoint's greeting byte.
func greeting(addr string) (byte, error) {
	c, err := net.DialTimeout("tcp4", addr, 100*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetLinger(0)
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// waitGreeting waits for the start time on start, then connects from client
// to addr about every pollInterval until a connection reaches the endpoint
// whose greeting is want, and returns how long after start that was.
func waitGreeting(client *netns.NS, addr string, want byte, start <-chan time.Time, timeout time.Duration) (time.Duration, error) {
	var d time.Duration
	err := client.Do(func() error {
		t0 := <-start
		err := wait.Every(context.Background(), timeout-time.Since(t0), pollInterval, func() error {
			b, err := greeting(addr)
			if err == nil && b == want {
				d = time.Since(t0)
				return nil
			}
			return fmt.Errorf("last: .%d, %v", b, err)
		})
		if err != nil {
			return fmt.Errorf("no connection to %s reached endpoint .%d within %s: %w", addr, want, timeout, err)
		}
		return nil
	})
	return d, err
}

// pollInterval is how often the change probes look (kernel or traffic).
const pollInterval = 500 * time.Microsecond

// scrapeHistogram reads a Prometheus histogram's _sum and _count (summed over
// its label sets) from http://addr/metrics inside ns.
func scrapeHistogram(ctx context.Context, ns *netns.NS, addr, name string) (sum, count float64, err error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dialIn(ns), DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, fmt.Errorf("metrics at %s in %s: %w", addr, ns, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	found := false
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		metric, _, _ := strings.Cut(line, " ")
		metric, _, _ = strings.Cut(metric, "{")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, perr := strconv.ParseFloat(f[len(f)-1], 64)
		if perr != nil {
			continue
		}
		switch metric {
		case name + "_sum":
			sum += v
			found = true
		case name + "_count":
			count += v
		}
	}
	if !found {
		return 0, 0, errors.New("metric " + name + " not exposed at " + addr)
	}
	return sum, count, nil
}

// percentile of durations (nearest rank); 0 for none.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p/100*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}
