package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/wgmesh/wgmesh/cni/guard"
)

// The policy role (cni/guard, policy.go): the entry after bridge asks the
// agent to judge the new pod before ADD returns, so that what its
// NetworkPolicies allow passes from its first packet. When the agent does
// not program it (no answer in time, or a refusal), ADD still succeeds if
// the kernel's default denies the pod until the agent programs it from the
// Pod watch: the pod is never judged without its policies, and a request
// the agent cannot serve (an edge case of its checks) costs the pod its
// first moments, not its start. ADD fails only when that default is not
// there either (after a reboot, before the agent's first sync).

// policyTimeout bounds the wait for the agent (a variable for tests).
var policyTimeout = guard.DefaultPolicyTimeout

func policyAdd(args *skel.CmdArgs, c guard.Conf) error {
	res, err := prevResult(args)
	if err != nil {
		return policyError(args, err)
	}
	req := guard.PolicyRequest{ContainerID: args.ContainerID}
	for _, kv := range strings.Split(args.Args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			req.Namespace = v
		case "K8S_POD_NAME":
			req.Name = v
		case "K8S_POD_UID":
			req.UID = v
		}
	}
	if res != nil {
		for _, ip := range res.IPs {
			if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
				req.IPs = append(req.IPs, a.Unmap())
			}
		}
	}
	switch {
	case req.Namespace == "" || req.Name == "":
		err = fmt.Errorf("%w: CNI_ARGS has no K8S_POD_NAMESPACE and K8S_POD_NAME (not a Kubernetes runtime?)", guard.ErrPolicyUnavailable)
	case len(req.IPs) == 0:
		return policyError(args, errors.New("prevResult has no addresses: wgmesh-guard's policy entry must come after bridge"))
	default:
		ctx, cancel := context.WithTimeout(context.Background(), policyTimeout)
		err = guard.AskPolicy(ctx, c.PolicySocket, req)
		cancel()
	}
	if err != nil {
		if kerr := guard.PolicyInstalled(c.Families); kerr != nil {
			return types.NewError(types.ErrTryAgainLater, policyError(args, fmt.Errorf("%v, and %v", err, kerr)).Error(), "")
		}
		// The runtime logs the plugin's stderr.
		fmt.Fprintf(os.Stderr, "%s: pod %s/%s (container %s) %v: it is denied until the agent programs its policy from the Pod watch\n",
			guard.PluginType, req.Namespace, req.Name, args.ContainerID, err)
	}
	return types.PrintResult(res, c.CNIVersion)
}

func prevResult(args *skel.CmdArgs) (*current.Result, error) {
	var conf types.PluginConf
	if err := json.Unmarshal(args.StdinData, &conf); err != nil {
		return nil, fmt.Errorf("bad configuration: %w", err)
	}
	if err := version.ParsePrevResult(&conf); err != nil {
		return nil, err
	}
	if conf.PrevResult == nil {
		return nil, errors.New("no prevResult: wgmesh-guard's policy entry must come after bridge")
	}
	res, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return nil, fmt.Errorf("converting prevResult: %w", err)
	}
	return res, nil
}

func policyError(args *skel.CmdArgs, err error) error {
	return fmt.Errorf("%s policy: pod %s (netns %s): %w", guard.PluginType, args.ContainerID, args.Netns, err)
}
