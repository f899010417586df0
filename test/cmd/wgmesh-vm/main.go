// Command wgmesh-vm runs commands (Go test binaries) inside a VM booting Debian's stock
// kernel under qemu (test/vm); hack/vm.sh fetches the kernel and qemu, builds this and the
// guest's init (wgmesh-vminit), and calls it:
//
//	wgmesh-vm run --kernel-dir DIR --kernel-version VERSION [flags] 'CMD' ['CMD' ...]
//
// Each CMD is a bash command line run in the guest, in order, in the current directory;
// the exit code is the first failing command's. With --cluster the local cluster's
// network, control plane and operator run here on the host (test/cluster,
// ControlPlaneOnly), the VM's NIC sits on its underlay bridge, and a cluster the commands
// start in the guest runs only its nodes there (WGMESH_CLUSTER_REMOTE).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/wgmesh/wgmesh/test/cluster"
	"github.com/wgmesh/wgmesh/test/vm"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: wgmesh-vm run --kernel-dir DIR --kernel-version VERSION [flags] 'CMD' ['CMD' ...]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	var o vm.Options
	fs.StringVar(&o.Kernel.Dir, "kernel-dir", "", "unpacked kernel: vmlinux and root/lib/modules/<version>")
	fs.StringVar(&o.Kernel.Version, "kernel-version", "", "kernel version (the name under lib/modules)")
	fs.StringVar(&o.Init, "init", "", "the guest's /init, a static wgmesh-vminit (default: beside this executable)")
	fs.IntVar(&o.Memory, "memory", 0, "guest memory in MiB (default 2048)")
	fs.IntVar(&o.CPUs, "cpus", 0, "guest CPUs (default the host's, at most 4)")
	fs.DurationVar(&o.Timeout, "timeout", 30*time.Minute, "end the guest after this long")
	fs.BoolVar(&o.KeepRunDir, "keep", false, "keep the run directory (spec, initramfs, console log)")
	fs.Func("env", "KEY=VALUE added to the commands' environment (repeatable)", func(s string) error {
		o.Env = append(o.Env, s)
		return nil
	})
	withCluster := fs.Bool("cluster", false, "run a local cluster's network, control plane and operator on the host for the guest's nodes")
	dualStack := fs.Bool("dual-stack", false, "with --cluster: IPv6 too")
	_ = fs.Parse(os.Args[2:])
	o.Commands = fs.Args()
	if o.Init == "" {
		if exe, err := os.Executable(); err == nil {
			o.Init = filepath.Join(filepath.Dir(exe), "wgmesh-vminit")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code, err := run(ctx, o, *withCluster, *dualStack)
	if errors.Is(err, vm.ErrGuestLockup) && ctx.Err() == nil {
		// The emulator's failure, not the tests': the whole run (a new control
		// plane too) once more, saying so.
		fmt.Fprintf(os.Stderr, "%v\nvm: booting again once: a guest kernel lockup under software emulation is the emulator's, not the commands'\n", err)
		code, err = run(ctx, o, *withCluster, *dualStack)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(125)
	}
	os.Exit(code)
}

func run(ctx context.Context, o vm.Options, withCluster, dualStack bool) (int, error) {
	if !withCluster {
		return vm.Run(ctx, o)
	}
	ctrllog.SetLogger(logr.Discard()) // the cluster's client logs nothing worth reading here
	began := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{ControlPlaneOnly: true, DualStack: dualStack, Log: os.Stderr})
	if err != nil {
		return 0, fmt.Errorf("vm: the cluster's control plane: %w", err)
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "vm: stopping the cluster's control plane:", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "vm: control plane for the guest's cluster up in %s\n", time.Since(began).Round(100*time.Millisecond))
	o.NIC = &vm.NIC{NetNS: c.Underlay.Path(), Bridge: cluster.UnderlayBridge}
	o.Env = append(o.Env, cluster.RemoteEnv+"="+filepath.Join(c.WorkDir, cluster.RemoteFile))
	return vm.Run(ctx, o)
}
