package agent

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/wgmesh/wgmesh/agent/mesh"
	"github.com/wgmesh/wgmesh/agent/paths"
)

// TestLogPaths: a peer's path is logged once when it appears and again
// when it changes, never for spec.endpoint pairs.
func TestLogPaths(t *testing.T) {
	var lines []string
	a := &Agent{reported: map[string]bool{}, log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})}
	peers := []mesh.Peer{{Name: "a2", Path: paths.KindPrivate, Endpoint: "198.18.10.2:51820"}, {Name: "old", Path: paths.KindEndpoint, Endpoint: "198.18.0.9:51820"},
		{Name: "o3", Path: paths.KindRelayNeeded, PathReason: "relay needed (cloud-a to office-3): the peer has no observed endpoint"}}
	a.logPaths(peers)
	a.logPaths(peers)
	if len(lines) != 2 || !strings.Contains(lines[0], `"meshpeer"="a2" "path"="private" "endpoint"="198.18.10.2:51820"`) ||
		!strings.Contains(lines[1], `"reason"="relay needed (cloud-a to office-3): the peer has no observed endpoint"`) {
		t.Fatalf("logged %q, want a2's and o3's paths once", lines)
	}
	peers[2] = mesh.Peer{Name: "o3", Path: paths.KindPunched, Endpoint: "198.18.100.23:40003", Keepalive: 25}
	a.logPaths(peers)
	if len(lines) != 3 || !strings.Contains(lines[2], `"meshpeer"="o3" "path"="punched"`) {
		t.Fatalf("logged %q, want o3's new path", lines)
	}
}
