package kubectl

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/wgmesh/wgmesh/agent/paths"
	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// maxPathRows bounds the pairs listed by name (those without a direct
// path: relayed, with their relay, or with none; and punched ones); the
// counts cover every pair.
const maxPathRows = 32

// pathRow is one node pair and how it is reached.
type pathRow struct {
	A, B, Path, Detail string
}

// pathSummary counts the node pairs by path (agent/paths.Choose and
// ChooseRelay, the same choices both agents make) and names those punched,
// relayed (and through which node) or needing a relay.
type pathSummary struct {
	Counts map[paths.Kind]int
	Rows   []pathRow
	More   int
	// Located: some node MeshPeer has a location (else every pair uses
	// spec.endpoint and there is nothing to say).
	Located bool
}

// pairPaths is the pure part of the paths section: every pair of node
// MeshPeers that are in the mesh, each counted once.
func pairPaths(peers []wgmeshv1.MeshPeer) pathSummary {
	var nodes []*wgmeshv1.MeshPeer
	for i := range peers {
		p := &peers[i]
		if excluded, _ := p.Excluded(); excluded || !wgmeshv1.IsNodePeer(p, nil) {
			continue
		}
		nodes = append(nodes, p)
	}
	slices.SortFunc(nodes, func(a, b *wgmeshv1.MeshPeer) int { return strings.Compare(a.Name, b.Name) })
	sum := pathSummary{Counts: map[paths.Kind]int{}}
	var relays []paths.Node // read once, on the first pair that needs a relay
	for i, a := range nodes {
		sum.Located = sum.Located || a.Spec.Location != ""
		for _, b := range nodes[i+1:] {
			p := paths.Choose(paths.FromSpec(a.Spec), paths.FromSpec(b.Spec))
			if p.Kind == paths.KindRelayNeeded {
				if relays == nil {
					relays = paths.RelayNodes(peers, nil)
				}
				// The agents' choice (agent/mesh), as far as the MeshPeers
				// tell: each also needs the relay usable on its own node.
				if r, ok := paths.ChooseRelay(a.Name, b.Name, relays); ok {
					p.Kind, p.Reason = paths.KindRelayed, fmt.Sprintf("through %s: %s", r, p.Reason)
				} else {
					p.Reason += "; no node can relay (a node with a private or public path to both, not labelled wgmesh.io/relay=false)"
				}
			}
			sum.Counts[p.Kind]++
			if p.Kind != paths.KindPunched && p.Kind != paths.KindRelayNeeded && p.Kind != paths.KindRelayed {
				continue
			}
			if len(sum.Rows) == maxPathRows {
				sum.More++
				continue
			}
			detail := p.Reason
			if p.Kind == paths.KindPunched {
				back := paths.Choose(paths.FromSpec(b.Spec), paths.FromSpec(a.Spec))
				detail = fmt.Sprintf("%s sends to %s, %s to %s", a.Name, p.Endpoint, b.Name, back.Endpoint)
			}
			sum.Rows = append(sum.Rows, pathRow{A: a.Name, B: b.Name, Path: string(p.Kind), Detail: detail})
		}
	}
	return sum
}

func writePaths(w io.Writer, sum pathSummary) error {
	if !sum.Located {
		return nil
	}
	var counts []string
	for _, k := range paths.Kinds {
		if n := sum.Counts[k]; n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", k, n))
		}
	}
	fmt.Fprintf(w, "\nPaths between node pairs: %s\n", strings.Join(counts, ", "))
	if len(sum.Rows) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tNODE\tPATH\tDETAIL")
	for _, r := range sum.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.A, r.B, r.Path, r.Detail)
	}
	if sum.More > 0 {
		fmt.Fprintf(tw, "and %d more pairs\t\t\t\n", sum.More)
	}
	return tw.Flush()
}
