//go:build tools

// Package tools pins containerd, its runc shim and ctr for real nodes
// (hack/node-parts.sh builds them with CGO_ENABLED=0). A module of its own, so
// that containerd's dependencies keep the versions containerd was released
// with, whatever the other tools modules need.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
