// Package conflist renders wgmesh's CNI network configuration list
// (/etc/cni/net.d/10-wgmesh.conflist). It is pure: it takes the node's pod
// CIDRs, the mesh MTU and a few host facts as input and returns bytes; the
// agent (agent/cniinstall) writes the file and installs the plugin binaries.
//
// The list is wgmesh-guard (the gate, cni/guard), bridge, wgmesh-guard again
// with "antiSpoof" (cni/antispoof), then portmap. Bridge and portmap are the
// standard plugins from github.com/containernetworking/plugins:
//
//   - bridge: attaches pods to wgmesh-br0 (isGateway, hairpinMode, ipMasq false,
//     mtu = mesh MTU) with host-local IPAM over the node's podCIDR(s), one range
//     per family, default routes per family, and an explicit gateway equal to
//     the first address of each range (the same address the agent puts on the
//     bridge, see Gateway).
//   - wgmesh-guard with "antiSpoof": true and the bridge's name: registers
//     the pod's host-side veth, MAC and addresses (from bridge's prevResult)
//     in nftables table bridge wgmesh, so that from then on the pod sends
//     only as itself; DEL removes them. It comes before portmap, which
//     receives bridge's result unchanged.
//   - portmap: hostPort support (capability portMappings, snat true), with the
//     nftables backend when the host has the nft binary, else iptables. Which
//     one is an input (Options.PortMapBackend), so rendering stays pure.
//
// loopback is deliberately not in the list: container runtimes bring the pod's
// lo up themselves. containerd's CRI plugin invokes the loopback plugin as a
// separate network ("cni-loopback", type loopback) from the same plugin
// directory, so the loopback binary must be installed in /opt/cni/bin even
// though no conflist names it; CRI-O sets lo up itself. The agent therefore
// installs bridge, host-local, portmap and loopback.
//
// Before the node has a podCIDR no file is rendered or written. A runtime that
// calls CNI ADD then finds no configuration ("no network config found in
// /etc/cni/net.d"), keeps the pod sandbox not ready and retries; no pod is
// half-configured. A configuration the bridge plugin rejects surfaces as the
// bridge plugin's own error from ADD.
package conflist
