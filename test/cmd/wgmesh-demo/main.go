// Command wgmesh-demo runs the local cluster for `make demo` (hack/demo.sh):
//
//	wgmesh-demo up     start a background demo cluster, wait until it is shown, return
//	wgmesh-demo down   stop it and remove every namespace, link, mount, process and file
//	wgmesh-demo running  exit 0 (printing its pid) when a demo runs, 1 when none does
//	wgmesh-demo serve  (internal) the background process that owns the cluster
//
// State lives in StateDir (/run/wgmesh-demo): pid, log, the cluster's work directory.
package main

import (
	"fmt"
	"os"
)

// StateDir holds the demo's pid file, log and cluster work directory.
const StateDir = "/run/wgmesh-demo"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: wgmesh-demo up|down|running")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up()
	case "down":
		err = down()
	case "serve":
		err = serve()
	case "running":
		pid := runningPID()
		if pid == 0 {
			os.Exit(1)
		}
		fmt.Println(pid)
	default:
		err = fmt.Errorf("unknown command %q: want up, down or running", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "wgmesh-demo:", err)
		os.Exit(1)
	}
}
