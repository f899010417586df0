// Command wgmesh-vm runs commands (Go test binaries) inside a VM booting Debian's stock
// kernel under qemu (test/vm); hack/vm.sh fetches the kernel and qemu and calls it:
//
//	wgmesh-vm run --kernel-dir DIR --kernel-version VERSION [flags] 'CMD' ['CMD' ...]
//
// Each CMD is a bash command line run in the guest, in order, in the current directory;
// the exit code is the first failing command's. Started as PID 1 it is the guest's /init.
// Build it static (CGO_ENABLED=0): it is also the initramfs's only program.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wgmesh/wgmesh/test/vm"
)

func main() {
	if os.Getpid() == 1 {
		vm.Init()
	}
	if len(os.Args) > 1 && os.Args[1] == vm.GuestRunArg {
		if err := vm.GuestRun(); err != nil {
			fmt.Fprintln(os.Stderr, "wgmesh-vm:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: wgmesh-vm run --kernel-dir DIR --kernel-version VERSION [flags] 'CMD' ['CMD' ...]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var o vm.Options
	fs.StringVar(&o.Kernel.Dir, "kernel-dir", "", "unpacked kernel: vmlinux and root/lib/modules/<version>")
	fs.StringVar(&o.Kernel.Version, "kernel-version", "", "kernel version (the name under lib/modules)")
	fs.IntVar(&o.Memory, "memory", 0, "guest memory in MiB (default 2048)")
	fs.IntVar(&o.CPUs, "cpus", 0, "guest CPUs (default the host's, at most 4)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "end the guest after this long")
	fs.BoolVar(&o.KeepRunDir, "keep", false, "keep the run directory (spec, initramfs, console log)")
	fs.Func("env", "KEY=VALUE added to the commands' environment (repeatable)", func(s string) error {
		o.Env = append(o.Env, s)
		return nil
	})
	_ = fs.Parse(os.Args[2:])
	o.Commands = fs.Args()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	code, err := vm.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(code)
}
