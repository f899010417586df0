package netpol

import (
	"crypto/sha256"
	"encoding/base32"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// Selector is a parsed label selector with a canonical text. The zero
// Selector matches nothing.
type Selector struct {
	sel   labels.Selector
	canon string
}

// Everything is the selector {}, which matches every label set.
func Everything() Selector { return Selector{sel: labels.Everything(), canon: "{}"} }

// ParseSelector parses a metav1.LabelSelector once (nil is {}: callers
// decide what an absent selector means before calling).
func ParseSelector(ls *metav1.LabelSelector) (Selector, error) {
	if ls == nil || len(ls.MatchLabels)+len(ls.MatchExpressions) == 0 {
		return Everything(), nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return Selector{}, err
	}
	reqs, _ := sel.Requirements()
	parts := make([]string, len(reqs))
	for i := range reqs {
		parts[i] = reqs[i].String()
	}
	// Requirements come sorted by key only; sorting the text makes equal
	// selectors equal whatever the order they were written in.
	slices.Sort(parts)
	return Selector{sel: sel, canon: strings.Join(slices.Compact(parts), ",")}, nil
}

// Matches says whether the selector matches the label set.
func (s Selector) Matches(l map[string]string) bool {
	return s.sel != nil && s.sel.Matches(labels.Set(l))
}

// String is the canonical text: "{}" for everything, "<nothing>" for the
// zero Selector, otherwise the requirements sorted ("pod=a,tier in (x,y)").
func (s Selector) String() string {
	if s.sel == nil {
		return "<nothing>"
	}
	return s.canon
}

// readable is a short form of the selector for names: keys without their
// DNS prefix, characters nft identifiers allow.
func (s Selector) readable() string {
	if s.sel == nil {
		return "none"
	}
	reqs, _ := s.sel.Requirements()
	if len(reqs) == 0 {
		return "all"
	}
	parts := make([]string, 0, len(reqs))
	for _, r := range reqs {
		k := r.Key()
		if k == LabelNamespaceName {
			k = "name"
		} else if i := strings.LastIndexByte(k, '/'); i >= 0 {
			k = k[i+1:]
		}
		vals := strings.Join(slices.Sorted(slices.Values(r.ValuesUnsorted())), "_")
		switch r.Operator() {
		case selection.Exists:
			parts = append(parts, k)
		case selection.DoesNotExist:
			parts = append(parts, "no_"+k)
		case selection.NotIn, selection.NotEquals:
			parts = append(parts, k+"_not_"+vals)
		default:
			parts = append(parts, k+"_"+vals)
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ".")
}

// SelectorKey identifies a peer selector: ID is its canonical text (equal
// IDs select equal pods), Name a short stable name for the set of its
// members: "peers-<hash of ID>-<readable>" (design §3.1).
type SelectorKey struct {
	ID   string
	Name string
}

// MaxNameLen bounds SelectorKey.Name. The kernel takes 255 bytes for set
// and chain names (NFT_SET_MAXNAMELEN = NFT_CHAIN_MAXNAMELEN =
// NFT_NAME_MAXLEN = 256 with the NUL; older uapi headers had 32); 31 keeps
// names within the old limit and readable in `nft list`.
const MaxNameLen = 31

// PeersPrefix starts every SelectorKey.Name: a letter first, as nft
// identifiers want, and the kind of set.
const PeersPrefix = "peers-"

// hashLen is the length of the hash part of a name: 8 base32 characters,
// 40 bits, like kube-proxy's and the service NAT's chain names.
const hashLen = 8

func peerKey(ps *PeerSelector) SelectorKey {
	var id, readable string
	if ps.Namespace != "" {
		id = "ns=" + ps.Namespace + ";pods=" + ps.Pods.String()
		readable = ps.Namespace + "/" + ps.Pods.readable()
	} else {
		id = "nss=" + ps.Namespaces.String() + ";pods=" + ps.Pods.String()
		// Namespace names have no dots, so "ns." cannot start a
		// namespace-scoped name.
		readable = "ns." + ps.Namespaces.readable() + "/" + ps.Pods.readable()
	}
	return SelectorKey{ID: id, Name: shortName(id, readable)}
}

// shortName is PeersPrefix + "<hash of id>-<readable>", cut to
// MaxNameLen: the hash keeps it unique, the rest tells a reader what it
// is, in the characters nft identifiers allow.
func shortName(id, readable string) string {
	r := []byte(readable)
	for i, c := range r {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '/' || c == '_' || c == '.' || c == '-') {
			r[i] = '_'
		}
	}
	name := PeersPrefix + idHash(id)[:hashLen] + "-" + string(r)
	if len(name) > MaxNameLen {
		name = name[:MaxNameLen]
	}
	return name
}

// idHash is the lower-case base32 of the SHA-256 of id.
func idHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))
}
