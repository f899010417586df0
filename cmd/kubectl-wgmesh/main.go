// Command kubectl-wgmesh is the kubectl plugin for wgmesh (`kubectl wgmesh
// ...`); the commands are in package kubectl (kubectl/).
package main

import (
	"os"

	"github.com/wgmesh/wgmesh/kubectl"
)

func main() { os.Exit(kubectl.Main(os.Args[1:])) }
