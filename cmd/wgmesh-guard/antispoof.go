package main

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/wgmesh/wgmesh/cni/antispoof"
	"github.com/wgmesh/wgmesh/cni/guard"
)

// The antiSpoof role (cni/antispoof): the entry after bridge registers the
// pod's port before ADD returns, CHECK verifies it, DEL removes it.

func antiSpoofAdd(args *skel.CmdArgs, c guard.Conf) error {
	port, res, err := podPort(args, c)
	if err != nil {
		return podError(args, err)
	}
	if err := antispoof.Register(port); err != nil {
		return podError(args, err)
	}
	return types.PrintResult(res, c.CNIVersion)
}

func antiSpoofCheck(args *skel.CmdArgs, c guard.Conf) error {
	port, _, err := podPort(args, c)
	if err != nil {
		return podError(args, err)
	}
	if err := antispoof.Check(port); err != nil {
		return podError(args, err)
	}
	return nil
}

// antiSpoofDel never fails: teardown must go on. Without a prevResult (the
// runtime lost its cache) the elements stay until the next ADD on the node
// finds their interface gone.
func antiSpoofDel(args *skel.CmdArgs, c guard.Conf) error {
	if port, _, err := podPort(args, c); err == nil {
		_ = antispoof.Unregister(port.HostIf)
	}
	return nil
}

func podPort(args *skel.CmdArgs, c guard.Conf) (antispoof.Port, *current.Result, error) {
	var conf types.PluginConf
	if err := json.Unmarshal(args.StdinData, &conf); err != nil {
		return antispoof.Port{}, nil, fmt.Errorf("bad configuration: %w", err)
	}
	if err := version.ParsePrevResult(&conf); err != nil {
		return antispoof.Port{}, nil, err
	}
	var res *current.Result
	if conf.PrevResult != nil {
		var err error
		if res, err = current.NewResultFromResult(conf.PrevResult); err != nil {
			return antispoof.Port{}, nil, fmt.Errorf("converting prevResult: %w", err)
		}
	}
	port, err := antispoof.PortFromResult(res, args.IfName, c.Bridge)
	return port, res, err
}

func podError(args *skel.CmdArgs, err error) error {
	return fmt.Errorf("%s antiSpoof: pod %s (netns %s) interface %s: %w", guard.PluginType, args.ContainerID, args.Netns, args.IfName, err)
}
