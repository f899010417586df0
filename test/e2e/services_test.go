package e2e

// Services end to end without kube-proxy: the agents' service NAT on the
// local cluster (dual-stack, one node behind NAT), modelled on Kubernetes'
// "[sig-network] Networking Granular Checks: Services" and the Services
// conformance specs.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/noderuntime"
	"github.com/wgmesh/wgmesh/test/wait"
)

func TestServices(t *testing.T) {
	needCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := startCluster(ctx, t, cluster.Options{Nodes: 3, NATNodes: 1, DualStack: true, UnderlayMTU: 1500})
	setNATKeepalive(ctx, t, c)

	// Backends: one "web" pod per node (the NAT node's included), and a
	// client pod per node.
	var web, clients []*corev1.Pod
	for _, n := range c.Nodes {
		short := strings.TrimPrefix(n.Name, "wgm-")
		for _, o := range []cluster.PodOptions{
			{Name: "web-" + short, Node: n, Labels: map[string]string{"app": "web"}, Ports: []int32{podPort}},
			{Name: "client-" + short, Node: n, Labels: map[string]string{"app": "client"}, Ports: []int32{podPort}},
		} {
			if _, err := c.CreatePodWith(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range c.Nodes {
		short := strings.TrimPrefix(n.Name, "wgm-")
		for _, name := range []string{"web-" + short, "client-" + short} {
			p, err := c.WaitPodReady(ctx, "default", name, readyTimeout)
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(name, "web-") {
				web = append(web, p)
			} else {
				clients = append(clients, p)
			}
		}
	}
	if !meshConverged(ctx, t, c, append(append([]*corev1.Pod{}, web...), clients...)) {
		t.FailNow()
	}

	svc := createService(ctx, t, c, "web", map[string]string{"app": "web"}, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
		s.Spec.ExternalIPs = []string{"198.18.0.200"}
	})
	waitEndpoints(ctx, t, c, "web", len(web)*2)
	cips := svc.Spec.ClusterIPs
	if len(cips) != 2 {
		t.Fatalf("service web has ClusterIPs %v, want one per family", cips)
	}
	nodePort := int(svc.Spec.Ports[0].NodePort)

	// Encryption proof over the whole service part.
	filter := "not arp and not icmp6 and not host " + cluster.APIServerIP + " and not host " + cluster.APIServerIP6 +
		" and not host " + cluster.InternetIP + " and not host " + cluster.InternetIP6 + " and not host 198.18.0.200"
	stopCapture := captureUnderlays(ctx, t, c, filter)

	t.Run("clusterip-from-pods", func(t *testing.T) {
		// From a pod on every node (the NAT node's included), over TCP, HTTP
		// and UDP, on both families: answered, by more than one backend,
		// and the backend sees the client pod's own address.
		for _, from := range clients {
			for i, cip := range cips {
				src := podIPs(from)[i]
				for _, proto := range []string{"tcp", "http", "udp"} {
					port := 80
					if proto == "udp" {
						port = 53
					}
					seen := map[string]bool{}
					for try := 0; try < 30 && len(seen) < 2; try++ {
						var got string
						if err := wait.Poll(ctx, retryTimeout, func() (err error) {
							got, err = c.PodDial(ctx, from, proto, cip, port, "hostname")
							return err
						}); err != nil {
							t.Fatalf("%s -> %s %s:%d: %v", from.Name, proto, cip, port, err)
						}
						seen[strings.TrimSpace(got)] = true
					}
					if len(seen) < 2 {
						t.Errorf("%s -> %s %s:%d: only %v answered in 30 tries; want load spread over the backends", from.Name, proto, cip, port, seen)
					}
					got, err := c.PodDial(ctx, from, proto, cip, port, "clientip")
					if err != nil {
						t.Fatal(err)
					}
					if hostOf(got) != src {
						t.Errorf("%s -> %s %s:%d: backend saw %s, want the client's pod IP %s", from.Name, proto, cip, port, got, src)
					}
				}
			}
		}
	})

	t.Run("clusterip-from-nodes", func(t *testing.T) {
		for _, n := range c.Nodes {
			for _, cip := range cips {
				for _, proto := range []string{"http", "udp"} {
					port := "80"
					if proto == "udp" {
						port = "53"
					}
					if err := wait.Poll(ctx, retryTimeout, func() error {
						_, err := n.Dial(ctx, proto, net.JoinHostPort(cip, port), "hostname")
						return err
					}); err != nil {
						t.Errorf("node %s -> %s: %v", n.Name, cip, err)
					}
				}
			}
		}
	})

	t.Run("nodeport-from-outside", func(t *testing.T) {
		// From the "internet" host to every node it can reach (the NAT
		// node is not reachable from outside), on both families.
		for _, n := range c.Nodes {
			if n.NATted {
				continue
			}
			for _, ip := range []string{n.UnderlayIP, n.UnderlayIP6} {
				addr := net.JoinHostPort(ip, strconv.Itoa(nodePort))
				if err := wait.Poll(ctx, retryTimeout, func() error {
					_, err := nsRequest(ctx, c.Internet, "http", addr, "/hostname")
					return err
				}); err != nil {
					t.Errorf("internet -> %s: %v", addr, err)
				}
			}
		}
	})

	t.Run("externalip-and-clusterip-from-outside", func(t *testing.T) {
		// Off-cluster clients routed to the service range (and to an
		// externalIP) through the first node are masqueraded, so replies
		// come back through it.
		first := c.Nodes[0]
		for _, r := range []struct{ dst, via string }{{cluster.ServiceCIDR, first.UnderlayIP}, {"198.18.0.200/32", first.UnderlayIP}} {
			if out, err := c.Internet.Exec(ctx, "ip", "route", "replace", r.dst, "via", r.via); err != nil {
				t.Fatalf("route in internet: %v: %s", err, out)
			}
		}
		defer c.Internet.Exec(context.Background(), "ip", "route", "del", cluster.ServiceCIDR)
		defer c.Internet.Exec(context.Background(), "ip", "route", "del", "198.18.0.200/32")
		for _, dst := range []string{cips[0], "198.18.0.200"} {
			var got string
			if err := wait.Poll(ctx, retryTimeout, func() (err error) {
				got, err = nsRequest(ctx, c.Internet, "tcp", net.JoinHostPort(dst, "80"), "clientip")
				return err
			}); err != nil {
				t.Errorf("internet -> %s:80: %v", dst, err)
				continue
			}
			if hostOf(got) == cluster.InternetIP {
				t.Errorf("internet -> %s:80: backend saw the client's own address %s, want it masqueraded", dst, got)
			}
		}
	})

	t.Run("hairpin", func(t *testing.T) {
		self := web[0]
		createService(ctx, t, c, "hairpin", map[string]string{"statefulset.kubernetes.io/pod-name": self.Name}, nil)
		if err := c.Client.Patch(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: self.Name}},
			client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"statefulset.kubernetes.io/pod-name":"`+self.Name+`"}}}`))); err != nil {
			t.Fatal(err)
		}
		waitEndpoints(ctx, t, c, "hairpin", 2)
		hp := getService(ctx, t, c, "hairpin")
		for _, cip := range hp.Spec.ClusterIPs {
			if err := wait.Poll(ctx, retryTimeout, func() error {
				got, err := c.PodDial(ctx, self, "tcp", cip, 80, "hostname")
				if err == nil && strings.TrimSpace(got) != self.Name {
					return fmt.Errorf("answered by %q", got)
				}
				return err
			}); err != nil {
				t.Errorf("%s -> its own service %s: %v", self.Name, cip, err)
			}
		}
	})

	t.Run("session-affinity", func(t *testing.T) {
		createService(ctx, t, c, "sticky", map[string]string{"app": "web"}, func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		})
		waitEndpoints(ctx, t, c, "sticky", len(web)*2)
		st := getService(ctx, t, c, "sticky")
		for _, from := range clients[:2] {
			seen := map[string]bool{}
			for range 15 {
				var got string
				if err := wait.Poll(ctx, retryTimeout, func() (err error) {
					got, err = c.PodDial(ctx, from, "tcp", st.Spec.ClusterIPs[0], 80, "hostname")
					return err
				}); err != nil {
					t.Fatal(err)
				}
				seen[strings.TrimSpace(got)] = true
			}
			if len(seen) != 1 {
				t.Errorf("%s -> sticky service: answered by %v, want one backend with ClientIP affinity", from.Name, seen)
			}
		}
	})

	t.Run("no-endpoints-refused", func(t *testing.T) {
		createService(ctx, t, c, "empty", map[string]string{"app": "nothing"}, nil)
		em := getService(ctx, t, c, "empty")
		n := c.Nodes[0]
		for _, cip := range em.Spec.ClusterIPs {
			for _, proto := range []string{"tcp", "udp"} {
				port := "80"
				if proto == "udp" {
					port = "53"
				}
				addr := net.JoinHostPort(cip, port)
				// Until the agents have programmed the new service (they
				// sync at most once a second), a SYN may go unanswered and
				// be refused only on its retransmission: retried. Once
				// programmed, the refusal is immediate.
				if err := wait.Poll(ctx, retryTimeout, func() error {
					start := time.Now()
					_, err := n.Dial(ctx, proto, addr, "hostname")
					took := time.Since(start)
					// A refusal in the output hook reaches a local UDP
					// sender as EPERM on the write itself, as with kube-proxy.
					if !errors.Is(err, syscall.ECONNREFUSED) && !(proto == "udp" && errors.Is(err, syscall.EPERM)) {
						return fmt.Errorf("got %v, want connection refused", err)
					}
					if took > time.Second {
						return fmt.Errorf("refused after %s, want within 1s", took)
					}
					return nil
				}); err != nil {
					t.Errorf("node %s -> %s %s (no endpoints): %v", n.Name, proto, addr, err)
				}
			}
		}
		// From a pod, through the workload's dialer: refused, not a timeout.
		for _, pp := range []struct {
			proto string
			port  int
		}{{"tcp", 80}, {"udp", 53}} {
			for _, cip := range em.Spec.ClusterIPs {
				start := time.Now()
				_, err := c.PodDial(ctx, clients[0], pp.proto, cip, pp.port, "hostname")
				if err == nil || !strings.Contains(err.Error(), "refused") || time.Since(start) > 2*time.Second {
					t.Errorf("pod -> %s %s (no endpoints): err=%v after %s, want a quick refusal", pp.proto, cip, err, time.Since(start))
				}
			}
		}
	})

	t.Run("services-cannot-capture", func(t *testing.T) { servicesCannotCapture(ctx, t, c, clients, cips[0]) })
	t.Run("udp-endpoint-replaced", func(t *testing.T) { udpEndpointReplaced(ctx, t, c) })
	t.Run("external-traffic-policy-local", func(t *testing.T) { externalLocal(ctx, t, c, web) })

	under, nat := stopCapture()
	t.Run("encrypted", func(t *testing.T) {
		checkCapture(t, "underlay", under, true)
		checkCapture(t, "NAT cloud", nat, true)
	})
}

// udpEndpointReplaced: a client keeps one UDP socket (as resolvers do); the
// only endpoint of its Service is replaced; the same socket reaches the new
// one within a second of it being ready (stale conntrack entries removed).
func udpEndpointReplaced(ctx context.Context, t *testing.T, c *cluster.Cluster) {
	n := c.Nodes[0]
	backendNode := c.Nodes[1]
	if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: "dns-a", Node: backendNode, Labels: map[string]string{"app": "dns"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitPodReady(ctx, "default", "dns-a", readyTimeout); err != nil {
		t.Fatal(err)
	}
	createService(ctx, t, c, "dns", map[string]string{"app": "dns"}, nil)
	waitEndpoints(ctx, t, c, "dns", 2)
	cip := getService(ctx, t, c, "dns").Spec.ClusterIPs[0]
	var conn *net.UDPConn
	if err := n.NetNS.Do(func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := &net.UDPAddr{IP: net.ParseIP(cip), Port: 53}
	// ask sends on the same socket until an answer comes, as a resolver
	// retries: until the service NAT is programmed, the leak guard drops the
	// untranslated packet (EPERM on a local send).
	ask := func(timeout time.Duration) (string, error) {
		buf := make([]byte, 256)
		var answer string
		err := wait.Every(ctx, timeout, 10*time.Millisecond, func() error {
			if _, err := conn.WriteTo([]byte("hostname\n"), dst); err != nil {
				return fmt.Errorf("send: %w", err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			k, _, err := conn.ReadFrom(buf)
			if err != nil {
				return fmt.Errorf("no answer: %w", err)
			}
			answer = strings.TrimSpace(string(buf[:k]))
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("asking %s: %w", dst, err)
		}
		return answer, nil
	}
	if got, err := ask(retryTimeout); err != nil || got != "dns-a" {
		t.Fatalf("before: %q, %v; want dns-a", got, err)
	}
	if err := c.Client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "dns-a"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: "dns-b", Node: c.Nodes[2], Labels: map[string]string{"app": "dns"}}); err != nil {
		t.Fatal(err)
	}
	b, err := c.WaitPodReady(ctx, "default", "dns-b", readyTimeout)
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the EndpointSlice to show only dns-b, then the same socket
	// must get dns-b's answer within a second.
	if err := wait.Poll(ctx, readyTimeout, func() error {
		addrs := sliceAddrs(ctx, c, "dns")
		if len(addrs) != 2 || !containsAll(addrs, podIPs(b)) {
			return fmt.Errorf("dns endpoints %v, want only dns-b's %v", addrs, podIPs(b))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := ask(time.Second)
	if err != nil || got != "dns-b" {
		t.Errorf("after the endpoint was replaced: %q, %v after %s; want dns-b within 1s", got, err, time.Since(start))
	}
}

// externalLocal: externalTrafficPolicy Local keeps the client's address,
// serves only from nodes with a local endpoint, and the health check node
// port tells which nodes those are.
func externalLocal(ctx context.Context, t *testing.T, c *cluster.Cluster, web []*corev1.Pod) {
	first := c.Nodes[0]
	var local *corev1.Pod
	for _, p := range web {
		if p.Spec.NodeName == first.Name {
			local = p
		}
	}
	if _, err := c.CreatePodWith(ctx, cluster.PodOptions{Name: "only-" + strings.TrimPrefix(first.Name, "wgm-"), Node: first, Labels: map[string]string{"app": "only"}}); err != nil {
		t.Fatal(err)
	}
	_ = local
	createService(ctx, t, c, "local", map[string]string{"app": "only"}, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	waitEndpoints(ctx, t, c, "local", 2)
	svc := getService(ctx, t, c, "local")
	np, hc := int(svc.Spec.Ports[0].NodePort), int(svc.Spec.HealthCheckNodePort)
	if hc == 0 {
		t.Fatal("no healthCheckNodePort allocated")
	}
	addr := net.JoinHostPort(first.UnderlayIP, strconv.Itoa(np))
	var got string
	if err := wait.Poll(ctx, retryTimeout, func() (err error) {
		got, err = nsRequest(ctx, c.Internet, "tcp", addr, "clientip")
		return err
	}); err != nil {
		t.Fatalf("internet -> %s: %v", addr, err)
	}
	if hostOf(got) != cluster.InternetIP {
		t.Errorf("internet -> %s (externalTrafficPolicy Local): backend saw %s, want the client's own %s", addr, got, cluster.InternetIP)
	}
	other := c.Nodes[1]
	if _, err := nsRequest(ctx, c.Internet, "tcp", net.JoinHostPort(other.UnderlayIP, strconv.Itoa(np)), "clientip"); err == nil {
		t.Errorf("internet -> %s (no local endpoint): answered, want dropped", other.Name)
	}
	for _, n := range []struct {
		node *cluster.Node
		code int
	}{{first, 200}, {other, 503}} {
		url := "http://" + net.JoinHostPort(n.node.UnderlayIP, strconv.Itoa(hc)) + "/healthz"
		if err := wait.Poll(ctx, retryTimeout, func() error {
			code, body, err := nsHTTPGet(ctx, c.Internet, url)
			if err != nil {
				return err
			}
			if code != n.code {
				return fmt.Errorf("status %d (%s), want %d", code, body, n.code)
			}
			return nil
		}); err != nil {
			t.Errorf("health check %s: %v", url, err)
		}
	}
}

func createService(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, selector map[string]string, mutate func(*corev1.Service)) *corev1.Service {
	t.Helper()
	pol := corev1.IPFamilyPolicyPreferDualStack
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{
			Selector:       selector,
			IPFamilyPolicy: &pol,
			Ports: []corev1.ServicePort{
				{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("tcp-8080")},
				{Name: "udp", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(podPort)},
			},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	if err := c.Client.Create(ctx, s); err != nil {
		t.Fatalf("create service %s: %v", name, err)
	}
	return s
}

func getService(ctx context.Context, t *testing.T, c *cluster.Cluster, name string) *corev1.Service {
	t.Helper()
	s := &corev1.Service{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, s); err != nil {
		t.Fatal(err)
	}
	return s
}

// sliceAddrs lists the ready endpoint addresses of a Service's slices.
func sliceAddrs(ctx context.Context, c *cluster.Cluster, name string) []string {
	var list discoveryv1.EndpointSliceList
	if err := c.Client.List(ctx, &list, client.InNamespace("default"), client.MatchingLabels{discoveryv1.LabelServiceName: name}); err != nil {
		return nil
	}
	var out []string
	for _, s := range list.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || *e.Conditions.Ready {
				out = append(out, e.Addresses...)
			}
		}
	}
	return out
}

func waitEndpoints(ctx context.Context, t *testing.T, c *cluster.Cluster, name string, n int) {
	t.Helper()
	if err := wait.Poll(ctx, readyTimeout, func() error {
		if got := sliceAddrs(ctx, c, name); len(got) < n {
			return fmt.Errorf("service %s has ready endpoints %v, want %d", name, got, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if netip.MustParseAddr(h) == netip.MustParseAddr(w) {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func nsRequest(ctx context.Context, ns *netns.NS, proto, addr, request string) (string, error) {
	return noderuntime.Request(ctx, noderuntime.NSDialer(ns), proto, addr, request)
}

// nsHTTPGet GETs url from inside ns and returns the status and body.
func nsHTTPGet(ctx context.Context, ns *netns.NS, url string) (int, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() (err error) {
			d := net.Dialer{Timeout: 2 * time.Second}
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 3 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// servicesCannotCapture is the attack of a user who may create Services in one
// namespace: a Service in a namespace that sorts first, with no endpoints,
// whose externalIPs are another namespace's ClusterIP and the API server's
// address on their ports. Without the protection every node sent both to
// the attacker's (rejecting) Service: web's clients were refused and no node
// reached the API server. Every agent refuses the two addresses with a
// Warning Event naming field and value (the barrier), and both keep
// working from every node and pod.
func servicesCannotCapture(ctx context.Context, t *testing.T, c *cluster.Cluster, clients []*corev1.Pod, webCIP string) {
	const ns = "aaa-attacker"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	evil := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "evil"},
		Spec: corev1.ServiceSpec{
			Selector:    map[string]string{"app": "nothing"},
			ExternalIPs: []string{webCIP, cluster.APIServerIP},
			Ports: []corev1.ServicePort{
				{Name: "web", Protocol: corev1.ProtocolTCP, Port: 80},
				{Name: "api", Protocol: corev1.ProtocolTCP, Port: cluster.APIServerPort},
			},
		},
	}
	if err := c.Client.Create(ctx, evil); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Client.Delete(context.WithoutCancel(ctx), evil) }()
	want := map[string]string{"spec.externalIPs[0]": webCIP, "spec.externalIPs[1]": cluster.APIServerIP}
	if err := wait.Poll(ctx, agentMeshTimeout, func() error {
		var evs corev1.EventList
		if err := c.Client.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, n := range c.Nodes {
			for field, value := range want {
				found := false
				for _, ev := range evs.Items {
					if ev.InvolvedObject.Name == evil.Name && ev.Type == corev1.EventTypeWarning && strings.HasPrefix(ev.Message, "node "+n.Name+":") &&
						strings.Contains(ev.Message, field+"=\""+value+"\"") {
						found = true
					}
				}
				if !found {
					return fmt.Errorf("node %s has not refused %s=%s of Service %s/%s (no Warning Event)", n.Name, field, value, ns, evil.Name)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, from := range clients {
		for try := 0; try < 5; try++ {
			got, err := c.PodDial(ctx, from, "http", webCIP, 80, "hostname")
			if err != nil || !strings.HasPrefix(strings.TrimSpace(got), "web-") {
				t.Errorf("%s -> web's ClusterIP %s:80 with the attacker's Service present: %q %v, want a web pod", from.Name, webCIP, got, err)
				break
			}
		}
	}
	api := net.JoinHostPort(cluster.APIServerIP, strconv.Itoa(int(cluster.APIServerPort)))
	for _, n := range c.Nodes {
		conn, err := noderuntime.NSDialer(n.NetNS)(ctx, "tcp", api)
		if err != nil {
			t.Errorf("node %s cannot connect to the API server %s with the attacker's Service present: %v", n.Name, api, err)
			continue
		}
		conn.Close()
	}
}
