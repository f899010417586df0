package kubectl

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// maxMatrixNodes: larger meshes get the list of unreachable pairs only.
const maxMatrixNodes = 16

// maxPairsListed bounds the list of unreachable pairs (a failed node in a
// large mesh is named by every other node until it is marked not Ready).
const maxPairsListed = 100

// Pair is one direction of a node pair that cannot reach the other.
type Pair struct{ From, To string }

// Reachability is what every node's agent reports about its peers, from the
// MeshPeer statuses (status.unreachablePeers, connected/total).
type Reachability struct {
	// Nodes are the node MeshPeers' names, sorted.
	Nodes []string
	// Unreachable are the pairs the agents name, sorted.
	Unreachable []Pair
	// Unnamed counts unreachable peers beyond the names a status holds
	// (a status names at most 32), by reporting node.
	Unnamed map[string]int
	// NotReady are nodes marked NodeNotReady (left out of CONNECTED), with
	// the condition's message.
	NotReady map[string]string
	// NoStatus are nodes whose agent has not written a status yet.
	NoStatus map[string]bool
}

// reachability computes the report from the MeshPeers.
func reachability(peers []wgmeshv1.MeshPeer) Reachability {
	r := Reachability{Unnamed: map[string]int{}, NotReady: map[string]string{}, NoStatus: map[string]bool{}}
	for i := range peers {
		p := &peers[i]
		if p.Spec.NodeName == "" {
			continue
		}
		r.Nodes = append(r.Nodes, p.Name)
		if c := meta.FindStatusCondition(p.Status.Conditions, wgmeshv1.ConditionNodeNotReady); c != nil && c.Status == metav1.ConditionTrue {
			r.NotReady[p.Name] = c.Message
		}
		if meta.FindStatusCondition(p.Status.Conditions, wgmeshv1.ConditionReady) == nil {
			r.NoStatus[p.Name] = true
			continue
		}
		for _, to := range p.Status.UnreachablePeers {
			r.Unreachable = append(r.Unreachable, Pair{From: p.Name, To: to})
		}
		if extra := int(p.Status.TotalPeers-p.Status.ConnectedPeers) - len(p.Status.UnreachablePeers); extra > 0 {
			r.Unnamed[p.Name] = extra
		}
	}
	sort.Strings(r.Nodes)
	sort.Slice(r.Unreachable, func(i, j int) bool {
		if r.Unreachable[i].From != r.Unreachable[j].From {
			return r.Unreachable[i].From < r.Unreachable[j].From
		}
		return r.Unreachable[i].To < r.Unreachable[j].To
	})
	return r
}

// cell is the matrix entry for from -> to.
func (r Reachability) cell(from, to string, down map[Pair]bool) string {
	_, fromNotReady := r.NotReady[from]
	_, toNotReady := r.NotReady[to]
	switch {
	case from == to:
		return "-"
	case r.NoStatus[from] || fromNotReady:
		// A node not Ready may have no agent running: its report is stale.
		return "?"
	case down[Pair{from, to}]:
		return "NO"
	case toNotReady:
		return "n/r"
	default:
		return "ok"
	}
}

// writeReachability prints the summary, the matrix (small meshes) and the
// unreachable pairs by name.
func writeReachability(w io.Writer, r Reachability) error {
	if len(r.Nodes) == 0 {
		return nil
	}
	unnamed := 0
	for _, n := range r.Unnamed {
		unnamed += n
	}
	total := len(r.Unreachable) + unnamed
	fmt.Fprintln(w)
	if total == 0 {
		fmt.Fprintf(w, "Reachability: every node reaches every peer it expects (%d nodes, probes through the tunnel).\n", len(r.Nodes))
	} else {
		fmt.Fprintf(w, "Reachability: %d unreachable node pairs (one direction each) among %d nodes.\n", total, len(r.Nodes))
	}
	if len(r.Nodes) <= maxMatrixNodes {
		down := map[Pair]bool{}
		for _, p := range r.Unreachable {
			down[p] = true
		}
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintf(tw, "FROM \\ TO\t%s\n", strings.Join(r.Nodes, "\t"))
		for _, from := range r.Nodes {
			cells := make([]string, len(r.Nodes))
			for j, to := range r.Nodes {
				cells[j] = r.cell(from, to, down)
			}
			fmt.Fprintf(tw, "%s\t%s\n", from, strings.Join(cells, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w, "(ok: reachable; NO: probes unanswered; n/r: node not Ready, not counted; ?: no report, or the reporting node is not Ready)")
	}
	if total > 0 {
		fmt.Fprintln(w, "\nUnreachable pairs:")
		for i, p := range r.Unreachable {
			if i == maxPairsListed {
				fmt.Fprintf(w, "  and %d more named pairs (kubectl get meshpeers -o wide lists each node's)\n", len(r.Unreachable)-i)
				break
			}
			fmt.Fprintf(w, "  %s -> %s\n", p.From, p.To)
		}
		var from []string
		for n := range r.Unnamed {
			from = append(from, n)
		}
		sort.Strings(from)
		for _, n := range from {
			fmt.Fprintf(w, "  %s -> %d more (a status names at most 32)\n", n, r.Unnamed[n])
		}
	}
	if len(r.NotReady) > 0 {
		var names []string
		for n := range r.NotReady {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintln(w, "\nNodes not Ready (left out of CONNECTED):")
		for _, n := range names {
			fmt.Fprintf(w, "  %s: %s\n", n, r.NotReady[n])
		}
	}
	return nil
}
