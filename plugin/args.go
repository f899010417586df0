package plugin

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// parseNamed parses a command line with one positional NAME placed before,
// between or after the flags (`add-peer laptop --allowed-ips ...`); what
// names the argument in errors (for example "MeshPeer NAME").
func parseNamed(fs *flag.FlagSet, args []string, what string) (string, error) {
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	var name string
	for fs.NArg() > 0 {
		if name != "" {
			return "", fmt.Errorf("one %s expected, got %q and %q", what, name, fs.Arg(0))
		}
		name = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return "", err
		}
	}
	if name == "" {
		return "", fmt.Errorf("%s missing (usage: kubectl wgmesh %s %s ...)", what, fs.Name(), what)
	}
	return name, nil
}

// checkObjectName checks a MeshPeer name the way the API server will.
func checkObjectName(name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("MeshPeer name %q is not valid: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// readPrivateKey reads a WireGuard private key from a file holding only the
// key (`wg genkey`) or a wg-quick configuration with a PrivateKey line.
func readPrivateKey(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--private-key-file: %w", err)
	}
	text := strings.TrimSpace(string(b))
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "PrivateKey") {
			text = strings.TrimSpace(v)
			break
		}
	}
	if _, err := publicKeyOf(text); err != nil {
		return "", fmt.Errorf("--private-key-file=%s: %w", path, err)
	}
	return text, nil
}
