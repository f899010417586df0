// Package egress masquerades pod traffic that leaves the cluster to the node's
// address, and keeps the br_netfilter sysctls on so that bridged pod traffic
// passes netfilter.
//
// The rules are egress's Part of nftables table wgmesh (families ip and
// ip6; package nft programs it), one base chain, "egress-postrouting" (type
// nat, hook postrouting, priority srcnat). It reads, in nft syntax:
//
//	oifname "wgmesh0" return          # into the mesh: never NATed
//	ip daddr 198.19.0.0/16 return     # each --cluster-cidrs range of the family
//	ip daddr 198.18.128.0/20 return   # each --service-cidrs range of the family
//	ip saddr 198.19.1.0/24 masquerade # the node's podCIDR of the family
//
// so traffic between pods (on the same node or across the mesh) keeps its
// addresses, and pod traffic to anything else leaves with the node's address.
// The leak guard, which drops traffic to the mesh's ranges on any other
// interface, is its own package (agent/leakguard).
package egress
