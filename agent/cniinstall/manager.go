package cniinstall

import (
	"context"
	"fmt"
	"os/exec"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/cni/conflist"
)

// State is what the CNI configuration depends on.
type State struct {
	PodCIDRs []string // the node's spec.podCIDRs; empty = no pod networking yet
	MTU      int      // the mesh MTU
}

// EventFunc records a Kubernetes Event on the agent's Node (type is
// corev1.EventTypeNormal or corev1.EventTypeWarning).
type EventFunc func(eventType, reason, message string)

// Options configure a Manager.
type Options struct {
	ConfDir   string // --cni-conf-dir
	BinDir    string // --cni-bin-dir
	BinSource string // --cni-bin-source; empty = do not install plugins
	// PluginRecord is the file naming the plugins the agent created in
	// BinDir (in its state directory), so that Cleanup removes those and no
	// others; see PluginInstaller.Record.
	PluginRecord string
	// PortMapBackend overrides detection ("nftables" or "iptables").
	PortMapBackend string
	// IPAMDataDir is host-local's dataDir; empty = the plugin's default /var/lib/cni/networks.
	IPAMDataDir string
	// PolicySocket is where the network policy answers the CNI plugin
	// (--network-policy-socket, only with --network-policy); empty: the
	// conflist has no policy entry.
	PolicySocket string
	// LookPath finds the nft binary for backend detection; defaults to exec.LookPath.
	LookPath func(string) (string, error)
	Log      logr.Logger
	Events   EventFunc // optional
	Metrics  *Metrics  // optional
	// GuardReady is nil while the leak guard is in the kernel
	// (leakguard.Guard.Ready): Apply writes nothing before it is, so the
	// conflist never exists without the guard. Nil: no guard to wait for.
	GuardReady func() error
}

// Manager keeps the node's CNI conflist and plugin binaries in place.
// Apply is level-based and idempotent; it writes nothing when all is in place.
type Manager struct {
	opts    Options
	conf    ConfigFile
	plugins *PluginInstaller
}

// New returns a Manager for opts.
func New(opts Options) *Manager {
	if opts.LookPath == nil {
		opts.LookPath = exec.LookPath
	}
	if opts.Events == nil {
		opts.Events = func(string, string, string) {}
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	return &Manager{
		opts:    opts,
		conf:    ConfigFile{Dir: opts.ConfDir, Name: conflist.ConfFileName},
		plugins: &PluginInstaller{SourceDir: opts.BinSource, BinDir: opts.BinDir, Record: opts.PluginRecord},
	}
}

// ConfigPath is where the conflist goes.
func (m *Manager) ConfigPath() string { return m.conf.Path() }

// Apply installs the plugins (first, so that the conflist never names a
// missing binary) and then writes the conflist for st, or removes it when
// the node has no podCIDRs.
func (m *Manager) Apply(_ context.Context, st State) error {
	if m.opts.GuardReady != nil {
		if err := m.opts.GuardReady(); err != nil {
			return fmt.Errorf("CNI configuration not written: the leak guard is not in place: %w", err)
		}
	}
	if m.opts.BinSource != "" {
		installed, err := m.plugins.Ensure()
		for _, name := range installed {
			m.opts.Metrics.PluginInstalls.WithLabelValues(name).Inc()
		}
		if len(installed) > 0 {
			m.opts.Log.Info("installed CNI plugins", "plugins", installed, "binDir", m.opts.BinDir)
			m.opts.Events(corev1.EventTypeNormal, "CNIPluginsInstalled", fmt.Sprintf("installed CNI plugins %v into %s", installed, m.opts.BinDir))
		}
		if err != nil {
			m.opts.Metrics.Errors.WithLabelValues("install").Inc()
			m.opts.Events(corev1.EventTypeWarning, "CNIPluginInstallFailed", err.Error())
			return err
		}
	}

	if len(st.PodCIDRs) == 0 {
		removed, err := m.conf.Remove()
		if err != nil {
			m.opts.Metrics.Errors.WithLabelValues("remove").Inc()
			return err
		}
		m.opts.Metrics.ConfigPresent.Set(0)
		if removed {
			m.opts.Metrics.ConfigRemovals.Inc()
			m.opts.Log.Info("removed CNI config: node has no podCIDRs", "path", m.conf.Path())
			m.opts.Events(corev1.EventTypeNormal, "CNIConfigRemoved", fmt.Sprintf("removed %s: the node has no podCIDRs", m.conf.Path()))
		}
		return nil
	}

	content, err := conflist.Render(conflist.Options{
		PodCIDRs:       st.PodCIDRs,
		MTU:            st.MTU,
		PortMapBackend: m.portMapBackend(),
		DataDir:        m.opts.IPAMDataDir,
		PolicySocket:   m.opts.PolicySocket,
	})
	if err != nil {
		m.opts.Metrics.Errors.WithLabelValues("render").Inc()
		err = fmt.Errorf("rendering %s: %w", m.conf.Path(), err)
		m.opts.Events(corev1.EventTypeWarning, "CNIConfigInvalid", err.Error())
		return err
	}
	wrote, err := m.conf.Ensure(content)
	if err != nil {
		m.opts.Metrics.Errors.WithLabelValues("write").Inc()
		return err
	}
	m.opts.Metrics.ConfigPresent.Set(1)
	if wrote {
		m.opts.Metrics.ConfigWrites.Inc()
		m.opts.Log.Info("wrote CNI config", "path", m.conf.Path(), "podCIDRs", st.PodCIDRs, "mtu", st.MTU)
		m.opts.Events(corev1.EventTypeNormal, "CNIConfigWritten", fmt.Sprintf("wrote %s for podCIDRs %v, MTU %d", m.conf.Path(), st.PodCIDRs, st.MTU))
	}
	return nil
}

// Cleanup removes the agent's conflist, then the plugin binaries it
// created (PluginInstaller.Remove: those absent before it installed them,
// and wgmesh-guard, while they still hold what it installed). Plugins the
// node had before wgmesh, and every other file, stay.
func (m *Manager) Cleanup(_ context.Context) error {
	removed, err := m.conf.Remove()
	if err != nil {
		m.opts.Metrics.Errors.WithLabelValues("remove").Inc()
		return err
	}
	m.opts.Metrics.ConfigPresent.Set(0)
	if removed {
		m.opts.Metrics.ConfigRemovals.Inc()
		m.opts.Log.Info("removed CNI config on cleanup", "path", m.conf.Path())
	}
	if m.opts.BinSource == "" {
		return nil
	}
	plugins, err := m.plugins.Remove()
	if len(plugins) > 0 {
		m.opts.Log.Info("removed the CNI plugins wgmesh installed", "plugins", plugins, "binDir", m.opts.BinDir)
	}
	if err != nil {
		m.opts.Metrics.Errors.WithLabelValues("remove").Inc()
	}
	return err
}

func (m *Manager) portMapBackend() string {
	if m.opts.PortMapBackend != "" {
		return m.opts.PortMapBackend
	}
	_, err := m.opts.LookPath("nft")
	return conflist.PortMapBackendFor(err == nil)
}
