package kubectl

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/wgmesh/wgmesh/netpol"
)

func init() {
	register(Command{
		Name:  "policy",
		Usage: "trace --from NS/POD --to NS/POD|IP|svc/NS/NAME --port PORT[/PROTOCOL] [-o json]",
		Help: `trace: whether NetworkPolicy allows a connection, and why, by the
model the agents render their rules from (netpol): egress judged at the
source pod, ingress at the destination pod, each naming the policies that
isolate the pod and the rule (index, peer, port) that allows the
connection, or that no rule does. To a Service, each ready endpoint is
traced after the service NAT (policy judges the endpoint's address and
port, which are named); to an IP that is no pod's, only egress applies
(ipBlock). PORT is a number or a name (the destination pod's container
port, or the Service's port); PROTOCOL is TCP (default), UDP or SCTP.
Host-network pods are never selected by NetworkPolicy: their traffic is
their node's. Reads Pods, Namespaces, NetworkPolicies, Nodes, Services and
EndpointSlices with your kubeconfig; -o json prints the same as JSON.`,
		Run: runPolicy,
	})
}

// runPolicy runs `policy SUBCOMMAND`; trace is the only one.
func runPolicy(env *Env, args []string) error {
	if len(args) == 0 {
		return errors.New("subcommand missing: kubectl wgmesh policy trace --from NS/POD --to NS/POD|IP|svc/NS/NAME --port PORT[/PROTOCOL]")
	}
	switch args[0] {
	case "trace":
	case "-h", "--help", "help":
		fmt.Fprintln(env.Out, indent("policy", commands["policy"].Help))
		return flag.ErrHelp
	default:
		return fmt.Errorf("unknown subcommand %q: want trace", args[0])
	}
	kf, req, err := parseTrace(args[1:])
	if err != nil {
		return err
	}
	c, ctx, cancel, err := kf.Connect()
	if err != nil {
		return err
	}
	defer cancel()
	res, err := trace(ctx, c, req)
	if err != nil {
		return err
	}
	return writeTrace(env.Out, res, req.Output)
}

// traceRequest is what `policy trace` asks.
type traceRequest struct {
	From   objectRef
	To     traceTarget
	Port   portArg
	Output string // "" (text) or "json"
}

// objectRef is a namespaced object's name.
type objectRef struct{ Namespace, Name string }

func (r objectRef) String() string { return r.Namespace + "/" + r.Name }

// traceTarget is --to: a pod, an address or a Service.
type traceTarget struct {
	Pod, Service *objectRef
	IP           netip.Addr
}

func (t traceTarget) String() string {
	switch {
	case t.Pod != nil:
		return "pod " + t.Pod.String()
	case t.Service != nil:
		return "service " + t.Service.String()
	}
	return t.IP.String()
}

// portArg is --port: a number or a name, and a protocol.
type portArg struct {
	Number uint16
	Name   string
	Proto  netpol.Protocol
}

func (p portArg) String() string {
	if p.Name != "" {
		return fmt.Sprintf("%s/%s", p.Proto, p.Name)
	}
	return fmt.Sprintf("%s/%d", p.Proto, p.Number)
}

func parseTrace(args []string) (*KubeFlags, traceRequest, error) {
	var kf KubeFlags
	var req traceRequest
	var from, to, port string
	fs := NewFlagSet("policy trace", &kf)
	fs.StringVar(&from, "from", "", "the client pod, NAMESPACE/POD")
	fs.StringVar(&to, "to", "", "the server: a pod NAMESPACE/POD, an IP address, or a Service svc/NAMESPACE/NAME")
	fs.StringVar(&port, "port", "", "the destination port, PORT[/PROTOCOL]: a number or a name (the destination pod's container port, or the Service's port); PROTOCOL TCP (default), UDP or SCTP")
	fs.StringVar(&req.Output, "o", "", "output format: text (default) or json")
	if err := fs.Parse(args); err != nil {
		return nil, req, err
	}
	if fs.NArg() > 0 {
		return nil, req, fmt.Errorf("unexpected argument %q (policy trace takes only flags: --from, --to, --port)", fs.Arg(0))
	}
	var err error
	if from == "" || to == "" || port == "" {
		return nil, req, errors.New("--from, --to and --port are required: kubectl wgmesh policy trace --from NS/POD --to NS/POD|IP|svc/NS/NAME --port PORT[/PROTOCOL]")
	}
	if req.From, err = parsePodRef("--from", from); err != nil {
		return nil, req, err
	}
	if req.To, err = parseTarget(to); err != nil {
		return nil, req, err
	}
	if req.Port, err = parsePortArg(port); err != nil {
		return nil, req, err
	}
	if req.Port.Name != "" && req.To.Pod == nil && req.To.Service == nil {
		return nil, req, fmt.Errorf("--port %s: a port name resolves on a pod or a Service, and --to %s is an address: give a number", port, to)
	}
	switch req.Output {
	case "", "text":
		req.Output = ""
	case "json":
	default:
		return nil, req, fmt.Errorf("-o %s: want text or json", req.Output)
	}
	return &kf, req, nil
}

// parsePodRef parses NAMESPACE/POD.
func parsePodRef(flagName, s string) (objectRef, error) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || strings.Contains(name, "/") {
		return objectRef{}, fmt.Errorf("%s %s: want NAMESPACE/POD (for example default/client)", flagName, s)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return objectRef{}, fmt.Errorf("%s %s: namespace %q is not valid: %s", flagName, s, ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return objectRef{}, fmt.Errorf("%s %s: pod name %q is not valid: %s", flagName, s, name, strings.Join(errs, "; "))
	}
	return objectRef{Namespace: ns, Name: name}, nil
}

// parseTarget parses --to: svc/NAMESPACE/NAME (or service/...), an IP
// address, or NAMESPACE/POD.
func parseTarget(s string) (traceTarget, error) {
	for _, prefix := range []string{"svc/", "service/", "services/"} {
		rest, ok := strings.CutPrefix(s, prefix)
		if !ok {
			continue
		}
		ns, name, ok := strings.Cut(rest, "/")
		if !ok || strings.Contains(name, "/") {
			return traceTarget{}, fmt.Errorf("--to %s: want svc/NAMESPACE/NAME (for example svc/default/web)", s)
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return traceTarget{}, fmt.Errorf("--to %s: namespace %q is not valid: %s", s, ns, strings.Join(errs, "; "))
		}
		if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
			return traceTarget{}, fmt.Errorf("--to %s: Service name %q is not valid: %s", s, name, strings.Join(errs, "; "))
		}
		return traceTarget{Service: &objectRef{Namespace: ns, Name: name}}, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return traceTarget{}, fmt.Errorf("--to %s: an address with a zone is no pod's or Service's: give it without %%%s", s, a.Zone())
		}
		return traceTarget{IP: a.Unmap()}, nil
	}
	if !strings.Contains(s, "/") {
		return traceTarget{}, fmt.Errorf("--to %s: want NAMESPACE/POD, an IP address or svc/NAMESPACE/NAME", s)
	}
	ref, err := parsePodRef("--to", s)
	if err != nil {
		return traceTarget{}, err
	}
	return traceTarget{Pod: &ref}, nil
}

// parsePortArg parses --port: PORT[/PROTOCOL], PORT a number (1-65535) or
// a port name, PROTOCOL as Kubernetes names them (any case).
func parsePortArg(s string) (portArg, error) {
	num, proto, hasProto := strings.Cut(s, "/")
	p := portArg{Proto: netpol.TCP}
	if hasProto {
		var err error
		if p.Proto, err = netpol.ParseProtocol(corev1.Protocol(strings.ToUpper(proto))); err != nil {
			return portArg{}, fmt.Errorf("--port %s: %w", s, err)
		}
	}
	if n, err := strconv.Atoi(num); err == nil {
		if n < 1 || n > 65535 {
			return portArg{}, fmt.Errorf("--port %s: %d is out of range: want 1-65535 or a port name", s, n)
		}
		p.Number = uint16(n)
		return p, nil
	}
	if errs := validation.IsValidPortName(num); len(errs) > 0 {
		return portArg{}, fmt.Errorf("--port %s: %q is neither a port number nor a port name: %s", s, num, strings.Join(errs, "; "))
	}
	p.Name = num
	return p, nil
}
