package kubectl

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

func TestRotateKeyArguments(t *testing.T) {
	env := &Env{Out: &bytes.Buffer{}, Err: &bytes.Buffer{}, Now: time.Now}
	for _, args := range [][]string{nil, {"--wait"}, {"a", "b"}, {"a", "--wait", "b"}} {
		err := runRotateKey(env, args)
		if err == nil || !strings.Contains(err.Error(), "exactly one node name") {
			t.Errorf("rotate-key %v: %v, want the usage error", args, err)
		}
	}
}

// The token the command makes is one the agent accepts.
func TestRotateKeyTokenMatchesThePattern(t *testing.T) {
	now := time.Date(2026, 11, 26, 1, 2, 3, 456e6, time.UTC)
	tok := now.UTC().Format("20060102T150405.000Z")
	if !regexp.MustCompile(wgmeshv1.RotateKeyTokenPattern).MatchString(tok) || !regexp.MustCompile(wgmeshv1.RotateKeyTokenPattern).MatchString(tok+"-2") {
		t.Fatalf("token %q does not match %s", tok, wgmeshv1.RotateKeyTokenPattern)
	}
}

func TestPrintRotation(t *testing.T) {
	var out bytes.Buffer
	env := &Env{Out: &out, Now: time.Now}
	r := rotateResult{Token: "t1", OldKey: "OLD=", NewKey: "NEW=", Took: 1234 * time.Millisecond, Report: "node a: WireGuard key rotated (request t1)"}
	if err := printRotation(env, "a", r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"key rotated in 1.234s", "old public key: OLD=", "new public key: NEW=", "agent: node a: WireGuard key rotated"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	r.RolledBack, r.NewKey, r.Report = true, "OLD=", "node a: key rotation t1 rolled back, public key OLD= stays: the operator did not publish"
	err := printRotation(env, "a", r)
	if err == nil || !strings.Contains(err.Error(), "rolled back") || !strings.Contains(err.Error(), "did not publish") {
		t.Errorf("a roll-back must fail with the agent's reason: %v", err)
	}
}
