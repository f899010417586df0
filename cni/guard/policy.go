package guard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// The policy role: the entry after bridge, with PolicySocket, asks the
// agent to judge the new pod (program its NetworkPolicy and add its
// addresses to policy-programmed) before ADD returns, so that its allowed
// traffic passes from the first packet. The agent answers on a unix socket
// on the host that only root may use. One request per connection: a JSON
// object, then the answer.

// DefaultPolicySocket is where the agent listens (--network-policy-socket).
const DefaultPolicySocket = "/var/run/wgmesh/policy.sock"

// DefaultPolicyTimeout bounds the wait for the agent's answer.
const DefaultPolicyTimeout = 10 * time.Second

// MaxPolicyRequest bounds a request's size (the server reads no more).
const MaxPolicyRequest = 16 << 10

// PolicyRequest asks the agent to judge a pod: the runtime's
// K8S_POD_NAMESPACE, K8S_POD_NAME and K8S_POD_UID (CNI_ARGS) and the
// addresses the bridge plugin gave it.
type PolicyRequest struct {
	Namespace   string       `json:"namespace"`
	Name        string       `json:"name"`
	UID         string       `json:"uid,omitempty"`
	ContainerID string       `json:"containerID,omitempty"`
	IPs         []netip.Addr `json:"ips"`
}

// PolicyResponse is the agent's answer: Error empty when the pod's policy
// and its addresses are in the kernel; Refused when the request was wrong
// (names, addresses, a pod not on this node), as opposed to not programmed
// in time.
type PolicyResponse struct {
	Error   string `json:"error,omitempty"`
	Refused bool   `json:"refused,omitempty"`
}

// ErrPolicyUnavailable wraps failures to reach the agent (no socket, no
// answer in time) and the agent's failures to program the pod in time:
// the pod stays denied by the kernel's default until it is programmed.
// Other errors are the agent's refusals.
var ErrPolicyUnavailable = errors.New("the wgmesh agent did not program the pod")

// The network policy's kernel names the plugin checks (agent/policy
// programs them; a test there keeps them equal).
const (
	PolicyEgressChain  = "policy-egress-forward"
	PolicyIngressChain = "policy-ingress-forward"
	PolicyProgrammed   = "policy-programmed"
)

// AskPolicy sends req to the agent at socket and waits for its answer
// until ctx ends. An error wrapping ErrPolicyUnavailable: the agent could
// not be asked or did not answer; any other: the agent refused or failed
// (its message).
func AskPolicy(ctx context.Context, socket string, req PolicyRequest) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPolicyUnavailable, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return fmt.Errorf("%w: sending to %s: %w", ErrPolicyUnavailable, socket, err)
	}
	var resp PolicyResponse
	if err := json.NewDecoder(bufio.NewReader(io.LimitReader(conn, MaxPolicyRequest))).Decode(&resp); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("%w: reading the answer from %s: %w", ErrPolicyUnavailable, socket, err)
	}
	switch {
	case resp.Refused:
		return errors.New(resp.Error)
	case resp.Error != "":
		return fmt.Errorf("%w: %s", ErrPolicyUnavailable, resp.Error)
	}
	return nil
}

// PolicyInstalled checks, in the current network namespace, that the
// network policy's fail-closed rules are in table wgmesh for every family:
// each of both chains has a rule that looks up set policy-programmed
// inverted (the drop of addresses not judged yet). Chains with other rules
// only (an older agent's, or a render without the node's pod CIDRs) do not
// count. Without those rules a pod the agent has not judged would pass
// unjudged.
func PolicyInstalled(families []string) error {
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("%s: opening nftables: %w", PluginType, err)
	}
	defer conn.CloseLasting()
	for _, f := range families {
		fam, name := nftables.TableFamilyIPv4, "ip"
		if f == "ipv6" {
			fam, name = nftables.TableFamilyIPv6, "ip6"
		}
		table := &nftables.Table{Name: Table, Family: fam}
		for _, chain := range []string{PolicyEgressChain, PolicyIngressChain} {
			rules, err := conn.GetRules(table, &nftables.Chain{Name: chain, Table: table})
			if err != nil || len(rules) == 0 {
				return fmt.Errorf("%s: the network policy is not in the kernel (nftables table %s %s chain %s is missing or empty)", PluginType, name, Table, chain)
			}
			if !hasFailClosed(rules) {
				return fmt.Errorf("%s: the network policy's fail-closed rule is not in the kernel (nftables table %s %s chain %s has no lookup of @%s)", PluginType, name, Table, chain, PolicyProgrammed)
			}
		}
		if _, err := conn.GetSetByName(table, PolicyProgrammed); err != nil {
			return fmt.Errorf("%s: the network policy is not in the kernel (nftables table %s %s set %s: %v)", PluginType, name, Table, PolicyProgrammed, err)
		}
	}
	return nil
}

// hasFailClosed reports whether one of rules drops addresses not in
// policy-programmed: an inverted lookup of that set.
func hasFailClosed(rules []*nftables.Rule) bool {
	for _, r := range rules {
		for _, e := range r.Exprs {
			if l, ok := e.(*expr.Lookup); ok && l.SetName == PolicyProgrammed && l.Invert {
				return true
			}
		}
	}
	return false
}
