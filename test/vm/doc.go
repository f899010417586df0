// Package vm runs commands (Go test binaries) inside a virtual machine that boots Debian's
// stock kernel under qemu with software emulation (TCG): the host kernel here has no
// WireGuard module, the guest's has, so the kernel WireGuard path is tested there.
//
// The guest has no disk. Its root is an overlay whose lower layer is the host's / shared
// read-only over 9p and whose upper layer is a tmpfs, so every host tool, the Go test
// binaries and the cached control plane are there and nothing the guest writes reaches
// the host. A second 9p share carries the kernel's modules (never installed on the host),
// a third (the run directory, writable) carries the commands in, and their output and
// exit status out. The guest's /init is this package's Init, in the small static
// wgmesh-vminit, packed with the few modules that mount the shares into an initramfs.
//
// Host side (hack/vm.sh fetches the kernel and qemu and calls this):
//
//	code, err := vm.Run(ctx, vm.Options{Kernel: k, Init: vminit, Commands: []string{"cd agent && ./agent.test -test.v"}})
//
// With Options.NIC the guest gets a NIC (eth0) whose host end, a tap, joins a bridge in a
// network namespace: hack/vm.sh run --cluster puts it on a local cluster's underlay, whose
// control plane runs on the host (test/cluster, remote.go).
//
// Guest side: wgmesh-vminit started as PID 1 calls Init, which loads the modules, switches to
// the overlay root, loads the modules the tests need (wireguard, veth, tun, bridge,
// nf_tables, xfrm_user, ...), runs each command with bash in order, writes their output to
// the run directory as it comes and their exit codes at the end, and powers off.
package vm
