package egress

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/wgmesh/wgmesh/agent/kmod"
	"github.com/wgmesh/wgmesh/agent/sysctl"
)

// BridgeNFSysctls are the sysctls that make bridged IPv4/IPv6 traffic pass
// netfilter (service NAT with a backend on the same bridge needs them).
var BridgeNFSysctls = []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"}

// BridgeNetfilter turns the br_netfilter sysctls on (through agent/sysctl),
// loading the module first when they are missing.
type BridgeNetfilter struct {
	// ProcSys is the sysctl root, /proc/sys by default.
	ProcSys string
	// LoadModule loads br_netfilter when its sysctls are missing; the default
	// runs `modprobe br_netfilter` when modprobe exists, else loads it from
	// /lib/modules itself (agent/kmod: the image has no modprobe).
	LoadModule func() error
}

// BridgeNFStatus is the outcome of Ensure: a condition, not an error, when
// the module is unavailable.
type BridgeNFStatus struct {
	Enabled bool
	Changed []string // sysctls that were set
	Reason  string   // why not enabled
}

// Ensure sets the sysctls to 1. A missing br_netfilter module that cannot be
// loaded gives Enabled=false with a Reason and no error; a sysctl that exists
// but cannot be written is an error.
func (b BridgeNetfilter) Ensure() (BridgeNFStatus, error) {
	root := b.ProcSys
	if root == "" {
		root = "/proc/sys"
	}
	if _, err := os.Stat(filepath.Join(root, BridgeNFSysctls[0])); errors.Is(err, fs.ErrNotExist) {
		load := b.LoadModule
		if load == nil {
			load = modprobeBrNetfilter
		}
		if lerr := load(); lerr != nil {
			return BridgeNFStatus{Reason: fmt.Sprintf("%s is missing and the br_netfilter module could not be loaded (%v): bridged pod traffic bypasses netfilter, so same-node service NAT will not work; load br_netfilter on the host", filepath.Join(root, BridgeNFSysctls[0]), lerr)}, nil
		}
	}
	var st BridgeNFStatus
	results, err := sysctl.Ensure(root, sysctl.BridgeNetfilter())
	for _, r := range results {
		if errors.Is(r.Err, fs.ErrNotExist) {
			return BridgeNFStatus{Reason: fmt.Sprintf("%s is missing after loading br_netfilter", filepath.Join(root, strings.ReplaceAll(r.Key, ".", "/")))}, nil
		}
		if r.Changed {
			st.Changed = append(st.Changed, r.Key)
		}
	}
	if err != nil {
		return st, err
	}
	st.Enabled = true
	return st, nil
}

func modprobeBrNetfilter() error {
	path, err := exec.LookPath("modprobe")
	if err != nil {
		return kmod.Loader{}.Load("br_netfilter")
	}
	if out, err := exec.Command(path, "br_netfilter").CombinedOutput(); err != nil {
		return fmt.Errorf("modprobe br_netfilter: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
