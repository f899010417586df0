// Command kubectl-wgmesh is the kubectl plugin for wgmesh (`kubectl wgmesh
// ...`); the commands are in package plugin.
package main

import (
	"os"

	"github.com/wgmesh/wgmesh/plugin"
)

func main() { os.Exit(plugin.Main(os.Args[1:])) }
