package nft

// Programmer reads and writes one Part of table wgmesh in one network
// namespace. Kernel is the real one (netlink); Fake keeps the table in
// memory for the unit tests of every writer.
type Programmer interface {
	// Read returns the part's share of family f's table.
	Read(f Family) (*Digest, error)
	// Apply writes ch, taking rules and verdicts from want; it returns the
	// number of netlink batches sent.
	Apply(f Family, ch *Changes, want *Ruleset) (int, error)
	// EnsureSkeleton creates the table and the part's maps and sets
	// (static typed sets included) when missing.
	EnsureSkeleton(f Family) error
	// Generation is the ruleset generation: it moves with every change
	// to any table of the namespace.
	Generation() (uint32, error)
	// HasStale and FlushStale: chains and sets an earlier write left
	// unreferenced, deleted with the next write or by FlushStale.
	HasStale() bool
	FlushStale() error
	// Delete removes the part's objects of family f (not the table).
	Delete(f Family) error
	// Counters reads the counters of the rules of one of the part's
	// chains (for metrics).
	Counters(f Family, chain string) ([]RuleCounter, error)
}

var _ Programmer = (*Kernel)(nil)

// Sync makes the part's share of family f's table equal want: one read,
// and one write when anything differs (drift included). It reports
// whether it wrote.
func Sync(p Programmer, f Family, want *Ruleset) (bool, error) {
	cur, err := p.Read(f)
	if err != nil {
		return false, err
	}
	ch := Diff(cur, want)
	if ch.Empty() {
		return false, nil
	}
	if _, err := p.Apply(f, ch, want); err != nil {
		return false, err
	}
	return true, nil
}
