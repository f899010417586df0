package conflist

import (
	"encoding/json"
	"fmt"

	"github.com/wgmesh/wgmesh/cni/guard"
	"github.com/wgmesh/wgmesh/podnet"
)

// Names that users, the chart and the tests depend on (DESIGN.md).
const (
	NetworkName  = "wgmesh"
	ConfFileName = "10-wgmesh.conflist"
	BridgeName   = "wgmesh-br0"
	CNIVersion   = "1.0.0"

	PortMapNFTables = "nftables"
	PortMapIPTables = "iptables"
)

// Options is everything the conflist depends on.
type Options struct {
	// PodCIDRs are the node's spec.podCIDRs: at most one IPv4 and one IPv6 range.
	PodCIDRs []string
	// MTU is the mesh MTU, given to the bridge and the pods' interfaces.
	MTU int
	// BridgeName defaults to BridgeName.
	BridgeName string
	// PortMapBackend is PortMapNFTables or PortMapIPTables; see PortMapBackendFor.
	PortMapBackend string
	// DataDir for host-local; empty means the plugin's default (/var/lib/cni/networks).
	DataDir string
	// PolicySocket (with the agent's --network-policy) adds wgmesh-guard's
	// policy entry after anti-spoofing: the agent, listening there, judges
	// each new pod before ADD returns. Empty: no entry.
	PolicySocket string
}

// PortMapBackendFor picks portmap's backend from whether the host has the nft binary.
func PortMapBackendFor(hasNFT bool) string {
	if hasNFT {
		return PortMapNFTables
	}
	return PortMapIPTables
}

type confList struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Plugins    []any  `json:"plugins"`
}

type bridgeConf struct {
	Type        string   `json:"type"`
	Bridge      string   `json:"bridge"`
	IsGateway   bool     `json:"isGateway"`
	HairpinMode bool     `json:"hairpinMode"`
	IPMasq      bool     `json:"ipMasq"`
	MTU         int      `json:"mtu"`
	IPAM        ipamConf `json:"ipam"`
}

type ipamConf struct {
	Type    string        `json:"type"`
	Ranges  [][]rangeConf `json:"ranges"`
	Routes  []routeConf   `json:"routes"`
	DataDir string        `json:"dataDir,omitempty"`
}

type rangeConf struct {
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
}

type routeConf struct {
	Dst string `json:"dst"`
}

type portMapConf struct {
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities"`
	SNAT         bool            `json:"snat"`
	Backend      string          `json:"backend"`
}

// Render returns the conflist for opts, or an error naming the bad field.
// The output is deterministic: IPv4 range first, then IPv6.
func Render(opts Options) ([]byte, error) {
	prefixes, err := Validate(opts)
	if err != nil {
		return nil, err
	}
	bridge := opts.BridgeName
	if bridge == "" {
		bridge = BridgeName
	}
	ipam := ipamConf{Type: "host-local", DataDir: opts.DataDir}
	gate := guard.Conf{Type: guard.PluginType}
	for _, p := range prefixes {
		if p.Addr().Is4() {
			gate.Families = append(gate.Families, "ipv4")
		} else {
			gate.Families = append(gate.Families, "ipv6")
		}
	}
	for _, p := range prefixes {
		gw, _ := podnet.Gateway(p) // Validate left room for it
		ipam.Ranges = append(ipam.Ranges, []rangeConf{{Subnet: p.String(), Gateway: gw.Addr().String()}})
		if p.Addr().Is4() {
			ipam.Routes = append(ipam.Routes, routeConf{Dst: "0.0.0.0/0"})
		} else {
			ipam.Routes = append(ipam.Routes, routeConf{Dst: "::/0"})
		}
	}
	list := confList{
		CNIVersion: CNIVersion,
		Name:       NetworkName,
		Plugins: []any{
			// First: no pod network until the leak guard is in the
			// kernel (after a reboot the file is here before the agent).
			gate,
			bridgeConf{
				Type:        "bridge",
				Bridge:      bridge,
				IsGateway:   true,
				HairpinMode: true,
				IPMasq:      false,
				MTU:         opts.MTU,
				IPAM:        ipam,
			},
			// Right after bridge, before ADD returns: the pod sends
			// only from its own MAC and addresses (cni/antispoof).
			guard.Conf{Type: guard.PluginType, AntiSpoof: true, Bridge: bridge},
		},
	}
	if opts.PolicySocket != "" {
		// The network policy: the agent programs the pod's policy before
		// ADD returns (cni/guard's policy role).
		list.Plugins = append(list.Plugins, guard.Conf{Type: guard.PluginType, PolicySocket: opts.PolicySocket, Families: gate.Families})
	}
	list.Plugins = append(list.Plugins,
		portMapConf{
			Type:         "portmap",
			Capabilities: map[string]bool{"portMappings": true},
			SNAT:         true,
			Backend:      opts.PortMapBackend,
		})
	out, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding conflist: %w", err)
	}
	return append(out, '\n'), nil
}
