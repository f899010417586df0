// Package netns holds the network-namespace helpers that the wgmesh end-to-end tests, the
// local cluster (test/cluster) and `make demo` share. Everything it creates carries the
// prefix "wgm" (Prefix) so that a crashed run can be cleaned up by name.
//
// # Network namespaces
//
//	ns, err := netns.New("wgm-a")     // bind-mounted at /run/netns/wgm-a, `ip netns` sees it
//	ns.Name(), ns.Path()              // "wgm-a", "/run/netns/wgm-a"
//	ns.Do(func() error {...})         // runs fn on a locked OS thread inside the namespace;
//	                                  // goroutines started by fn do NOT inherit it, and the
//	                                  // thread is thrown away afterwards (never reused)
//	h, err := ns.Netlink()            // *netlink.Handle bound to the namespace (no thread games)
//	ns.Command(ctx, argv...)          // *exec.Cmd run via nsenter --net
//	ns.Exec(ctx, argv...)             // run and return combined output; error includes the output
//	ns.Sysctl("net.ipv4.ip_forward", "1")
//	ns.PIDs()                         // processes whose network namespace is this one
//	ns.Close()                        // kills its processes, unmounts and removes it
//	netns.Open("wgm-a"), netns.Host() // an existing namespace; the host's (root) namespace
//
// # Machines: network namespace + private mount namespace
//
// A Machine is a network namespace plus a persistent mount namespace (bind-mounted at
// /run/wgm-mntns/<name>, no holder process) in which the listed directories are replaced by
// per-machine directories and /sys is a fresh sysfs of the machine's network namespace.
// Inherited bind mounts of other wgm namespaces are detached in it, so that the machine
// never pins another machine's namespace.
//
//	m, err := netns.NewMachine(netns.MachineOptions{Name: "wgm-node-1", StateDir: dir,
//	    Private: []string{"/var/run/wireguard", "/etc/cni/net.d", ...}})
//	m.NS                                 // its *NS
//	m.Command(ctx, argv...) / m.Exec(ctx, argv...)  // nsenter --net --mount
//	m.HostPath("/etc/cni/net.d")         // where that directory lives on the host
//	m.PIDs()                             // processes in its net or mount namespace
//	m.Close()                            // kill processes, drop the mount namespace and netns
//
// # Links, addresses, routes (netlink)
//
//	netns.Veth(a, "eth0", b, "wgm-x", mtu)   // pair with one end in a, the other in b
//	netns.Bridge(ns, "br0", mtu)
//	netns.SetMaster(ns, "eth0", "br0"); netns.LinkUp(ns, "eth0")
//	netns.AddAddr(ns, "eth0", "198.18.0.11/24")
//	netns.AddRoute(ns, "default", "198.18.0.1", "")     // dst, gateway, device
//
// # Captures
//
//	c, err := netns.StartCapture(ctx, ns, "eth0", "not arp")  // tcpdump in the namespace
//	pkts, err := c.Stop()                                     // parsed summary lines
//	pkts[i].Family, .Src, .SrcPort, .Dst, .DstPort, .Proto ("UDP", "TCP", "ICMP", ...), .Line
//
// # Cleanup
//
// Every namespace created here records its owner process (/run/wgm-owners). CleanupLeftovers
// removes every wgm namespace, machine mount namespace, host link and mount whose owner is no
// longer running (or that has no owner record), after killing the processes inside.
// Leftovers lists the same objects without removing them, for "nothing left behind"
// assertions; OwnedBy lists what a live process owns.
//
// Tests in this package need root and skip otherwise (and under -short).
package netns
