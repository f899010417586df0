// Package cniinstall is the agent's edge for pod networking on the node: it writes
// the rendered conflist (package github.com/wgmesh/wgmesh/cni/conflist) into the CNI
// configuration directory and installs the standard plugin binaries into the
// CNI binary directory, both atomically so that a container runtime never
// reads a half-written file or runs a half-written binary.
//
// It owns exactly one file in the configuration directory
// (10-wgmesh.conflist) and the plugin binaries it installs; it never edits or
// deletes anything else there. On cleanup (helm uninstall, --cleanup-on-exit)
// it removes the conflist and only the plugins it created: their names are
// recorded in the state directory as it installs them, so a bridge or
// portmap binary the node had before wgmesh stays. When the node has no podCIDR the
// conflist is absent, so CNI ADD fails in the runtime with "no network
// config found" and the pod sandbox is retried later instead of being
// half-configured.
package cniinstall
