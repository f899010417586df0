package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/wireguard"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestParseFlagsDefaults(t *testing.T) {
	c, err := parseFlags(nil, env("NODE_NAME", "n1", "POD_NAMESPACE", "kube-system"))
	if err != nil {
		t.Fatal(err)
	}
	o := c.o
	got := fmt.Sprint(o.NodeName, " ", o.WireGuardMode, " ", o.ListenPort, " ", o.MTU, " ", o.EndpointAddressType, " ", o.ClusterCIDRs, " ", o.ServiceCIDRs,
		" ", o.LinkName, " ", o.BridgeName, " ", c.sp.mode, " ", c.sp.syncPeriod, " ", c.dp.cniConfDir, " ", o.DaemonSet.Name == "", " ", o.PerPeerMetrics, " ", c.np.enabled)
	// Per-peer metrics off: series per peer grow with nodes² across a cluster.
	// Network policy off until new pods are held back until programmed.
	// The service NAT stands aside where kube-proxy programs the node.
	want := fmt.Sprint("n1 ", wireguard.ModeAuto, " 51820 0 ", corev1.NodeInternalIP, " [10.244.0.0/16] [10.96.0.0/12] wgmesh0 wgmesh-br0 auto 30s /etc/cni/net.d true {false 250} false")
	if got != want {
		t.Errorf("defaults:\n got %s\nwant %s", got, want)
	}
	c, err = parseFlags([]string{"--daemonset-name=wgmesh-agent", "--cluster-cidrs=198.19.0.0/16,2001:db8:19::/56", "--nodeport-addresses=198.18.0.0/24",
		"--service-sync-period=5s", "--wireguard-mode=userspace", "--per-peer-metrics", "--per-peer-metrics-limit=20", "--network-policy", "--service-proxy"}, env("POD_NAMESPACE", "kube-system"))
	if err != nil {
		t.Fatal(err)
	}
	if c.o.DaemonSet.String() != "kube-system/wgmesh-agent" || len(c.o.ClusterCIDRs) != 2 || fmt.Sprint(c.sp.npa) != "[198.18.0.0/24]" ||
		c.sp.syncPeriod != 5*time.Second || c.o.WireGuardMode != wireguard.ModeUserspace || c.o.PerPeerMetrics != (agent.PerPeerMetrics{Enabled: true, Limit: 20}) || !c.np.enabled || c.sp.mode != proxyOn {
		t.Errorf("parsed %+v %v %v %+v %v %s", c.o.DaemonSet, c.o.ClusterCIDRs, c.sp.npa, c.o.PerPeerMetrics, c.np.enabled, c.sp.mode)
	}
	for arg, want := range map[string]proxyMode{"--service-proxy=false": proxyOff, "--service-proxy=auto": proxyAuto, "--service-proxy=true": proxyOn} {
		if c, err := parseFlags([]string{arg}, env("POD_NAMESPACE", "kube-system")); err != nil || c.sp.mode != want {
			t.Errorf("%s: mode %q, %v", arg, c.sp.mode, err)
		}
	}
	if _, err := parseFlags([]string{"--service-proxy=maybe"}, env("POD_NAMESPACE", "kube-system")); err == nil || !strings.Contains(err.Error(), `"maybe": want true, false or auto`) {
		t.Errorf("--service-proxy=maybe: %v, want an error naming the value", err)
	}
}

// TestParseFlagsErrors: every bad value is refused with the flag and the value
// named, before anything starts.
func TestParseFlagsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--wireguard-mode=fast"}, "fast"},
		{[]string{"--endpoint-address-type=Hostname"}, `--endpoint-address-type="Hostname"`},
		{[]string{"--cluster-cidrs=198.19.0.0/16,198.20.0.0/16"}, "--cluster-cidrs"},
		{[]string{"--service-cidrs=198.18.128.1/20"}, "--service-cidrs"},
		{[]string{"--listen-port=0"}, "--listen-port"},
		{[]string{"--mtu=100"}, "--mtu"},
		{[]string{"--key-rotation-period=-1h"}, "--key-rotation-period=-1h0m0s"},
		{[]string{"--per-peer-metrics-limit=0"}, "--per-peer-metrics-limit"},
		{[]string{"--daemonset-name=wgmesh-agent"}, "--daemonset-name=wgmesh-agent: no namespace"},
		{[]string{"--portmap-backend=ebtables"}, `--portmap-backend="ebtables"`},
		{[]string{"--nodeport-addresses=198.18.0.0"}, "--nodeport-addresses"},
		{[]string{"--service-sync-period=100ms"}, "--service-sync-period=100ms"},
		{[]string{"stray"}, `unexpected arguments ["stray"]`},
	} {
		_, err := parseFlags(append([]string{"--node-name=n1"}, tc.args...), env())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

func TestParseFlagsHelp(t *testing.T) {
	_, err := parseFlagsQuiet([]string{"--help"})
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v, want flag.ErrHelp (run exits 0)", err)
	}
	if _, err := parseFlagsQuiet([]string{"--kubeconfig=/tmp/kc", "--node-name=n1"}); err != nil {
		t.Errorf("--kubeconfig is the agent's flag too: %v", err)
	}
}

// parseFlagsQuiet parses with the usage text discarded.
func parseFlagsQuiet(args []string) (agentConfig, error) {
	stderr := usageOutput
	usageOutput = io.Discard
	defer func() { usageOutput = stderr }()
	return parseFlags(args, env())
}
