package operator

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

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
	// Candidates are the private and public endpoints the agent announced
	// (wgmesh.io/candidates), each the Node's own address (ParseNode).
	Candidates []wgv1.Candidate
	// Invalid lists the annotations that were present but unusable, in the
	// order PublicKey, Endpoint, ForceEndpoint, PersistentKeepalive,
	// Candidates.
	Invalid []AnnotationError

	// ownEndpoint checks that an endpoint is the Node's own
	// (wgv1.CheckOwnEndpoint); nil when parsed without the Node.
	ownEndpoint func(string) error
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

// ParseNode reads a Node's wgmesh annotations (ParseNodeAnnotations) and
// checks what only the Node tells: the endpoint its agent announced is used
// only when it is one of the Node's own addresses (wgv1.CheckOwnEndpoint).
// Another machine's address there (an agent lying, or an --endpoint the Node
// does not list) is invalid: reported on the Node and its MeshPeer and never
// published, so it never protects an address from external peers. With a
// usable wgmesh.io/force-endpoint (a user's) the announced one is not used
// and not checked.
func ParseNode(n *corev1.Node) NodeAnnotations {
	out := ParseNodeAnnotations(n.Annotations)
	out.ownEndpoint = func(ep string) error { return wgv1.CheckOwnEndpoint(n, ep) }
	if v, ok := n.Annotations[wgv1.AnnotationCandidates]; ok && out.Candidates != nil {
		// Parsable; each host must be the Node's own too.
		if _, err := wgv1.CheckOwnCandidates(n, v); err != nil {
			out.Candidates = nil
			out.Invalid = append(out.Invalid, AnnotationError{Annotation: wgv1.AnnotationCandidates, Value: v,
				Want: WantOwnCandidates(n)})
		}
	}
	if !out.foreignEndpoint() {
		return out
	}
	bad := AnnotationError{Annotation: wgv1.AnnotationEndpoint, Value: out.Endpoint, Want: wgv1.WantOwnEndpoint(n.Name, wgv1.NodeAddrs(n))}
	out.Endpoint = ""
	// In the documented order: after the public key's, if any.
	i := 0
	if len(out.Invalid) > 0 && out.Invalid[0].Annotation == wgv1.AnnotationPublicKey {
		i = 1
	}
	out.Invalid = append(out.Invalid[:i], append([]AnnotationError{bad}, out.Invalid[i:]...)...)
	return out
}

// WantOwnCandidates says what wgmesh.io/candidates accepts on Node n.
func WantOwnCandidates(n *corev1.Node) string {
	return wgv1.WantCandidates + ", each " + wgv1.WantOwnEndpoint(n.Name, wgv1.NodeAddrs(n))
}

// foreignEndpoint reports whether the endpoint the agent announced would be
// used (no usable force-endpoint) but is not the Node's own.
func (a NodeAnnotations) foreignEndpoint() bool {
	return a.Endpoint != "" && a.ForceEndpoint == "" && a.ownEndpoint != nil && a.ownEndpoint(a.Endpoint) != nil
}

// AnnouncesForeignEndpoint reports whether a Node's agent announces, in
// wgmesh.io/endpoint, an address that is not the Node's own (ParseNode
// refuses it).
func AnnouncesForeignEndpoint(n *corev1.Node) bool {
	a := ParseNodeAnnotations(n.Annotations)
	a.ownEndpoint = func(ep string) error { return wgv1.CheckOwnEndpoint(n, ep) }
	return a.foreignEndpoint()
}

// ParseNodeAnnotations reads the wgmesh annotations of a Node, without the
// check that needs the Node itself (see ParseNode).
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
	check(wgv1.AnnotationPublicKey, wgv1.WantPublicKey, func(s string) bool { return wgv1.ParsePublicKey(s) == nil }, &out.PublicKey)
	check(wgv1.AnnotationEndpoint, wgv1.WantEndpointIP, func(s string) bool { _, err := wgv1.ParseEndpoint(s, false); return err == nil }, &out.Endpoint)
	check(wgv1.AnnotationForceEndpoint, wgv1.WantEndpoint, func(s string) bool { _, err := wgv1.ParseEndpoint(s, true); return err == nil }, &out.ForceEndpoint)
	if v, present := annotations[wgv1.AnnotationPersistentKeepalive]; present {
		if k, err := wgv1.ParseKeepalive(v); err == nil {
			out.PersistentKeepalive = &k
		} else {
			out.Invalid = append(out.Invalid, AnnotationError{Annotation: wgv1.AnnotationPersistentKeepalive, Value: v, Want: wgv1.WantKeepalive})
		}
	}
	if v, present := annotations[wgv1.AnnotationCandidates]; present {
		if cs, err := wgv1.ParseCandidatesAnnotation(v); err == nil {
			out.Candidates = append([]wgv1.Candidate{}, cs...) // non-nil: present and parsed
		} else {
			out.Invalid = append(out.Invalid, AnnotationError{Annotation: wgv1.AnnotationCandidates, Value: v, Want: wgv1.WantCandidates})
		}
	}
	return out
}
