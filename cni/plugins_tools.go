//go:build tools

package cni

// The standard CNI plugins that the agent installs into /opt/cni/bin are built
// by `make cni-plugins` from github.com/containernetworking/plugins at the
// version this import pins in go.mod.
import (
	_ "github.com/containernetworking/plugins/plugins/ipam/host-local"
	_ "github.com/containernetworking/plugins/plugins/main/bridge"
	_ "github.com/containernetworking/plugins/plugins/main/loopback"
	_ "github.com/containernetworking/plugins/plugins/meta/portmap"
)
