// Package guard is the CNI gate in front of wgmesh's pod network: the first
// plugin of the conflist (type wgmesh-guard) fails ADD with a clear message
// until the agent's leak guard is in the kernel. After a reboot the conflist
// is still on disk while nftables is empty; without the gate, pods the
// kubelet starts before the agent would get a network whose traffic to other
// nodes' pods could leave in clear.
package guard

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/google/nftables"
)

// The kernel names of the leak guard (DESIGN.md); agent/egress programs
// them.
const (
	PluginType   = "wgmesh-guard"
	Table        = "wgmesh"
	ForwardChain = "guard-forward"
	OutputChain  = "guard-output"
)

// Conf is one of the plugin's entries in the conflist. The plugin has three
// roles: the gate (first in the list, Families set), with AntiSpoof,
// anti-spoofing on the pod bridge (right after bridge; cni/antispoof), and
// with PolicySocket, the network policy's hook (after that; policy.go).
type Conf struct {
	CNIVersion string `json:"cniVersion,omitempty"`
	Type       string `json:"type"`
	// Families that must be guarded: "ipv4", "ipv6" (the node's pod CIDR
	// families).
	Families []string `json:"families,omitempty"`
	// AntiSpoof: register the pod's port, MAC and addresses (from the
	// bridge plugin's prevResult) so that the pod sends only as itself.
	AntiSpoof bool `json:"antiSpoof,omitempty"`
	// Bridge is the pod bridge (AntiSpoof): the interface in prevResult
	// that is not the pod's host-side veth.
	Bridge string `json:"bridge,omitempty"`
	// PolicySocket (the policy role, after bridge; only with the agent's
	// --network-policy): ask the agent there to judge the pod before ADD
	// returns (policy.go). Families are then those whose fail-closed
	// rules must be in the kernel when the agent does not answer.
	PolicySocket string `json:"policySocket,omitempty"`
}

// ParseConf reads the plugin's configuration from the runtime.
func ParseConf(stdin []byte) (Conf, error) {
	var c Conf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return c, fmt.Errorf("%s: bad configuration: %w", PluginType, err)
	}
	for _, f := range c.Families {
		if f != "ipv4" && f != "ipv6" {
			return c, fmt.Errorf("%s: families entry %q: want ipv4 or ipv6", PluginType, f)
		}
	}
	if c.PolicySocket != "" && (c.AntiSpoof || !filepath.IsAbs(c.PolicySocket)) {
		return c, fmt.Errorf("%s: policySocket %q: want an absolute path, in an entry of its own", PluginType, c.PolicySocket)
	}
	if c.AntiSpoof && c.Bridge == "" {
		return c, fmt.Errorf("%s: antiSpoof needs bridge, the name of the pod bridge (for example wgmesh-br0)", PluginType)
	}
	return c, nil
}

// Installed checks, in the current network namespace, that table wgmesh
// has both guard chains with rules in every family of c. The error says
// what is missing and why pods must wait.
func Installed(families []string) error {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("%s: opening nftables: %w", PluginType, err)
	}
	defer conn.CloseLasting()
	for _, f := range families {
		fam, name := nftables.TableFamilyIPv4, "ip"
		if f == "ipv6" {
			fam, name = nftables.TableFamilyIPv6, "ip6"
		}
		table := &nftables.Table{Name: Table, Family: fam}
		for _, chain := range []string{ForwardChain, OutputChain} {
			rules, err := conn.GetRules(table, &nftables.Chain{Name: chain, Table: table})
			if err != nil || len(rules) == 0 {
				return fmt.Errorf("%s: the wgmesh leak guard is not installed yet (nftables table %s %s chain %s is missing or empty): "+
					"the wgmesh agent has not programmed this node since it booted; the pod is retried once it has", PluginType, name, Table, chain)
			}
		}
	}
	return nil
}
