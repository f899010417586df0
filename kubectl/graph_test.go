package kubectl

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/test/skip"
)

// The DOT output is what Graphviz's own dot accepts: rendered to SVG by
// the real tool, through the same path as `graph -o FILE.svg`.
func TestGraphSVGWithDot(t *testing.T) {
	if _, err := exec.LookPath("dot"); err != nil {
		skip.Unless(t, "Graphviz's dot is not on PATH (apt-get install graphviz)")
	}
	peers := graphMesh()
	dot := renderDOT(graphInput{Peers: peers, NodeUIDs: nodeUIDsOf(peers), RTT: map[string]map[string]float64{"a": {"b": 0.001}}})
	path := filepath.Join(t.TempDir(), "mesh.svg")
	var out, errs bytes.Buffer
	if err := writeGraph(&Env{Out: &out, Err: &errs}, path, dot); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(svg)
	for _, want := range []string{"<svg", "<title>a&#45;&#45;c</title>", "a cannot reach c", "behind NAT (no endpoint)", "external peer", "1.00 ms", `stroke="red"`} {
		if !strings.Contains(text, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	// dot refuses what is not DOT: its error reaches the user.
	if err := writeGraph(&Env{Out: &out, Err: &errs}, path, "graph {"); err == nil || !strings.Contains(err.Error(), "dot -Tsvg -o "+path) {
		t.Errorf("broken DOT: error %v", err)
	}
}

func TestGraphOutputRefuses(t *testing.T) {
	if _, _, err := parseGraph([]string{"-o", "mesh.png"}); err == nil || !strings.Contains(err.Error(), "-o mesh.png: want a file ending in .dot (Graphviz DOT) or .svg") {
		t.Errorf("-o mesh.png: %v", err)
	}
	if _, _, err := parseGraph([]string{"extra"}); err == nil || !strings.Contains(err.Error(), `unexpected argument "extra"`) {
		t.Errorf("extra argument: %v", err)
	}
	// Without dot on PATH, -o x.svg says what to do.
	t.Setenv("PATH", t.TempDir())
	if _, _, err := parseGraph([]string{"-o", "x.svg"}); err == nil || !strings.Contains(err.Error(), "-o x.svg: SVG is rendered by Graphviz's dot, which is not on PATH") || !strings.Contains(err.Error(), "-o x.dot") {
		t.Errorf("-o x.svg without dot: %v", err)
	}
}
