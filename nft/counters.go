package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// RuleCounter is what one rule's counter counted.
type RuleCounter struct {
	// Index is the rule's position in its chain.
	Index int
	// Fingerprint is the rule's identity: Fingerprint(rule.String()).
	Fingerprint    string
	Packets, Bytes uint64
}

// Counters reads the counters of the rules of the part's chain in family
// f, in order; rules without a counter are left out, and a missing chain
// has none. Rewriting a chain starts its counters again at zero.
func (k *Kernel) Counters(f Family, chain string) (_ []RuleCounter, err error) {
	if !k.Part.OwnsChain(chain) {
		return nil, fmt.Errorf("chain %s is not part %s's", chain, k.Part.Name)
	}
	c, err := k.conn()
	if err != nil {
		return nil, err
	}
	defer func() { k.release(c, err) }()
	t := table(f)
	rules, err := c.GetRules(t, &nftables.Chain{Name: chain, Table: t})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("table %s %s: reading the counters of chain %s: %w", f, Table, chain, err)
	}
	var out []RuleCounter
	for i, r := range rules {
		for _, e := range r.Exprs {
			if ctr, ok := e.(*expr.Counter); ok {
				out = append(out, RuleCounter{Index: i, Fingerprint: string(userdata.Get(r.UserData, udataFingerprint)),
					Packets: ctr.Packets, Bytes: ctr.Bytes})
				break
			}
		}
	}
	return out, nil
}
