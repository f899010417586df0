// Package egress masquerades pod traffic that leaves the cluster to the node's
// address, and keeps the br_netfilter sysctls on so that bridged pod traffic
// passes netfilter.
//
// The rules live in the nftables table "wgmesh" (families ip and ip6), in one
// base chain of their own, "egress-postrouting" (type nat, hook postrouting,
// priority srcnat). The chain reads, in nft syntax:
//
//	oifname "wgmesh0" return          # into the mesh: never NATed
//	ip daddr 198.19.0.0/16 return     # each --cluster-cidrs range of the family
//	ip daddr 198.18.128.0/20 return   # each --service-cidrs range of the family
//	ip saddr 198.19.1.0/24 masquerade # the node's podCIDR of the family
//
// so traffic between pods (on the same node or across the mesh) keeps its
// addresses, and pod traffic to anything else leaves with the node's address.
//
// Two filter chains, "guard-forward" and "guard-output" (hooks forward and
// output, priority filter, policy accept), hold one rule per --cluster-cidrs
// range of the family:
//
//	oifname != "wgmesh0" oifname != "wgmesh-br0" ip daddr 198.19.0.0/16 drop
//
// Without it, pod (or node) traffic to a node whose route is not installed
// yet (the moment a node joins, or behind NAT before its first handshake)
// follows the default route and crosses the underlay unencrypted; the
// end-to-end capture caught exactly that.
//
// The program is computed by a pure function (Desired) and checked by tracing
// packets through it (Program.Verdict). Reconciler applies it over netlink
// with github.com/google/nftables, so the agent needs no nft binary. It owns
// only its three chains: the table is created if missing but never flushed, because
// service NAT adds its own chains to the same table. Each rule carries its
// model text as an nftables comment; a chain whose hook, rules or comments
// differ from the desired program is rewritten in one netlink batch (drift
// repair), and nothing is written when they match.
package egress
