package kubectl

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// writeTrace prints a trace: the verdict first, then each connection
// (one, or one per Service endpoint) with its egress and ingress sides,
// then notes.
func writeTrace(w io.Writer, res *traceResult, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s from %s to %s\n", strings.ToUpper(res.Verdict[:1])+res.Verdict[1:], res.Port, res.From, res.To)
	if s := res.Service; s != nil {
		fmt.Fprintf(&b, "\nService %s/%s: ClusterIP %s, port %d/%s", s.Namespace, s.Name, dash(s.ClusterIP), s.Port, s.Protocol)
		if s.PortName != "" {
			fmt.Fprintf(&b, " (%s)", s.PortName)
		}
		fmt.Fprintf(&b, " -> targetPort %s; %d ready endpoints traced after the service NAT", s.TargetPort, len(res.Paths))
		if s.NotReady > 0 {
			fmt.Fprintf(&b, " (%d not ready)", s.NotReady)
		}
		b.WriteString("\n")
	}
	for _, p := range res.Paths {
		verdict := "ALLOWED"
		if !p.Allowed {
			verdict = "DENIED"
		}
		fmt.Fprintf(&b, "\n%s -> %s %s/%d: %s\n", endString(p.Source), endString(p.Destination), p.Protocol, p.Port, verdict)
		if p.PortMapping != "" {
			fmt.Fprintf(&b, "  port: %s\n", p.PortMapping)
		}
		writeSide(&b, p.Egress)
		writeSide(&b, p.Ingress)
	}
	if len(res.Notes) > 0 {
		b.WriteString("\nNotes:\n")
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func endString(e traceEnd) string {
	var extra []string
	if e.Node != "" {
		extra = append(extra, "node "+e.Node)
	}
	if e.HostNetwork {
		extra = append(extra, "host network")
	}
	where := e.Address
	if len(extra) > 0 {
		where += ", " + strings.Join(extra, ", ")
	}
	switch {
	case e.Pod != "":
		return fmt.Sprintf("pod %s (%s)", e.Pod, where)
	case e.NodeHost != "":
		return fmt.Sprintf("node %s (%s)", e.NodeHost, where)
	}
	return where
}

// writeSide prints one direction: its summary, then, when rules decide,
// each rule of the isolating policies (the one that allows marked), and
// the policies that have no rule of this direction.
func writeSide(b *strings.Builder, s traceSide) {
	fmt.Fprintf(b, "  %s: %s\n", s.Direction, s.Summary)
	if s.Reason != "allowed-by-rule" && s.Reason != "denied" {
		return
	}
	for _, pol := range s.IsolatedBy {
		has := false
		for _, r := range s.Rules {
			if r.Policy != pol {
				continue
			}
			has = true
			mark := " "
			if s.AllowedBy != nil && r.Policy == s.AllowedBy.Policy && r.Rule == s.AllowedBy.Rule {
				mark = "*"
			}
			fmt.Fprintf(b, "   %s %s %s rule %d: %s\n", mark, pol, s.Direction, r.Rule, r.Text)
		}
		if !has {
			fmt.Fprintf(b, "     %s: no %s rules (it only isolates)\n", pol, s.Direction)
		}
	}
}
