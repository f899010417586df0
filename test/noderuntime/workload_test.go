package noderuntime

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/test/netns"
	"github.com/wgmesh/wgmesh/test/skip"
)

func TestWorkloadProtocols(t *testing.T) {
	skip.Short(t, "workload in network namespaces")
	if os.Geteuid() != 0 {
		skip.Unless(t, "workload in network namespaces: needs root")
	}
	tag := os.Getpid() % 10000
	var nss []*netns.NS
	for _, s := range []string{"a", "b"} {
		ns, err := netns.New(fmt.Sprintf("wgm-t%d-w%s", tag, s))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ns.Close() })
		nss = append(nss, ns)
	}
	a, b := nss[0], nss[1]
	if err := netns.Veth(a, "eth0", b, "eth0", 1500); err != nil {
		t.Fatal(err)
	}
	for ns, ip := range map[*netns.NS]string{a: "198.19.9.1/24", b: "198.19.9.2/24"} {
		if err := netns.AddAddr(ns, "eth0", ip); err != nil {
			t.Fatal(err)
		}
	}
	wa, err := StartWorkload("pod-a", a, []int{8080})
	if err != nil {
		t.Fatal(err)
	}
	defer wa.Stop()
	wb, err := StartWorkload("pod-b", b, []int{8080, 9000})
	if err != nil {
		t.Fatal(err)
	}
	defer wb.Stop()
	ctx := context.Background()
	fromA := NSDialer(a)
	big := strings.Repeat("y", 2000)
	cases := []struct{ proto, addr, req, want string }{
		{"tcp", "198.19.9.2:8080", "hostname", "pod-b"},
		{"tcp", "198.19.9.2:9000", "clientip", "198.19.9.1:"},
		{"udp", "198.19.9.2:8080", "hostname", "pod-b"},
		{"udp", "198.19.9.2:9000", "echo " + big, big},
		{"http", "198.19.9.2:8080", "hostname", "pod-b"},
		{"http", "198.19.9.2:8080", "clientip", "198.19.9.1:"},
		{"http", "198.19.9.2:8080", "echo hello there", "hello there"},
	}
	for _, c := range cases {
		got, err := Request(ctx, fromA, c.proto, c.addr, c.req)
		if err != nil {
			t.Fatalf("%s %s %.20q: %v", c.proto, c.addr, c.req, err)
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("%s %s %.20q = %.40q, want prefix %.40q", c.proto, c.addr, c.req, got, c.want)
		}
	}
	body, err := Request(ctx, fromA, "http", "198.19.9.2:8080", "/bytes?n=1000000")
	if err != nil || len(body) != 1000000 {
		t.Fatalf("/bytes?n=1000000: %d bytes, %v", len(body), err)
	}
	// /dial on pod-b dials from inside b to pod-a, which sees b's address.
	for _, proto := range []string{"http", "udp", "tcp"} {
		q := url.Values{"host": {"198.19.9.1"}, "port": {"8080"}, "protocol": {proto}, "request": {"clientip"}, "tries": {"1"}}
		ans, err := Request(ctx, fromA, "http", "198.19.9.2:8080", "/dial?"+q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseDialAnswer(ans)
		if err != nil || !strings.HasPrefix(got, "198.19.9.2:") {
			t.Fatalf("/dial %s from pod-b to pod-a: %q, %v", proto, got, err)
		}
	}
	q := url.Values{"host": {"198.19.9.77"}, "port": {"8080"}, "protocol": {"tcp"}, "request": {"hostname"}}
	ans, err := Request(ctx, fromA, "http", "198.19.9.2:8080", "/dial?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseDialAnswer(ans); err == nil {
		t.Fatalf("/dial to an address nobody has succeeded: %s", ans)
	}
}
