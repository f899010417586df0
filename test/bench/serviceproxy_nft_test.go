package bench

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/wgmesh/wgmesh/test/netns"
)

// nftProbe reads one proxy's IPv4 table in a network namespace from outside
// the proxy: the same external measure for kube-proxy and wgmesh. set is
// the set or map that holds a programmed Service's daddr . l4proto . dport
// (proxySpec.keySet).
type nftProbe struct {
	table  string
	set    string
	nsFile *os.File
	nl     *netlink.Conn  // single-element lookups (cheap enough to poll every millisecond)
	nft    *nftables.Conn // dumps
}

func newNFTProbe(ns *netns.NS, table, set string) (*nftProbe, error) {
	f, err := os.Open(ns.Path())
	if err != nil {
		return nil, err
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netfilter netlink in %s: %w", ns, err)
	}
	nft, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		nl.Close()
		f.Close()
		return nil, fmt.Errorf("nftables in %s: %w", ns, err)
	}
	return &nftProbe{table: table, set: set, nsFile: f, nl: nl, nft: nft}, nil
}

func (p *nftProbe) Close() {
	p.nl.Close()
	p.nsFile.Close()
}

// serviceKey is the key set key of a TCP ClusterIP:port: each field of the
// concatenation padded to 4 bytes, as the kernel stores it.
func serviceKey(ip netip.Addr, port uint16) []byte {
	k := make([]byte, 12)
	a := ip.As4()
	copy(k[0:4], a[:])
	k[4] = unix.IPPROTO_TCP
	binary.BigEndian.PutUint16(k[8:10], port)
	return k
}

// has tells whether the key set holds key. It asks the kernel for that one
// element (NFT_MSG_GETSETELEM without NLM_F_DUMP, as `nft get element` does),
// which costs the same with 10 or 10,000 elements; google/nftables only
// offers the dump. A missing table, map or element is "no".
func (p *nftProbe) has(key []byte) (bool, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, p.table)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, p.set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(list *netlink.AttributeEncoder) error {
		list.Nested(unix.NFTA_LIST_ELEM, func(elem *netlink.AttributeEncoder) error {
			elem.Nested(unix.NFTA_SET_ELEM_KEY, func(k *netlink.AttributeEncoder) error {
				k.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return false, err
	}
	msg := netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request,
		},
		Data: append([]byte{unix.NFPROTO_IPV4, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
	if _, err := p.nl.Execute(msg); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("get element of %s %s: %w", p.table, p.set, err)
	}
	return true, nil
}

// count dumps the key set (google/nftables) and counts the keys that are in want.
func (p *nftProbe) count(want map[string]bool) (int, error) {
	set, err := p.nft.GetSetByName(&nftables.Table{Name: p.table, Family: nftables.TableFamilyIPv4}, p.set)
	if err != nil {
		return 0, nil // no table or map yet
	}
	elems, err := p.nft.GetSetElements(set)
	if err != nil {
		return 0, fmt.Errorf("dump %s %s: %w", p.table, p.set, err)
	}
	n := 0
	for _, e := range elems {
		if want[string(e.Key)] {
			n++
		}
	}
	return n, nil
}
