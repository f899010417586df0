package e2e

// Beside kube-proxy (issue 22): many clusters keep kube-proxy (kubeadm installs it), and
// there wgmesh's own service NAT stands aside (agent.serviceProxy=auto, the default).
// Real kubelets, upstream kube-proxy on every node, wgmesh installed by helm. The cases are the ones where
// kube-proxy masquerades into the tunnel: a node's own connection to a ClusterIP and an
// outside client's to a NodePort, each with its only endpoint on the other node. With no
// address on wgmesh0 the kernel gave those packets the underlay address, which the peer's
// AllowedIPs refuse; the agent now puts the pod CIDR's network address on wgmesh0
// (podnet.TunnelAddress). Plus a pod reaching a Service whose endpoint is another node's
// host network (Calico's issue 9751), and the capture proving pod traffic stays encrypted.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/agent/servicenat"
	"github.com/wgmesh/wgmesh/podnet"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/skip"
	"github.com/wgmesh/wgmesh/test/wait"
)

// hostWebPort is the host-network backend's port (free on the nodes).
const hostWebPort = 18080

func TestBesideKubeProxy(t *testing.T) {
	needRealNodes(t)
	kubeProxy := os.Getenv("WGMESH_KUBE_PROXY")
	if kubeProxy == "" {
		skip.Unless(t, "beside kube-proxy: WGMESH_KUBE_PROXY is unset (make test sets it: hack/kube-proxy.sh --path)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	began := time.Now()
	// The chart's default, agent.serviceProxy=auto: the agents find kube-proxy and
	// stand aside.
	c := startCluster(ctx, t, cluster.Options{Nodes: 2, RealNodes: true, KubeProxy: kubeProxy, HelmValues: []string{"agent.serviceProxy=auto"}})
	t.Logf("2 real nodes with kube-proxy (%s mode) and wgmesh (agent.serviceProxy=auto): %s", c.Options().KubeProxyMode, time.Since(began).Round(time.Second))
	a, b := c.Nodes[0], c.Nodes[1]

	t.Run("service NAT stands aside", func(t *testing.T) {
		for _, n := range c.Nodes {
			wait.For(t, 2*time.Minute, "a "+servicenat.ReasonStandingAside+" Event on "+n.Name, func() error {
				evs := &corev1.EventList{}
				if err := c.Client.List(ctx, evs, client.InNamespace("default"), client.MatchingFields{"involvedObject.name": n.Name, "reason": servicenat.ReasonStandingAside}); err != nil {
					return err
				}
				if len(evs.Items) == 0 {
					return fmt.Errorf("none yet")
				}
				return nil
			})
			// Nothing of the service NAT in table wgmesh: kube-proxy alone answers.
			if out, err := n.Exec(ctx, "nft", "list", "chain", "ip", "wgmesh", servicenat.ChainServices); err == nil {
				t.Errorf("%s: the service NAT's chain is in table wgmesh beside kube-proxy:\n%s", n.Name, out)
			}
		}
	})

	for _, o := range []cluster.PodOptions{
		{Name: "web-b", Node: b, Labels: map[string]string{"app": "web"}, Ports: []int32{podPort}},
		{Name: "client-a", Node: a, Labels: map[string]string{"app": "client"}, Ports: []int32{podPort}},
		{Name: "hostweb-b", Node: b, Labels: map[string]string{"app": "hostweb"}, Ports: []int32{hostWebPort}, HostNetwork: true},
	} {
		if _, err := c.CreatePodWith(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*corev1.Pod{}
	for _, name := range []string{"web-b", "client-a", "hostweb-b"} {
		p, err := c.WaitPodReady(ctx, "default", name, readyTimeout)
		if err != nil {
			t.Fatal(err)
		}
		pods[name] = p
	}
	if !meshConverged(ctx, t, c, []*corev1.Pod{pods["web-b"], pods["client-a"]}) {
		t.FailNow()
	}
	web := createService(ctx, t, c, "web", map[string]string{"app": "web"}, func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeNodePort
	})
	hostweb := createService(ctx, t, c, "hostweb", map[string]string{"app": "hostweb"}, func(s *corev1.Service) {
		s.Spec.Ports = []corev1.ServicePort{{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(hostWebPort)}}
	})
	waitEndpoints(ctx, t, c, "web", 1)
	waitEndpoints(ctx, t, c, "hostweb", 1)
	clusterIP := web.Spec.ClusterIP
	nodePort := strconv.Itoa(int(web.Spec.Ports[0].NodePort))

	// a's address on wgmesh0: what kube-proxy's masquerade into the tunnel must pick.
	var tunnelA string
	for _, p := range podCIDRs(ctx, t, c, a) {
		if ta, ok := podnet.TunnelAddress(p); ok && ta.Addr().Is4() {
			tunnelA = ta.Addr().String()
		}
	}
	if tunnelA == "" {
		t.Fatalf("node %s has no IPv4 pod CIDR", a.Name)
	}

	// Only pod-range packets and WireGuard: everything else on a real node's underlay
	// (kubelets, the API server, NodePort clients) is not the tunnel's.
	stopCapture := captureUnderlays(ctx, t, c, "net "+cluster.PodCIDR+" or udp port "+strconv.Itoa(cluster.WireGuardPort))

	// dial retries until answered (kube-proxy and the agents converge on their own time)
	// and returns the address the backend saw.
	dial := func(t *testing.T, what string, do func() (string, error)) string {
		t.Helper()
		var got string
		if err := wait.Poll(ctx, retryTimeout, func() (err error) {
			got, err = do()
			return err
		}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return hostOf(got)
	}

	t.Run("pod to clusterip, endpoint on the other node", func(t *testing.T) {
		got := dial(t, "client-a -> web "+clusterIP, func() (string, error) {
			return c.PodDial(ctx, pods["client-a"], "http", clusterIP, 80, "clientip")
		})
		if want := pods["client-a"].Status.PodIP; got != want {
			t.Errorf("backend saw %s, want the client pod's own %s (kube-proxy does not masquerade pod traffic)", got, want)
		}
	})

	t.Run("node to clusterip, masqueraded into the tunnel", func(t *testing.T) {
		got := dial(t, a.Name+" -> web "+clusterIP, func() (string, error) {
			return a.Dial(ctx, "http", net.JoinHostPort(clusterIP, "80"), "clientip")
		})
		if got != tunnelA {
			t.Errorf("backend saw %s, want %s, node %s's address on wgmesh0", got, tunnelA, a.Name)
		}
	})

	t.Run("outside client to nodeport, endpoint on the other node", func(t *testing.T) {
		addr := net.JoinHostPort(a.UnderlayIP, nodePort)
		got := dial(t, "internet -> "+addr, func() (string, error) {
			return nsRequest(ctx, c.Internet, "http", addr, "clientip")
		})
		if got != tunnelA {
			t.Errorf("backend saw %s, want %s, node %s's address on wgmesh0", got, tunnelA, a.Name)
		}
	})

	t.Run("no endpoints: refused, not dropped", func(t *testing.T) {
		// kube-proxy rejects at the forward hook's filter priority; the leak
		// guard (which drops service-range traffic leaving by the underlay)
		// runs after it, so the client is answered.
		empty := createService(ctx, t, c, "empty", map[string]string{"app": "nothing"}, nil)
		if err := wait.Poll(ctx, retryTimeout, func() error {
			_, err := c.PodDial(ctx, pods["client-a"], "http", empty.Spec.ClusterIP, 80, "hostname")
			if err == nil || !strings.Contains(err.Error(), "refused") {
				return fmt.Errorf("client-a -> empty %s:80: %v, want connection refused", empty.Spec.ClusterIP, err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pod to a host-network endpoint on the other node", func(t *testing.T) {
		// The endpoint is b's own address: the packet leaves by the underlay like any
		// pod traffic to a node, masqueraded to a's node address (agent/egress).
		got := dial(t, "client-a -> hostweb "+hostweb.Spec.ClusterIP, func() (string, error) {
			return c.PodDial(ctx, pods["client-a"], "http", hostweb.Spec.ClusterIP, 80, "clientip")
		})
		if got != a.UnderlayIP {
			t.Errorf("host-network backend saw %s, want node %s's address %s", got, a.Name, a.UnderlayIP)
		}
		if ip := netip.MustParseAddr(pods["hostweb-b"].Status.PodIP); ip.String() != b.UnderlayIP {
			t.Errorf("hostweb-b has address %s, want its node's %s", ip, b.UnderlayIP)
		}
	})

	under, _ := stopCapture() // no node behind the NAT here
	t.Run("encrypted", func(t *testing.T) {
		checkCapture(t, "underlay", under, false)
	})
}
