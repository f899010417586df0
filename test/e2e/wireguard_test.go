package e2e

// Reading and changing a node's wgmesh0 the way the node itself would, in either mode:
// kernel WireGuard over generic netlink from inside the node's network namespace,
// userspace WireGuard over its UAPI socket in the node's private /var/run/wireguard.

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/wgmode"
)

// wireGuardMode is the --wireguard-mode of the agents of this run's clusters: userspace,
// or, where the kernel has WireGuard (test/wgmode: make test-kernel), auto, which must then
// pick the module (checkKernelChosen).
func wireGuardMode(t *testing.T) string {
	if wgmode.Mode(t) == wgmode.Kernel {
		return "auto"
	}
	return wgmode.Userspace
}

// checkKernelChosen: in a kernel-mode run every node's wgmesh0 is a kernel link, which
// --wireguard-mode=auto chose.
func checkKernelChosen(t *testing.T, nodes []*cluster.Node) {
	t.Helper()
	if wgmode.Mode(t) != wgmode.Kernel {
		return
	}
	for _, n := range nodes {
		if kernel, err := kernelLink(n); err != nil || !kernel {
			t.Errorf("%s: --wireguard-mode=auto on a kernel with WireGuard made no kernel link (%v)", n.Name, err)
		}
	}
}

// wgPeer is a peer as the node's WireGuard reports it.
type wgPeer struct {
	allowed       []string
	lastHandshake int64 // Unix seconds; 0: never
	endpoint      string
	rx, tx        int64
}

// kernelLink reports whether the node's wgmesh0 is a kernel WireGuard link.
func kernelLink(n *cluster.Node) (bool, error) {
	h, err := n.NetNS.Netlink()
	if err != nil {
		return false, err
	}
	defer h.Close()
	l, err := h.LinkByName(agent.DefaultLinkName)
	if err != nil {
		return false, fmt.Errorf("%s: %s: %w", n.Name, agent.DefaultLinkName, err)
	}
	return l.Type() == "wireguard", nil
}

// withWgctrl runs fn with a wgctrl client opened inside the node's network namespace.
func withWgctrl(n *cluster.Node, fn func(*wgctrl.Client) error) error {
	return n.NetNS.Do(func() error {
		c, err := wgctrl.New()
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(c)
	})
}

// wgPeers returns the node's peers by hex public key.
func wgPeers(n *cluster.Node) (map[string]*wgPeer, error) {
	kernel, err := kernelLink(n)
	if err != nil {
		return nil, err
	}
	if !kernel {
		return uapiPeers(n)
	}
	peers := map[string]*wgPeer{}
	err = withWgctrl(n, func(c *wgctrl.Client) error {
		d, err := c.Device(agent.DefaultLinkName)
		if err != nil {
			return fmt.Errorf("%s: %w", n.Name, err)
		}
		for _, p := range d.Peers {
			wp := &wgPeer{rx: p.ReceiveBytes, tx: p.TransmitBytes}
			for _, a := range p.AllowedIPs {
				wp.allowed = append(wp.allowed, a.String())
			}
			if p.Endpoint != nil {
				wp.endpoint = p.Endpoint.String()
			}
			if !p.LastHandshakeTime.IsZero() {
				wp.lastHandshake = p.LastHandshakeTime.Unix()
			}
			peers[hex.EncodeToString(p.PublicKey[:])] = wp
		}
		return nil
	})
	return peers, err
}

// removePeerByHand removes a peer behind the agent's back.
func removePeerByHand(n *cluster.Node, keyHex string) error {
	kernel, err := kernelLink(n)
	if err != nil {
		return err
	}
	if !kernel {
		out, err := uapi(n, "set=1\npublic_key="+keyHex+"\nremove=true\n\n")
		if err == nil && !strings.Contains(out, "errno=0") {
			err = fmt.Errorf("UAPI set on %s: %q", n.Name, out)
		}
		return err
	}
	b, err := hex.DecodeString(keyHex)
	if err != nil {
		return err
	}
	k, err := wgtypes.NewKey(b)
	if err != nil {
		return err
	}
	return withWgctrl(n, func(c *wgctrl.Client) error {
		return c.ConfigureDevice(agent.DefaultLinkName, wgtypes.Config{Peers: []wgtypes.PeerConfig{{PublicKey: k, Remove: true}}})
	})
}

// dataPlane identifies what carries the node's traffic: the userspace WireGuard process
// (its pid), or the kernel link (its ifindex). A change means the data plane was
// restarted.
func dataPlane(t *testing.T, n *cluster.Node) string {
	t.Helper()
	kernel, err := kernelLink(n)
	if err != nil {
		t.Fatal(err)
	}
	if !kernel {
		return fmt.Sprintf("userspace WireGuard pid %d", wireguardPID(t, n))
	}
	h, err := n.NetNS.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(agent.DefaultLinkName)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("kernel WireGuard link ifindex %d", l.Attrs().Index)
}

// wireguardPID is the pid of the process serving the node's UAPI socket.
func wireguardPID(t *testing.T, n *cluster.Node) int {
	t.Helper()
	conn, err := net.Dial("unix", n.HostPath("/var/run/wireguard/"+agent.DefaultLinkName+".sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, _ := conn.(*net.UnixConn).SyscallConn()
	pid := 0
	_ = raw.Control(func(fd uintptr) {
		if cred, err := syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

func uapi(n *cluster.Node, req string) (string, error) {
	conn, err := net.Dial("unix", n.HostPath("/var/run/wireguard/"+agent.DefaultLinkName+".sock"))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		return "", err
	}
	var b strings.Builder
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	for sc.Scan() {
		if sc.Text() == "" {
			break
		}
		b.WriteString(sc.Text() + "\n")
	}
	return b.String(), sc.Err()
}

func uapiPeers(n *cluster.Node) (map[string]*wgPeer, error) {
	out, err := uapi(n, "get=1\n\n")
	if err != nil {
		return nil, err
	}
	peers := map[string]*wgPeer{}
	var cur *wgPeer
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(line, "=")
		if cur == nil && k != "public_key" && k != "errno" {
			continue
		}
		switch k {
		case "public_key":
			cur = &wgPeer{}
			peers[v] = cur
		case "allowed_ip":
			cur.allowed = append(cur.allowed, v)
		case "endpoint":
			cur.endpoint = v
		case "last_handshake_time_sec":
			cur.lastHandshake, _ = strconv.ParseInt(v, 10, 64)
		case "rx_bytes":
			cur.rx, _ = strconv.ParseInt(v, 10, 64)
		case "tx_bytes":
			cur.tx, _ = strconv.ParseInt(v, 10, 64)
		case "errno":
			if v != "0" {
				return nil, fmt.Errorf("UAPI get on %s: errno=%s", n.Name, v)
			}
		}
	}
	return peers, nil
}

// wgTransfer sums the received and sent bytes of the node's peers.
func wgTransfer(n *cluster.Node) (rx, tx int64, err error) {
	peers, err := wgPeers(n)
	if err != nil {
		return 0, 0, err
	}
	for _, p := range peers {
		rx += p.rx
		tx += p.tx
	}
	return rx, tx, nil
}
