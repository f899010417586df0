// Package probe tells whether each node peer is reachable through the tunnel
// right now. Every interval (jittered, spread over the peers) the agent sends
// an ICMP echo to each peer's bridge gateway, the first address of its pod
// CIDR, which the route to that CIDR carries through wgmesh0 with this node's
// bridge address as source: an answer proves both directions of the
// encrypted path, and the traffic keeps WireGuard sessions warm. A probe is
// up to Attempts echoes Timeout apart; the first packet to an idle peer
// waits for its handshake, which is why a lost echo is tried again.
//
// The model (State, Record, due times) is pure and unit-tested; Prober runs
// it against a Pinger (ICMP raw sockets in production).
//
// Two views of the same results:
//   - now: Reachable is the last probe's answer. The agent's metrics show
//     it as counts (wgmesh_peers_connected, wgmesh_peers_unreachable), per
//     peer only with --per-peer-metrics (wgmesh_peer_reachable,
//     wgmesh_peer_rtt_seconds); every answer's round trip goes into the
//     histogram wgmesh_peer_probe_rtt_seconds.
//   - held: Unreachable(now) is true only when probes have failed without a
//     break for HoldDown. The MeshPeer status uses it, so that a node that
//     fails is first judged by the node lifecycle controller (NodeNotReady,
//     one write) before a thousand agents would each write its loss.
package probe
