// Command wgmesh-guard is wgmesh's own CNI plugin, with up to three entries
// in the conflist. First, the gate: ADD and CHECK fail until the agent's
// leak guard is in nftables (cni/guard). After bridge, with "antiSpoof": the
// pod may send only as itself (cni/antispoof). After that, with
// "policySocket" (--network-policy): the agent judges the pod before ADD
// returns (policy.go). DEL always succeeds so that teardown is never
// blocked.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/wgmesh/wgmesh/cni/guard"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Check: check, Del: del}, version.All, "wgmesh-guard: no pod network before the wgmesh leak guard; pods send only as themselves")
}

func add(args *skel.CmdArgs) error {
	c, err := guard.ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.AntiSpoof {
		return antiSpoofAdd(args, c)
	}
	if c.PolicySocket != "" {
		return policyAdd(args, c)
	}
	if err := guard.Installed(c.Families); err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	// An empty result: the bridge plugin after it makes the interface.
	return types.PrintResult(&current.Result{CNIVersion: current.ImplementedSpecVersion}, c.CNIVersion)
}

func check(args *skel.CmdArgs) error {
	c, err := guard.ParseConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.AntiSpoof {
		return antiSpoofCheck(args, c)
	}
	if c.PolicySocket != "" {
		return nil // the kernel's default and the Pod watch keep the pod judged
	}
	return guard.Installed(c.Families)
}

func del(args *skel.CmdArgs) error {
	if c, err := guard.ParseConf(args.StdinData); err == nil && c.AntiSpoof {
		return antiSpoofDel(args, c)
	}
	return nil
}
