package agent

import (
	"strings"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
)

// logPaths logs each peer's path when it is new or changes (kind or
// endpoint): with locations, how this node reaches each peer is the first
// thing to look at when a pair cannot talk. Pairs on spec.endpoint (no
// locations) are not logged, as before locations.
func (a *Agent) logPaths(peers []mesh.Peer) {
	const prefix = "path:"
	seen := map[string]bool{}
	for _, p := range peers {
		if p.Path == "" || p.Path == paths.KindEndpoint {
			continue
		}
		k := prefix + p.Name + "|" + string(p.Path) + "|" + p.Endpoint
		seen[k] = true
		if a.reported[k] {
			continue
		}
		a.reported[k] = true
		kv := []any{"meshpeer", p.Name, "path", p.Path, "endpoint", p.Endpoint, "keepalive", p.Keepalive}
		if p.PathReason != "" {
			kv = append(kv, "reason", p.PathReason)
		}
		a.log.Info("peer path", kv...)
	}
	for k := range a.reported {
		if strings.HasPrefix(k, prefix) && !seen[k] {
			delete(a.reported, k)
		}
	}
}
