package egress

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBridgeNetfilterSetsSysctls(t *testing.T) {
	root := t.TempDir()
	for _, k := range BridgeNFSysctls {
		p := filepath.Join(root, k)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := BridgeNetfilter{ProcSys: root, LoadModule: func() error { t.Fatal("module load attempted although present"); return nil }}
	st, err := b.Ensure()
	if err != nil || !st.Enabled || len(st.Changed) != 2 {
		t.Fatalf("status %+v, err %v", st, err)
	}
	for _, k := range BridgeNFSysctls {
		if v, _ := os.ReadFile(filepath.Join(root, k)); strings.TrimSpace(string(v)) != "1" {
			t.Errorf("%s = %q", k, v)
		}
	}
	st, err = b.Ensure()
	if err != nil || !st.Enabled || len(st.Changed) != 0 {
		t.Fatalf("second run: %+v %v", st, err)
	}
}

func TestBridgeNetfilterModuleMissing(t *testing.T) {
	b := BridgeNetfilter{ProcSys: t.TempDir(), LoadModule: func() error { return errors.New("module not found") }}
	st, err := b.Ensure()
	if err != nil {
		t.Fatalf("a missing module must be a condition, not an error: %v", err)
	}
	if st.Enabled || !strings.Contains(st.Reason, "br_netfilter") || !strings.Contains(st.Reason, "module not found") {
		t.Errorf("status %+v", st)
	}
}
