package kubectl

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"k8s.io/client-go/kubernetes"
)

func init() {
	register(Command{
		Name:  "graph",
		Usage: "[-o FILE.dot|FILE.svg] [--rtt] [--all-edges]",
		Help: `draws the mesh as Graphviz DOT: nodes (boxes; dashed when behind NAT,
grey when NotReady, red when excluded) and external peers (ellipses);
node pairs colored by what each node's agent reports reaching (green
reachable, red unreachable with the side that cannot reach, grey
unknown). --rtt labels edges with the round trip the agents measured
(wgmesh_peer_rtt_seconds, read through the API server's pod proxy; the
agents export it with agent.perPeerMetrics=true).
Above 40 nodes only unreachable pairs are drawn unless --all-edges.
-o FILE.svg renders with Graphviz's dot, which must be on PATH.`,
		Run: runGraph,
	})
}

type graphFlags struct {
	Output        string
	RTT, AllEdges bool
}

func parseGraph(args []string) (*KubeFlags, *graphFlags, error) {
	var kf KubeFlags
	f := &graphFlags{}
	fs := NewFlagSet("graph", &kf)
	fs.StringVar(&f.Output, "o", "", "write to FILE.dot (DOT) or FILE.svg (rendered by dot) instead of DOT on standard output")
	fs.BoolVar(&f.RTT, "rtt", false, "label edges with the agents' measured round trip (reads each agent's metrics through the API server)")
	fs.BoolVar(&f.AllEdges, "all-edges", false, fmt.Sprintf("draw every node pair even with more than %d nodes", largeMesh))
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q (graph takes only flags)", fs.Arg(0))
	}
	if f.Output != "" {
		if _, err := outputFormat(f.Output); err != nil {
			return nil, nil, err
		}
	}
	return &kf, f, nil
}

// outputFormat is "dot" or "svg" from -o's extension; svg needs dot on
// PATH, checked before anything is read from the cluster.
func outputFormat(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".dot", ".gv":
		return "dot", nil
	case ".svg":
		if _, err := exec.LookPath("dot"); err != nil {
			return "", fmt.Errorf("-o %s: SVG is rendered by Graphviz's dot, which is not on PATH (install graphviz, for example apt-get install graphviz), or write DOT with -o %s",
				path, strings.TrimSuffix(path, filepath.Ext(path))+".dot")
		}
		return "svg", nil
	}
	return "", fmt.Errorf("-o %s: want a file ending in .dot (Graphviz DOT) or .svg", path)
}

func runGraph(env *Env, args []string) error {
	kf, f, err := parseGraph(args)
	if err != nil {
		return err
	}
	c, ctx, cancel, err := kf.Connect()
	if err != nil {
		return err
	}
	defer cancel()
	m, err := loadMesh(ctx, c, false, "")
	if err != nil {
		return err
	}
	in := graphInput{Peers: m.peers, NodeUIDs: m.nodeUIDs, AllEdges: f.AllEdges}
	if f.RTT {
		cfg, err := kf.RESTConfig()
		if err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		in.RTT, in.Notes = fetchRTT(ctx, cs)
		for _, n := range in.Notes {
			fmt.Fprintf(env.Err, "note: %s\n", n)
		}
	}
	return writeGraph(env, f.Output, renderDOT(in))
}

// writeGraph writes DOT to standard output or -o, rendering SVG with dot.
func writeGraph(env *Env, path, dot string) error {
	if path == "" {
		_, err := fmt.Fprint(env.Out, dot)
		return err
	}
	format, err := outputFormat(path)
	if err != nil {
		return err
	}
	if format == "dot" {
		if err := os.WriteFile(path, []byte(dot), 0o644); err != nil {
			return fmt.Errorf("-o: %w", err)
		}
		fmt.Fprintf(env.Err, "wrote %s\n", path)
		return nil
	}
	cmd := exec.Command("dot", "-Tsvg", "-o", path)
	cmd.Stdin = strings.NewReader(dot)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("dot -Tsvg -o %s: %v: %s", path, err, strings.TrimSpace(stderr.String()))
		}
		return fmt.Errorf("dot -Tsvg -o %s: %w", path, err)
	}
	fmt.Fprintf(env.Err, "wrote %s\n", path)
	return nil
}
