//go:build tools

// Package tools pins CoreDNS for real nodes (the e2e Services specs resolve
// service names; hack/node-parts.sh builds it). A module of its own, so that
// CoreDNS's dependencies keep the versions CoreDNS was released with.
package tools

import _ "github.com/coredns/coredns"
