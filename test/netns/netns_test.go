package netns

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/wait"
)

// testNS creates a namespace named after the test and removes it at the end.
func testNS(t *testing.T, suffix string) *NS {
	t.Helper()
	ns, err := New(fmt.Sprintf("wgm-t%d-%s", os.Getpid()%10000, suffix))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Close(); err != nil {
			t.Error(err)
		}
	})
	return ns
}

func TestNewDoClose(t *testing.T) {
	SkipUnlessRoot(t)
	ns, err := New(fmt.Sprintf("wgm-t%d-new", os.Getpid()%10000))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, ns.Name())); err != nil {
		t.Fatalf("namespace file missing: %v", err)
	}
	var names []string
	err = ns.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names, []string{"lo"}) {
		t.Fatalf("links inside a new namespace = %v, want [lo]", names)
	}
	if got := Owned(os.Getpid()); !slices.Contains(got, "netns."+ns.Name()) {
		t.Fatalf("owner records = %v, want netns.%s", got, ns.Name())
	}
	if err := ns.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns.Path()); !os.IsNotExist(err) {
		t.Fatalf("namespace file still there after Close: %v", err)
	}
	if _, err := New("nope"); err == nil {
		t.Fatal("New accepted a name without the prefix")
	}
}

func TestVethAddressesAndTCP(t *testing.T) {
	SkipUnlessRoot(t)
	a, b := testNS(t, "a"), testNS(t, "b")
	if err := Veth(a, "eth0", b, "eth0", 1400); err != nil {
		t.Fatal(err)
	}
	for ns, addr := range map[*NS]string{a: "198.18.0.11/24", b: "198.18.0.12/24"} {
		if err := AddAddr(ns, "eth0", addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := AddAddr(b, "eth0", "2001:db8::12/64"); err != nil {
		t.Fatal(err)
	}
	if err := AddAddr(a, "eth0", "2001:db8::11/64"); err != nil {
		t.Fatal(err)
	}
	if err := AddRoute(a, "198.18.1.0/24", "198.18.0.12", ""); err != nil {
		t.Fatal(err)
	}
	// A listener made inside the namespace keeps it; accepting can happen on any thread.
	var ln net.Listener
	if err := b.Do(func() (err error) { ln, err = net.Listen("tcp", "[::]:8080"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	for _, target := range []string{"198.18.0.12:8080", "[2001:db8::12]:8080"} {
		var got string
		err := a.Do(func() error {
			c, err := net.DialTimeout("tcp", target, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			buf := make([]byte, 100)
			n, _ := c.Read(buf)
			got = strings.TrimSpace(string(buf[:n]))
			return nil
		})
		if err != nil {
			t.Fatalf("dial %s from %s: %v", target, a.Name(), err)
		}
		if got != "hello 198.18.0.11" && got != "hello 2001:db8::11" {
			t.Fatalf("answer from %s = %q", target, got)
		}
	}
	out, err := a.Exec(context.Background(), "ip", "-o", "link", "show", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "mtu 1400") {
		t.Fatalf("eth0 in %s: want mtu 1400, got %s", a.Name(), out)
	}
	if err := a.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		t.Fatal(err)
	}
	out, _ = a.Exec(context.Background(), "cat", "/proc/sys/net/ipv4/ip_forward")
	if strings.TrimSpace(string(out)) != "1" {
		t.Fatalf("ip_forward in %s = %q, want 1", a.Name(), out)
	}
}

func TestBridgeAndHostVeth(t *testing.T) {
	SkipUnlessRoot(t)
	ul := testNS(t, "ul")
	if err := Bridge(ul, "br0", 0); err != nil {
		t.Fatal(err)
	}
	host := fmt.Sprintf("wgm-t%d-h", os.Getpid()%10000)
	if err := Veth(ul, "host0", Host(), host, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { DeleteLink(Host(), host) })
	if err := SetMaster(ul, "host0", "br0"); err != nil {
		t.Fatal(err)
	}
	names, err := LinkNames(Host())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, host) {
		t.Fatalf("host link %s missing: %v", host, names)
	}
	if err := Veth(ul, "x", Host(), "eth-not-prefixed", 0); err == nil {
		t.Fatal("Veth accepted a host link without the prefix")
	}
	if err := ul.Close(); err != nil {
		t.Fatal(err)
	}
	// The kernel destroys a namespace (and the veth ends in it) asynchronously.
	wait.For(t, 10*time.Second, "host end "+host+" to go with its namespace", wait.True(func() bool {
		names, _ := LinkNames(Host())
		return !slices.Contains(names, host)
	}))
}

func TestMachinePrivateDirsAndSysfs(t *testing.T) {
	SkipUnlessRoot(t)
	ctx := context.Background()
	state := t.TempDir()
	m, err := NewMachine(ctx, MachineOptions{
		Name:     fmt.Sprintf("wgm-t%d-m", os.Getpid()%10000),
		StateDir: state,
		Private:  []string{"/var/run/wireguard", "/etc/cni/net.d", "/run/netns"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if _, err := m.Exec(ctx, "sh", "-c", "echo hi > /etc/cni/net.d/wgm-test.conf && echo s > /var/run/wireguard/x"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(m.HostPath("/etc/cni/net.d"), "wgm-test.conf")); err != nil || string(b) != "hi\n" {
		t.Fatalf("file written in the machine not in its backing dir: %q %v", b, err)
	}
	if _, err := os.Stat("/etc/cni/net.d/wgm-test.conf"); err == nil {
		t.Fatal("file written in the machine leaked into the host's /etc/cni/net.d")
	}
	if p := m.HostPath("/var/run/wireguard/x"); p == "" {
		t.Fatal("HostPath of a private file is empty")
	}
	out, err := m.Exec(ctx, "ls", "/sys/class/net")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(out)) != "lo" {
		t.Fatalf("/sys/class/net in the machine = %q, want only lo (fresh sysfs)", out)
	}
	// A namespace made inside the machine is private to it.
	if _, err := m.Exec(ctx, "ip", "netns", "add", "wgm-inner"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, "wgm-inner")); err == nil {
		t.Fatal("netns created inside the machine visible on the host")
	}
	sleeper := m.Command(ctx, "sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	go sleeper.Wait()
	wait.For(t, 10*time.Second, "sleep to show in the machine's PIDs", wait.True(func() bool {
		pids, _ := m.PIDs()
		return slices.Contains(pids, sleeper.Process.Pid)
	}))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if processAlive(sleeper.Process.Pid) {
		t.Fatal("Close left a process of the machine running")
	}
	if _, err := os.Stat(m.MountNSPath()); !os.IsNotExist(err) {
		t.Fatalf("mount namespace file still there: %v", err)
	}
}

func TestCaptureUDP(t *testing.T) {
	SkipUnlessRoot(t)
	a, b := testNS(t, "ca"), testNS(t, "cb")
	if err := Veth(a, "eth0", b, "eth0", 0); err != nil {
		t.Fatal(err)
	}
	AddAddr(a, "eth0", "198.18.0.21/24")
	AddAddr(b, "eth0", "198.18.0.22/24")
	ctx := context.Background()
	c, err := StartCapture(ctx, b, "eth0", "udp")
	if err != nil {
		t.Fatal(err)
	}
	err = a.Do(func() error {
		conn, err := net.ListenPacket("udp4", "198.18.0.21:0")
		if err != nil {
			return err
		}
		defer conn.Close()
		dst := &net.UDPAddr{IP: net.ParseIP("198.18.0.22"), Port: 51820}
		for range 3 {
			if _, err := conn.WriteTo([]byte("x"), dst); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range pkts {
		if p.Family == "IP" && p.Proto == "UDP" && p.Src == "198.18.0.21" && p.Dst == "198.18.0.22" && p.DstPort == 51820 {
			n++
		}
	}
	if n != 3 {
		t.Fatalf("captured %d matching UDP packets, want 3: %+v", n, pkts)
	}
}

func TestCleanupLeftoversRemovesOnlyOrphans(t *testing.T) {
	SkipUnlessRoot(t)
	live := testNS(t, "live")
	orphan, err := New(fmt.Sprintf("wgm-t%d-orphan", os.Getpid()%10000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { orphan.Close() })
	sleeper := orphan.Command(context.Background(), "sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	go sleeper.Wait()
	wait.For(t, 10*time.Second, "sleep to enter the namespace", wait.True(func() bool {
		pids, _ := orphan.PIDs()
		return slices.Contains(pids, sleeper.Process.Pid)
	}))
	// Pretend the orphan's owner crashed.
	if err := os.WriteFile(filepath.Join(OwnersDir, "netns."+orphan.Name()), []byte("1 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	lo, err := Leftovers(false)
	if err != nil {
		t.Fatal(err)
	}
	var found, foundProc bool
	for _, l := range lo {
		if l.Kind == "netns" && l.Name == live.Name() {
			t.Fatalf("Leftovers lists a namespace whose owner runs: %v", l)
		}
		found = found || (l.Kind == "netns" && l.Name == orphan.Name())
		foundProc = foundProc || (l.Kind == "process" && l.PID == sleeper.Process.Pid)
	}
	if !found || !foundProc {
		t.Fatalf("Leftovers = %v, want netns %s and process %d", lo, orphan.Name(), sleeper.Process.Pid)
	}
	if err := CleanupLeftovers(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan.Path()); !os.IsNotExist(err) {
		t.Fatal("orphan namespace survived CleanupLeftovers")
	}
	if processAlive(sleeper.Process.Pid) {
		t.Fatal("process in the orphan namespace survived CleanupLeftovers")
	}
	if _, err := os.Stat(live.Path()); err != nil {
		t.Fatal("CleanupLeftovers removed a namespace whose owner runs")
	}
}
