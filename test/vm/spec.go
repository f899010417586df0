package vm

// Tags of the 9p shares and where the guest mounts them.
const (
	tagRoot    = "wgmroot"    // the host's /, read-only: the overlay's lower layer
	tagModules = "wgmmodules" // <kernel dir>/lib/modules, read-only
	tagRun     = "wgmrun"     // the run directory, writable
	// guestRunDir is where the run directory appears in the guest.
	guestRunDir = "/run/wgm-vm"
)

// Files in the run directory.
const (
	specFile   = "spec.json"   // what to run (host -> guest)
	outputFile = "output"      // the commands' output as it comes (guest -> host)
	statusFile = "status.json" // written last, once every command ended (guest -> host)
)

// spec is what the guest runs.
type spec struct {
	// Commands are bash command lines, run one after the other in Dir.
	Commands []string
	Dir      string
	Env      []string
	// KernelVersion names /lib/modules/<version> in the guest.
	KernelVersion string
	// Network: the guest has a NIC (eth0) on the host's side of the given addresses.
	Addrs []string
	// Gateway is the default route over eth0 ("" for none: the guest then routes
	// everything into a dummy link, so it never leaves the guest).
	Gateway string
}

// status is what the guest reports at the end.
type status struct {
	// Exit is each command's exit code, in order (-1: could not start).
	Exit []int
	// Error is set when the guest itself failed (a share, a module) before or while
	// running the commands.
	Error string `json:",omitempty"`
}
