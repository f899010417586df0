// Command wgmesh-guard is the first plugin of wgmesh's CNI conflist: ADD and
// CHECK fail until the agent's leak guard is in nftables (cni/guard); DEL
// always succeeds so that teardown is never blocked.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/wgmesh/wgmesh/cni/guard"
)

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Check: check, Del: del}, version.All, "wgmesh-guard: no pod network before the wgmesh leak guard")
}

func add(args *skel.CmdArgs) error {
	c, err := guard.ParseConf(args.StdinData)
	if err != nil {
		return err
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
	return guard.Installed(c.Families)
}

func del(*skel.CmdArgs) error { return nil }
