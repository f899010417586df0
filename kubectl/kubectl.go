// Package kubectl is the kubectl plugin for wgmesh (`kubectl wgmesh ...`,
// binary kubectl-wgmesh). Each command lives in its own file and registers
// itself from an init function; this file holds what they share: the
// command table, kubeconfig flags and the API client.
package kubectl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	wgmeshv1 "github.com/wgmesh/wgmesh/api/v1alpha1"
)

// Command is one `kubectl wgmesh` subcommand.
type Command struct {
	Name  string
	Usage string // one line: arguments, e.g. "NODE [--wait]"
	Help  string // what it does, a few lines
	// Run runs the command with its arguments (after the command name);
	// output goes to Out, errors are returned.
	Run func(env *Env, args []string) error
}

// Env is what a command runs with.
type Env struct {
	Out, Err io.Writer
	// Now is the clock (tests fix it).
	Now func() time.Time
}

var commands = map[string]Command{}

func register(c Command) {
	if _, dup := commands[c.Name]; dup {
		panic("kubectl-wgmesh: command registered twice: " + c.Name)
	}
	commands[c.Name] = c
}

// Usage is the plugin's help text, listing every command.
func Usage() string {
	var b strings.Builder
	b.WriteString("kubectl wgmesh: inspect and operate the wgmesh WireGuard mesh\n\nUsage:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  kubectl wgmesh %s %s\n", n, commands[n].Usage)
	}
	b.WriteString("\nEvery command takes --kubeconfig PATH, --context NAME and --request-timeout DURATION.\n")
	for _, n := range names {
		fmt.Fprintf(&b, "\n%s\n", indent(n, commands[n].Help))
	}
	return b.String()
}

func indent(name, help string) string {
	lines := strings.Split(strings.TrimRight(help, "\n"), "\n")
	pad := strings.Repeat(" ", 12)
	for i := range lines {
		if i == 0 {
			lines[i] = fmt.Sprintf("%-12s%s", name, lines[i])
		} else {
			lines[i] = pad + lines[i]
		}
	}
	return strings.Join(lines, "\n")
}

// Main runs the plugin with os.Args-style arguments (without the program
// name) and returns the process exit code.
func Main(args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Print(Usage())
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(os.Stderr, "kubectl wgmesh: unknown command %q\n\n%s", args[0], Usage())
		return 2
	}
	env := &Env{Out: os.Stdout, Err: os.Stderr, Now: time.Now}
	if err := c.Run(env, args[1:]); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(os.Stderr, "kubectl wgmesh %s: %v\n", c.Name, err)
		return 1
	}
	return 0
}

// KubeFlags are the connection flags every command takes.
type KubeFlags struct {
	Kubeconfig, Context string
	Timeout             time.Duration
}

// NewFlagSet makes a command's flag set with the connection flags.
func NewFlagSet(name string, kf *KubeFlags) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&kf.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&kf.Context, "context", "", "kubeconfig context to use")
	fs.DurationVar(&kf.Timeout, "request-timeout", 30*time.Second, "timeout for the API requests")
	return fs
}

// RESTConfig loads the kubeconfig the flags name.
func (kf *KubeFlags) RESTConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kf.Kubeconfig != "" {
		rules.ExplicitPath = kf.Kubeconfig
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
		&clientcmd.ConfigOverrides{CurrentContext: kf.Context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	return cfg, nil
}

// Connect is Client with a context bounded by --request-timeout; call the
// cancel function when done.
func (kf *KubeFlags) Connect() (client.Client, context.Context, context.CancelFunc, error) {
	c, err := kf.Client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), kf.Timeout)
	return c, ctx, cancel, nil
}

// Client is a controller-runtime client with the core and wgmesh types.
func (kf *KubeFlags) Client() (client.Client, error) {
	cfg, err := kf.RESTConfig()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := wgmeshv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating client: %w", err)
	}
	return c, nil
}
