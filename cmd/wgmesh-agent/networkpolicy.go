package main

import (
	"flag"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/wgmesh/wgmesh/agent"
	"github.com/wgmesh/wgmesh/agent/egress"
	"github.com/wgmesh/wgmesh/agent/policy"
	"github.com/wgmesh/wgmesh/cni/guard"
)

// networkPolicyFlags are the network policy's flags.
type networkPolicyFlags struct {
	enabled bool
	socket  string
}

func (f *networkPolicyFlags) bind(fs *flag.FlagSet) {
	fs.BoolVar(&f.enabled, "network-policy", false, "Enforce Kubernetes NetworkPolicy (networking.k8s.io/v1) on this node in nftables table wgmesh; needs br_netfilter for traffic between pods of one node. A pod's addresses pass nothing through the node until the agent has judged it: the CNI plugin asks the agent to before ADD returns (--network-policy-socket), else the Pod watch does. Off by default for now (the upstream Netpol specs pass: README, \"NetworkPolicy\"); false removes policy rules an earlier run left.")
	fs.StringVar(&f.socket, "network-policy-socket", guard.DefaultPolicySocket, "With --network-policy, the unix socket (mode 0600, root only) on which the agent judges each new pod for the CNI plugin (wgmesh-guard's policy entry in the conflist) before its ADD returns; empty: no CNI hook (new pods wait, denied, for the Pod watch).")
}

// cniSocket is the socket the conflist's policy entry names; empty
// without the network policy.
func (f networkPolicyFlags) cniSocket() string {
	if !f.enabled {
		return ""
	}
	return f.socket
}

// networkPolicy returns the network policy, or nil when it is off; when
// off, rules an earlier run left behind are removed, so that no pod stays
// isolated by a policy nothing keeps up to date, and its metrics are not
// exported. Its readiness follows br_netfilter, whose state egress keeps.
func networkPolicy(f networkPolicyFlags, o agent.Options, eg *egress.Manager, log logr.Logger) agent.NetworkPolicy {
	log = log.WithName("policy")
	if !f.enabled {
		if err := policy.New(policy.Options{NodeName: o.NodeName, Log: log}).Delete(); err != nil {
			log.Error(err, "removing network policy rules of an earlier run")
		}
		return nil
	}
	return policy.New(policy.Options{NodeName: o.NodeName, BridgeNetfilter: eg.BridgeNetfilterStatus, Socket: f.socket, Log: log, Registerer: metrics.Registry})
}
