package operator

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	wgv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// NodeAnnotations are the wgmesh annotations of one Node, parsed. A field is
// empty (nil) when the annotation is absent or invalid; invalid ones are
// listed in Invalid.
type NodeAnnotations struct {
	PublicKey           string
	Endpoint            string
	ForceEndpoint       string
	PersistentKeepalive *int32
	// Invalid lists the annotations that were present but unusable, in the
	// order PublicKey, Endpoint, ForceEndpoint, PersistentKeepalive.
	Invalid []AnnotationError
}

// AnnotationError is one unusable annotation value.
type AnnotationError struct {
	Annotation string
	Value      string
	Want       string
}

func (e AnnotationError) Error() string {
	return fmt.Sprintf("annotation %s=%q is invalid: want %s", e.Annotation, e.Value, e.Want)
}

// ParseNodeAnnotations reads the wgmesh annotations of a Node.
func ParseNodeAnnotations(annotations map[string]string) NodeAnnotations {
	var out NodeAnnotations
	check := func(key, want string, ok func(string) bool, dst *string) {
		v, present := annotations[key]
		if !present {
			return
		}
		if !ok(v) {
			out.Invalid = append(out.Invalid, AnnotationError{Annotation: key, Value: v, Want: want})
			return
		}
		*dst = v
	}
	check(wgv1.AnnotationPublicKey, "a WireGuard public key: 32 bytes in base64 (44 characters ending in =)", ValidPublicKey, &out.PublicKey)
	check(wgv1.AnnotationEndpoint, "host:port with an IPv4 address or an [IPv6] address and a port in 1-65535", func(s string) bool { return validEndpoint(s, false) }, &out.Endpoint)
	check(wgv1.AnnotationForceEndpoint, "host:port with an IPv4 address, an [IPv6] address or a DNS name and a port in 1-65535", func(s string) bool { return validEndpoint(s, true) }, &out.ForceEndpoint)
	if v, present := annotations[wgv1.AnnotationPersistentKeepalive]; present {
		if k, ok := parseKeepalive(v); ok {
			out.PersistentKeepalive = &k
		} else {
			out.Invalid = append(out.Invalid, AnnotationError{Annotation: wgv1.AnnotationPersistentKeepalive, Value: v, Want: "a number of seconds in 0-65535"})
		}
	}
	return out
}

// ValidPublicKey reports whether s is 32 bytes in canonical base64.
func ValidPublicKey(s string) bool {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	return err == nil && len(b) == 32
}

// dnsName is a DNS name as the MeshPeer CRD accepts it.
var dnsName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)

func validEndpoint(s string, allowDNS bool) bool {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return false
	}
	host, port := s[:i], s[i+1:]
	if !validPort(port) {
		return false
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		a, err := netip.ParseAddr(host[1 : len(host)-1])
		return err == nil && a.Is6() && !a.Is4In6() && a.Zone() == ""
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Is4()
	}
	return allowDNS && len(host) <= 253 && dnsName.MatchString(host) && !looksLikeIPv4(host)
}

// looksLikeIPv4 catches dotted numbers that are not addresses (300.1.1.1),
// which would otherwise pass as DNS names.
func looksLikeIPv4(host string) bool {
	for _, r := range host {
		if (r < '0' || r > '9') && r != '.' {
			return false
		}
	}
	return true
}

func validPort(s string) bool {
	if len(s) == 0 || len(s) > 5 {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	n, _ := strconv.Atoi(s)
	return n >= 1 && n <= 65535
}

func parseKeepalive(s string) (int32, bool) {
	if len(s) == 0 || len(s) > 5 {
		return 0, false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
	}
	n, _ := strconv.Atoi(s)
	return int32(n), n <= 65535
}
