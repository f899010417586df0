package conflist

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/wgmesh/wgmesh/cni/guard"
)

// ipamSemantics mirrors what host-local reads (plugins/ipam/host-local/backend/allocator).
type ipamSemantics struct {
	IPAM struct {
		Type   string `json:"type"`
		Ranges [][]struct {
			Subnet  string `json:"subnet"`
			Gateway string `json:"gateway"`
		} `json:"ranges"`
		Routes []struct {
			Dst string `json:"dst"`
			GW  string `json:"gw"`
		} `json:"routes"`
		DataDir string `json:"dataDir"`
	} `json:"ipam"`
}

// bridgeSemantics is what the bridge plugin reads from its config.
type bridgeSemantics struct {
	Type        string `json:"type"`
	Bridge      string `json:"bridge"`
	IsGateway   bool   `json:"isGateway"`
	HairpinMode bool   `json:"hairpinMode"`
	IPMasq      bool   `json:"ipMasq"`
	MTU         int    `json:"mtu"`
}

type portmapSemantics struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	SNAT         *bool           `json:"snat"`
	Backend      string          `json:"backend"`
}

func mustLoad(t *testing.T, opts Options) *libcni.NetworkConfigList {
	t.Helper()
	out, err := Render(opts)
	if err != nil {
		t.Fatalf("Render(%+v): %v", opts, err)
	}
	list, err := libcni.ConfListFromBytes(out)
	if err != nil {
		t.Fatalf("libcni refuses the rendered conflist: %v\n%s", err, out)
	}
	return list
}

func TestRenderSemantics(t *testing.T) {
	cases := []struct {
		name     string
		opts     Options
		subnets  []string
		gateways []string
		routes   []string
	}{
		{
			name:     "ipv4",
			opts:     Options{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420, PortMapBackend: PortMapNFTables},
			subnets:  []string{"198.19.1.0/24"},
			gateways: []string{"198.19.1.1"},
			routes:   []string{"0.0.0.0/0"},
		},
		{
			name:     "ipv6 only",
			opts:     Options{PodCIDRs: []string{"2001:db8:100:1::/64"}, MTU: 1420, PortMapBackend: PortMapIPTables},
			subnets:  []string{"2001:db8:100:1::/64"},
			gateways: []string{"2001:db8:100:1::1"},
			routes:   []string{"::/0"},
		},
		{
			name:     "dual-stack given IPv6 first",
			opts:     Options{PodCIDRs: []string{"2001:db8:100:2::/64", "198.19.2.0/24"}, MTU: 1320, PortMapBackend: PortMapNFTables, DataDir: "/var/lib/cni/networks"},
			subnets:  []string{"198.19.2.0/24", "2001:db8:100:2::/64"},
			gateways: []string{"198.19.2.1", "2001:db8:100:2::1"},
			routes:   []string{"0.0.0.0/0", "::/0"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			list := mustLoad(t, tc.opts)
			if list.Name != NetworkName || list.CNIVersion != CNIVersion {
				t.Errorf("name/version = %q/%q, want %q/%q", list.Name, list.CNIVersion, NetworkName, CNIVersion)
			}
			var types []string
			for _, p := range list.Plugins {
				types = append(types, p.Network.Type)
			}
			if strings.Join(types, ",") != "wgmesh-guard,bridge,wgmesh-guard,portmap" {
				t.Fatalf("plugins %v, want wgmesh-guard (first: no network before the leak guard), bridge, wgmesh-guard (anti-spoofing, right after bridge) and portmap", types)
			}
			gate, err := guard.ParseConf(list.Plugins[0].Bytes)
			if err != nil || gate.AntiSpoof || len(gate.Families) == 0 {
				t.Errorf("first entry %s: want the gate (families, no antiSpoof): %+v %v", list.Plugins[0].Bytes, gate, err)
			}
			as, err := guard.ParseConf(list.Plugins[2].Bytes)
			if err != nil || !as.AntiSpoof || as.Bridge != BridgeName || len(as.Families) != 0 {
				t.Errorf("third entry %s: want antiSpoof for bridge %s: %+v %v", list.Plugins[2].Bytes, BridgeName, as, err)
			}

			var br bridgeSemantics
			if err := json.Unmarshal(list.Plugins[1].Bytes, &br); err != nil {
				t.Fatal(err)
			}
			want := bridgeSemantics{Type: "bridge", Bridge: BridgeName, IsGateway: true, HairpinMode: true, IPMasq: false, MTU: tc.opts.MTU}
			if br != want {
				t.Errorf("bridge = %+v, want %+v", br, want)
			}

			var conf ipamSemantics
			if err := json.Unmarshal(list.Plugins[1].Bytes, &conf); err != nil {
				t.Fatal(err)
			}
			ipam := conf.IPAM
			if ipam.Type != "host-local" {
				t.Errorf("ipam type %q", ipam.Type)
			}
			if ipam.DataDir != tc.opts.DataDir {
				t.Errorf("dataDir = %q, want %q", ipam.DataDir, tc.opts.DataDir)
			}
			if len(ipam.Ranges) != len(tc.subnets) {
				t.Fatalf("got %d range sets, want %d (one per family)", len(ipam.Ranges), len(tc.subnets))
			}
			for i, rs := range ipam.Ranges {
				if len(rs) != 1 {
					t.Fatalf("range set %d has %d ranges, want 1", i, len(rs))
				}
				sub, err := netip.ParsePrefix(rs[0].Subnet)
				if err != nil {
					t.Fatal(err)
				}
				gw, err := netip.ParseAddr(rs[0].Gateway)
				if err != nil || !sub.Contains(gw) || gw == sub.Addr() {
					t.Errorf("range %d gateway %q is not a host address inside %s", i, rs[0].Gateway, sub)
				}
				if got := sub.String(); got != tc.subnets[i] {
					t.Errorf("range %d subnet %s, want %s", i, got, tc.subnets[i])
				}
				if got := gw.String(); got != tc.gateways[i] {
					t.Errorf("range %d gateway %s, want %s", i, got, tc.gateways[i])
				}
			}
			var dsts []string
			for _, r := range ipam.Routes {
				if r.GW != "" {
					t.Errorf("route %s has gw %s; want the range gateway implied", r.Dst, r.GW)
				}
				dsts = append(dsts, r.Dst)
			}
			if strings.Join(dsts, ",") != strings.Join(tc.routes, ",") {
				t.Errorf("routes %v, want %v", dsts, tc.routes)
			}

			var pm portmapSemantics
			if err := json.Unmarshal(list.Plugins[3].Bytes, &pm); err != nil {
				t.Fatal(err)
			}
			if pm.Type != "portmap" || !pm.Capabilities["portMappings"] || pm.SNAT == nil || !*pm.SNAT || pm.Backend != tc.opts.PortMapBackend {
				t.Errorf("portmap = %+v, want portMappings capability, snat true, backend %q", pm, tc.opts.PortMapBackend)
			}
		})
	}
}

func TestRenderDeterministicAndBridgeOverride(t *testing.T) {
	opts := Options{PodCIDRs: []string{"198.19.3.0/24", "2001:db8:100:3::/64"}, MTU: 1420, PortMapBackend: PortMapNFTables, BridgeName: "wgmtestbr"}
	a, _ := Render(opts)
	b, _ := Render(opts)
	if !bytes.Equal(a, b) {
		t.Fatal("Render is not deterministic")
	}
	list := mustLoad(t, opts)
	var br bridgeSemantics
	if err := json.Unmarshal(list.Plugins[1].Bytes, &br); err != nil {
		t.Fatal(err)
	}
	if br.Bridge != "wgmtestbr" {
		t.Errorf("bridge %q, want override", br.Bridge)
	}
	if as, err := guard.ParseConf(list.Plugins[2].Bytes); err != nil || as.Bridge != "wgmtestbr" {
		t.Errorf("antiSpoof entry %s: bridge %q, want the override", list.Plugins[2].Bytes, as.Bridge)
	}
}

func TestPortMapBackendFor(t *testing.T) {
	if PortMapBackendFor(true) != "nftables" || PortMapBackendFor(false) != "iptables" {
		t.Fatal("wrong backend choice")
	}
}

func TestValidateErrors(t *testing.T) {
	ok := Options{PodCIDRs: []string{"198.19.1.0/24"}, MTU: 1420, PortMapBackend: PortMapNFTables}
	cases := []struct {
		name   string
		mutate func(*Options)
		want   []string // substrings the message must contain
	}{
		{"no podCIDRs", func(o *Options) { o.PodCIDRs = nil }, []string{"podCIDRs", "no pod CIDR yet"}},
		{"not a CIDR", func(o *Options) { o.PodCIDRs = []string{"198.19.1.0"} }, []string{"podCIDRs", `"198.19.1.0"`, "not a CIDR"}},
		{"host bits", func(o *Options) { o.PodCIDRs = []string{"198.19.1.7/24"} }, []string{`"198.19.1.7/24"`, "198.19.1.0/24"}},
		{"two IPv4", func(o *Options) { o.PodCIDRs = []string{"198.19.1.0/24", "198.19.2.0/24"} }, []string{"two IPv4", "198.19.2.0/24"}},
		{"three", func(o *Options) { o.PodCIDRs = []string{"198.19.1.0/24", "2001:db8::/64", "198.19.2.0/24"} }, []string{"at most one IPv4 and one IPv6"}},
		{"too small v4", func(o *Options) { o.PodCIDRs = []string{"198.19.1.0/31"} }, []string{`"198.19.1.0/31"`, "/30"}},
		{"too small v6", func(o *Options) { o.PodCIDRs = []string{"2001:db8::/127"} }, []string{"/126"}},
		{"mtu low", func(o *Options) { o.MTU = 100 }, []string{"mtu 100", "576-65535"}},
		{"mtu zero", func(o *Options) { o.MTU = 0 }, []string{"mtu 0"}},
		{"mtu v6", func(o *Options) { o.PodCIDRs = []string{"2001:db8::/64"}; o.MTU = 1000 }, []string{"mtu 1000", "1280-65535"}},
		{"mtu high", func(o *Options) { o.MTU = 70000 }, []string{"mtu 70000"}},
		{"backend", func(o *Options) { o.PortMapBackend = "" }, []string{"portMapBackend", `"nftables"`, `"iptables"`}},
		{"bridge name", func(o *Options) { o.BridgeName = "a-very-long-bridge-name" }, []string{"bridgeName", "15"}},
		{"dataDir", func(o *Options) { o.DataDir = "relative" }, []string{"dataDir", "absolute"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := ok
			tc.mutate(&o)
			_, err := Render(o)
			if err == nil {
				t.Fatalf("Render(%+v) succeeded, want an error", o)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	if _, err := Render(ok); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
}

// TestRenderPolicyEntry: with PolicySocket the policy entry follows
// anti-spoofing (it needs bridge's prevResult, and portmap last), with the
// socket and the families whose fail-closed rules it checks; without it
// there is no such entry.
func TestRenderPolicyEntry(t *testing.T) {
	opts := Options{PodCIDRs: []string{"198.19.1.0/24", "2001:db8:100:1::/64"}, MTU: 1420, PortMapBackend: PortMapNFTables}
	list := mustLoad(t, opts)
	for _, p := range list.Plugins {
		if c, err := guard.ParseConf(p.Bytes); err == nil && c.PolicySocket != "" {
			t.Errorf("without PolicySocket: entry %s", p.Bytes)
		}
	}
	opts.PolicySocket = "/var/run/wgmesh/policy.sock"
	list = mustLoad(t, opts)
	var types []string
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	if got := strings.Join(types, ","); got != "wgmesh-guard,bridge,wgmesh-guard,wgmesh-guard,portmap" {
		t.Fatalf("plugins %s", got)
	}
	c, err := guard.ParseConf(list.Plugins[3].Bytes)
	if err != nil || c.PolicySocket != opts.PolicySocket || c.AntiSpoof || strings.Join(c.Families, ",") != "ipv4,ipv6" {
		t.Errorf("fourth entry %s: want the policy role on %s for ipv4,ipv6: %+v %v", list.Plugins[3].Bytes, opts.PolicySocket, c, err)
	}
	opts.PolicySocket = "policy.sock"
	if _, err := Render(opts); err == nil || !strings.Contains(err.Error(), "policySocket") {
		t.Errorf("a relative socket: %v, want an error naming policySocket", err)
	}
}
