package operator

import (
	"fmt"

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
	return out
}
