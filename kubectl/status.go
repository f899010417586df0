package kubectl

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func init() {
	register(Command{
		Name:  "status",
		Usage: "",
		Help: `lists every MeshPeer (node and external) with its endpoint, allowed IPs,
connected peers, readiness and any problem condition (KeyConflict,
AllowedIPsConflict, InvalidAnnotation), the nodes that have no MeshPeer yet
and why (no public key announced, no pod CIDR), then reachability: which node
pairs cannot reach each other through the tunnel (a matrix up to 16 nodes),
and the nodes not Ready; with locations, how node pairs reach each other
(private, public, punched, relayed, relay-needed: the agents' own choice),
naming the pairs punched, relayed (with their relay) or with no relay.`,
		Run: runStatus,
	})
}

func runStatus(env *Env, args []string) error {
	var kf KubeFlags
	fs := NewFlagSet("status", &kf)
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, ctx, cancel, err := kf.Connect()
	if err != nil {
		return err
	}
	defer cancel()
	var peers wgmeshv1.MeshPeerList
	if err := c.List(ctx, &peers); err != nil {
		return fmt.Errorf("listing meshpeers.wgmesh.io: %w", err)
	}
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return fmt.Errorf("listing nodes: %w", err)
	}
	if err := writeStatus(env.Out, summarize(nodes.Items, peers.Items, env.Now())); err != nil {
		return err
	}
	if err := writeReachability(env.Out, reachability(peers.Items)); err != nil {
		return err
	}
	return writePaths(env.Out, pairPaths(peers.Items))
}

// peerRow is one line of `kubectl wgmesh status`.
type peerRow struct {
	Name, Node, Endpoint, AllowedIPs, Connected, Ready, Handshake, Problems string
}

// nodeRow is a node that is not in the mesh, with the reason.
type nodeRow struct {
	Name, Reason string
}

type status struct {
	Peers    []peerRow
	OutNodes []nodeRow
}

// problemConditions are the conditions, written by the operator, that report
// something a user must fix.
var problemConditions = []string{
	wgmeshv1.ConditionKeyConflict,
	wgmeshv1.ConditionAllowedIPsConflict,
	wgmeshv1.ConditionInvalidAnnotation,
	wgmeshv1.ConditionNodeNotReady,
}

// summarize is the pure part of the status command: sorted rows from the
// MeshPeers and Nodes.
func summarize(nodes []corev1.Node, peers []wgmeshv1.MeshPeer, now time.Time) status {
	var st status
	byNode := map[string]bool{}
	for i := range peers {
		p := &peers[i]
		if p.Spec.NodeName != "" {
			byNode[p.Spec.NodeName] = true
		}
		node := p.Spec.NodeName
		if node == "" {
			node = "(external)"
		}
		row := peerRow{
			Name:       p.Name,
			Node:       node,
			Endpoint:   dash(string(p.Spec.Endpoint)),
			AllowedIPs: dash(joinCIDRs(p.Spec.AllowedIPs)),
			Connected:  dash(p.Status.Connected),
			Ready:      "Unknown",
			Handshake:  "-",
			Problems:   "-",
		}
		if c := meta.FindStatusCondition(p.Status.Conditions, wgmeshv1.ConditionReady); c != nil {
			row.Ready = string(c.Status)
		}
		if p.Status.LatestHandshake != nil {
			row.Handshake = now.Sub(p.Status.LatestHandshake.Time).Round(time.Second).String() + " ago"
		}
		var problems []string
		for _, t := range problemConditions {
			if c := meta.FindStatusCondition(p.Status.Conditions, t); c != nil && c.Status == metav1.ConditionTrue {
				problems = append(problems, fmt.Sprintf("%s: %s", t, c.Message))
			}
		}
		if len(problems) > 0 {
			row.Problems = strings.Join(problems, "; ")
		}
		st.Peers = append(st.Peers, row)
	}
	for i := range nodes {
		n := &nodes[i]
		if byNode[n.Name] {
			continue
		}
		reason := "no MeshPeer yet: waiting for the operator"
		if n.Annotations[wgmeshv1.AnnotationPublicKey] == "" {
			reason = "no public key announced: is wgmesh-agent running on this node?"
		}
		if len(n.Spec.PodCIDRs) == 0 {
			reason += "; no pod CIDR assigned"
		}
		st.OutNodes = append(st.OutNodes, nodeRow{Name: n.Name, Reason: reason})
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	sort.Slice(st.OutNodes, func(i, j int) bool { return st.OutNodes[i].Name < st.OutNodes[j].Name })
	return st
}

func writeStatus(w io.Writer, st status) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PEER\tNODE\tENDPOINT\tALLOWED-IPS\tCONNECTED\tREADY\tHANDSHAKE\tPROBLEMS")
	for _, r := range st.Peers {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			r.Name, r.Node, r.Endpoint, r.AllowedIPs, r.Connected, r.Ready, r.Handshake, r.Problems)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.OutNodes) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nNodes not in the mesh:")
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tREASON")
	for _, r := range st.OutNodes {
		fmt.Fprintf(tw, "%s\t%s\n", r.Name, r.Reason)
	}
	return tw.Flush()
}

func joinCIDRs(cidrs []wgmeshv1.CIDR) string {
	s := make([]string, len(cidrs))
	for i, c := range cidrs {
		s[i] = string(c)
	}
	return strings.Join(s, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
