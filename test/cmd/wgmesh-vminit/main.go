// Command wgmesh-vminit is the /init of the VM that test/vm boots (hack/vm.sh builds it
// static, CGO_ENABLED=0: it is the initramfs's only program). As PID 1 it mounts the
// guest's root and runs itself again as the process that runs the commands.
package main

import (
	"fmt"
	"os"

	"github.com/wgmesh/wgmesh/test/vm"
)

func main() {
	if os.Getpid() == 1 {
		vm.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == vm.GuestRunArg {
		if err := vm.GuestRun(); err != nil {
			fmt.Fprintln(os.Stderr, "wgmesh-vminit:", err)
			os.Exit(1)
		}
		return
	}
	fmt.Fprintln(os.Stderr, "wgmesh-vminit is the /init of test/vm's guest; run tests in the VM with hack/vm.sh")
	os.Exit(2)
}
