package kubectl

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// largeMesh is the node count above which only unreachable pairs are
// drawn (unless --all-edges): a full mesh of 1,000 nodes has 499,500 edges.
const largeMesh = 40

// graphInput is what the mesh picture is drawn from.
type graphInput struct {
	Peers    []wgmeshv1.MeshPeer
	NodeUIDs func(name string) (types.UID, bool)
	// RTT[from][to] is the last probe's round trip in seconds as node from
	// measured it; nil when not asked for.
	RTT map[string]map[string]float64
	// Notes are shown in the picture's label (what could not be read).
	Notes []string
	// AllEdges draws every pair even in a large mesh.
	AllEdges bool
}

// view is what one node says about reaching another.
type view int

const (
	viewUnknown view = iota // no status, not expected, or beyond the listed names
	viewOK
	viewBad
)

// pairState is a node pair's reachability, from both sides' status.
type pairState int

const (
	pairUnknown pairState = iota // neither side reports
	pairPartial                  // one side reaches the other, the other does not report
	pairOK                       // both sides reach each other
	pairBad                      // at least one side cannot reach the other
)

type graphNode struct {
	Name, Endpoint, AllowedIPs string
	NAT, NotReady              bool
	// Keepalive > 0 on a node: it keeps a NAT mapping open, so it is
	// likely behind NAT even with an (inside) endpoint.
	Keepalive int32
	Excluded  string // condition type and message, or ""
	// Reports: the node's agent has written status (a Ready condition)
	// and its Node is Ready, so its unreachable list means something.
	Reports     bool
	Unreachable map[string]bool
	// Partial: more peers are unreachable than the status names (the
	// list is capped), so an unlisted peer is not known to be reachable.
	Partial bool
}

type graphEdge struct {
	A, B   string
	State  pairState
	AB, BA view
	RTT    string
}

type graphModel struct {
	Nodes     []graphNode
	Externals []graphNode
	Edges     []graphEdge // every pair of drawable nodes, sorted
	Counts    map[pairState]int
}

// buildGraph is the pure part of `kubectl wgmesh graph`.
func buildGraph(in graphInput) graphModel {
	var g graphModel
	// What each agent reports, as kubectl wgmesh status reads it.
	r := reachability(in.Peers)
	down := map[string]map[string]bool{}
	for _, p := range r.Unreachable {
		if down[p.From] == nil {
			down[p.From] = map[string]bool{}
		}
		down[p.From][p.To] = true
	}
	for i := range in.Peers {
		mp := &in.Peers[i]
		n := graphNode{Name: mp.Name, Endpoint: string(mp.Spec.Endpoint), AllowedIPs: joinCIDRs(mp.Spec.AllowedIPs), NAT: mp.Spec.Endpoint == ""}
		if k := mp.Spec.PersistentKeepalive; k != nil {
			n.Keepalive = *k
		}
		if ok, c := mp.Excluded(); ok {
			n.Excluded = c.Type + ": " + c.Message
		}
		if !wgmeshv1.IsNodePeer(mp, in.NodeUIDs) {
			g.Externals = append(g.Externals, n)
			continue
		}
		_, n.NotReady = r.NotReady[mp.Name]
		n.Reports = !n.NotReady && !r.NoStatus[mp.Name]
		n.Unreachable = down[mp.Name]
		n.Partial = r.Unnamed[mp.Name] > 0
		g.Nodes = append(g.Nodes, n)
	}
	sort.Slice(g.Nodes, func(i, j int) bool { return g.Nodes[i].Name < g.Nodes[j].Name })
	sort.Slice(g.Externals, func(i, j int) bool { return g.Externals[i].Name < g.Externals[j].Name })

	g.Counts = map[pairState]int{}
	for i := range g.Nodes {
		a := &g.Nodes[i]
		if a.Excluded != "" {
			continue
		}
		for j := i + 1; j < len(g.Nodes); j++ {
			b := &g.Nodes[j]
			if b.Excluded != "" {
				continue
			}
			e := graphEdge{A: a.Name, B: b.Name, AB: viewOf(a, b), BA: viewOf(b, a)}
			switch {
			case e.AB == viewBad || e.BA == viewBad:
				e.State = pairBad
			case e.AB == viewOK && e.BA == viewOK:
				e.State = pairOK
			case e.AB == viewOK || e.BA == viewOK:
				e.State = pairPartial
			}
			e.RTT = rttLabel(in.RTT, a.Name, b.Name)
			g.Counts[e.State]++
			g.Edges = append(g.Edges, e)
		}
	}
	return g
}

// viewOf is what a says about reaching b.
func viewOf(a, b *graphNode) view {
	switch {
	case !a.Reports || b.NotReady:
		// b is not expected while its Node is not Ready.
		return viewUnknown
	case a.Unreachable[b.Name]:
		return viewBad
	case a.Partial:
		return viewUnknown
	}
	return viewOK
}

// rttLabel is the mean of the round trips each side measured, or "".
func rttLabel(rtt map[string]map[string]float64, a, b string) string {
	var sum float64
	n := 0
	for _, v := range []struct{ from, to string }{{a, b}, {b, a}} {
		if s, ok := rtt[v.from][v.to]; ok {
			sum += s
			n++
		}
	}
	if n == 0 {
		return ""
	}
	ms := sum / float64(n) * 1000
	if ms < 10 {
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// renderDOT draws the model as a Graphviz graph: boxes for nodes (dashed
// when behind NAT, grey when NotReady, red when excluded), ellipses for
// external peers, edges colored by reachability and labelled with RTT.
func renderDOT(in graphInput) string {
	g := buildGraph(in)
	large := len(g.Nodes) > largeMesh && !in.AllEdges
	var b strings.Builder
	b.WriteString("graph wgmesh {\n")
	b.WriteString("  graph [labelloc=t fontname=\"Helvetica\" fontsize=11 overlap=false splines=true")
	fmt.Fprintf(&b, " label=%s];\n", dotQuote(summary(g, in, large)))
	b.WriteString("  node [fontname=\"Helvetica\" fontsize=10];\n")
	b.WriteString("  edge [fontname=\"Helvetica\" fontsize=9];\n")

	drawn := map[string]bool{}
	if large {
		for _, e := range g.Edges {
			if e.State == pairBad {
				drawn[e.A], drawn[e.B] = true, true
			}
		}
	}
	for _, n := range g.Nodes {
		if large && !drawn[n.Name] && n.Excluded == "" && !n.NotReady {
			continue
		}
		writeNode(&b, n, false)
	}
	for _, n := range g.Externals {
		writeNode(&b, n, true)
	}
	for _, e := range g.Edges {
		if large && e.State != pairBad {
			continue
		}
		writeEdge(&b, e)
	}
	if !large {
		for _, x := range g.Externals {
			if x.Excluded != "" {
				continue
			}
			for _, n := range g.Nodes {
				if n.Excluded == "" {
					fmt.Fprintf(&b, "  %s -- %s [style=dotted color=gray50];\n", dotQuote(x.Name), dotQuote(n.Name))
				}
			}
		}
	}
	b.WriteString("}\n")
	return b.String()
}

func writeNode(b *strings.Builder, n graphNode, external bool) {
	lines := []string{n.Name}
	attrs := []string{}
	switch {
	case external:
		lines = append(lines, "external peer")
		attrs = append(attrs, "shape=ellipse", "style=filled", "fillcolor=lightyellow")
	case n.NotReady:
		attrs = append(attrs, "shape=box", "style=\"filled,rounded\"", "fillcolor=gray85")
		lines = append(lines, "Node NotReady")
	case n.NAT || n.Keepalive > 0:
		attrs = append(attrs, "shape=box", "style=\"dashed,rounded\"")
	default:
		attrs = append(attrs, "shape=box", "style=rounded")
	}
	if n.AllowedIPs != "" {
		lines = append(lines, n.AllowedIPs)
	}
	switch {
	case n.Endpoint != "" && n.Keepalive > 0 && !external:
		lines = append(lines, n.Endpoint, fmt.Sprintf("keepalive %ds: behind NAT?", n.Keepalive))
	case n.Endpoint != "":
		lines = append(lines, n.Endpoint)
	case external:
		lines = append(lines, "no endpoint (roaming)")
	default:
		lines = append(lines, "behind NAT (no endpoint)")
	}
	if n.Excluded != "" {
		lines = append(lines, "excluded: "+n.Excluded)
		attrs = append(attrs, "color=red", "fontcolor=red")
	}
	fmt.Fprintf(b, "  %s [%s label=%s];\n", dotQuote(n.Name), strings.Join(attrs, " "), dotQuote(strings.Join(lines, "\n")))
}

func writeEdge(b *strings.Builder, e graphEdge) {
	var attrs []string
	label := e.RTT
	switch e.State {
	case pairOK:
		attrs = append(attrs, "color=forestgreen")
	case pairPartial:
		attrs = append(attrs, "color=forestgreen", "style=dashed")
	case pairUnknown:
		attrs = append(attrs, "color=gray60", "style=dotted")
	case pairBad:
		attrs = append(attrs, "color=red", "penwidth=2")
		switch {
		case e.AB == viewBad && e.BA == viewBad:
			label = joinLabel("unreachable", label)
		case e.AB == viewBad:
			attrs = append(attrs, "dir=forward")
			label = joinLabel(e.A+" cannot reach "+e.B, label)
		default:
			attrs = append(attrs, "dir=back")
			label = joinLabel(e.B+" cannot reach "+e.A, label)
		}
	}
	if label != "" {
		attrs = append(attrs, "label="+dotQuote(label))
	}
	fmt.Fprintf(b, "  %s -- %s [%s];\n", dotQuote(e.A), dotQuote(e.B), strings.Join(attrs, " "))
}

func summary(g graphModel, in graphInput, large bool) string {
	nat, excluded, notReady := 0, 0, 0
	for _, n := range g.Nodes {
		switch {
		case n.Excluded != "":
			excluded++
		case n.NotReady:
			notReady++
		}
		if n.NAT || n.Keepalive > 0 {
			nat++
		}
	}
	lines := []string{fmt.Sprintf("wgmesh: %d nodes (%d behind NAT: no endpoint or a keepalive, %d NotReady, %d excluded), %d external peers",
		len(g.Nodes), nat, notReady, excluded, len(g.Externals))}
	lines = append(lines, fmt.Sprintf("%d node pairs: %d reachable, %d reachable by one side's report, %d unreachable, %d unknown",
		len(g.Edges), g.Counts[pairOK], g.Counts[pairPartial], g.Counts[pairBad], g.Counts[pairUnknown]))
	lines = append(lines, "edges: green = both sides reach each other, dashed green = one side reports reaching, red = cannot reach (the arrow points at the unreached node), dotted grey = unknown (no report or NodeNotReady)")
	if large {
		lines = append(lines, fmt.Sprintf("more than %d nodes: only unreachable pairs and nodes with problems are drawn (--all-edges draws all)", largeMesh))
	}
	return strings.Join(append(lines, in.Notes...), "\n")
}

func joinLabel(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + ", " + b
}

// dotQuote quotes s as a DOT string; a newline becomes a centered line break.
func dotQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", "")
	return `"` + r.Replace(s) + `"`
}
