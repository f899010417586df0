package nft_test

import (
	"testing"

	"github.com/wgmesh/wgmesh/nft"
)

// TestFakeEmptyMapsExist: a map or set with no elements exists, as in the
// kernel: a rule may look it up, in the first write and in every later one.
func TestFakeEmptyMapsExist(t *testing.T) {
	part := &nft.Part{Name: "p", BaseChains: []nft.BaseChain{{Name: "p-forward", Hook: nft.HookForward}},
		Maps: map[string]nft.KeyKind{"p-map": nft.KeyAddrProtoPort}, Sets: []string{"p-set"}}
	fake := nft.NewFake()
	prog := fake.For(part)
	if err := prog.EnsureSkeleton(nft.IPv4); err != nil {
		t.Fatal(err)
	}
	want := part.Skeleton()
	want.Chains["p-forward"] = nft.Chain{{VMap: "p-map", VMapKey: nft.KeyAddrProtoPort}}
	for i := 0; i < 2; i++ {
		if _, err := nft.Sync(prog, nft.IPv4, want); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		want.Chains["p-forward"] = append(want.Chains["p-forward"], nft.Rule{DaddrSet: "p-set", Verdict: nft.Verdict{Kind: nft.VerdictDrop}})
	}
}
