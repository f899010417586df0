package kubectl

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
	"github.com/wgmesh/wgmesh/podnet"
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

// peerConfFlags are the flags of the commands that print an external
// peer's wg-quick configuration (add-peer, showconf).
type peerConfFlags struct {
	Name, ServiceVia, ServiceCIDRs string
	Keepalive                      int32
}

// bind registers --keepalive (with its help text), --service-via and
// --service-cidrs.
func (f *peerConfFlags) bind(fs *flag.FlagSet, keepaliveHelp string) {
	fs.Func("keepalive", keepaliveHelp, func(s string) error {
		n, err := wgmeshv1.ParseKeepalive(s)
		f.Keepalive = n
		return err
	})
	fs.StringVar(&f.ServiceVia, "service-via", "", "node that carries the routes to the service CIDRs (default: the first Ready node with an endpoint)")
	fs.StringVar(&f.ServiceCIDRs, "service-cidrs", "", "the cluster's service CIDRs (default: the agent DaemonSet's --service-cidrs, else the ServiceCIDR objects)")
}

// parse parses args (the peer's NAME among the flags) and checks the name
// and --service-cidrs.
func (f *peerConfFlags) parse(fs *flag.FlagSet, args []string) error {
	name, err := parseNamed(fs, args, "NAME")
	if err != nil {
		return err
	}
	if err := checkObjectName(name); err != nil {
		return err
	}
	f.Name = name
	if f.ServiceCIDRs != "" {
		if _, err := podnet.ParseCIDRList("--service-cidrs", f.ServiceCIDRs); err != nil {
			return err
		}
	}
	return nil
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
