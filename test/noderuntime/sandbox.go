package noderuntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	corev1 "k8s.io/api/core/v1"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Sandbox is a pod's network namespace with the CNI attachment made in it. It is stored as
// JSON so that a restarted runtime finds (and can tear down) what it made before.
type Sandbox struct {
	ID        string   `json:"id"`
	PodUID    string   `json:"podUID"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	NetNSName string   `json:"netnsName"`
	NetNSPath string   `json:"netnsPath"`
	IPs       []string `json:"ips"`
	Ports     []int    `json:"ports"`
	// ConfList is the CNI configuration used for ADD, reused for DEL.
	ConfList []byte `json:"confList"`
}

// CNIOptions say where CNI configuration, plugins and cache live (containerd's defaults).
type CNIOptions struct {
	ConfDir  string // /etc/cni/net.d
	BinDir   string // /opt/cni/bin
	CacheDir string // /var/lib/cni
}

// sandboxID is the container ID passed to CNI: 64 hex digits like a containerd sandbox.
func sandboxID(uid string) string {
	id := strings.ReplaceAll(uid, "-", "")
	for len(id) < 64 {
		id += "0"
	}
	return id[:64]
}

// loadConfList picks the configuration as containerd does: the first file in lexical order
// with extension .conf, .conflist or .json.
func loadConfList(dir string) (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, fmt.Errorf("read CNI configuration directory %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CNI configuration in %s (the wgmesh agent writes 10-wgmesh.conflist once the node has a podCIDR)", dir)
	}
	sort.Strings(files)
	f := files[0]
	if strings.HasSuffix(f, ".conflist") {
		l, err := libcni.ConfListFromFile(f)
		if err != nil {
			return nil, fmt.Errorf("CNI configuration %s: %w", f, err)
		}
		return l, nil
	}
	c, err := libcni.ConfFromFile(f)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration %s: %w", f, err)
	}
	return libcni.ConfListFromConf(c)
}

func (o CNIOptions) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{o.BinDir}, o.CacheDir, nil)
}

func runtimeConf(sb *Sandbox, pod *corev1.Pod) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: sb.ID,
		NetNS:       sb.NetNSPath,
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", sb.Namespace},
			{"K8S_POD_NAME", sb.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sb.ID},
			{"K8S_POD_UID", sb.PodUID},
		},
	}
	if pod != nil {
		var pms []map[string]any
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if p.HostPort == 0 {
					continue
				}
				proto := strings.ToLower(string(p.Protocol))
				if proto == "" {
					proto = "tcp"
				}
				pms = append(pms, map[string]any{"hostPort": p.HostPort, "containerPort": p.ContainerPort, "protocol": proto, "hostIP": p.HostIP})
			}
		}
		if len(pms) > 0 {
			rt.CapabilityArgs = map[string]any{"portMappings": pms}
		}
	}
	return rt
}

// setupSandbox makes the pod's namespace and runs CNI ADD in it. On failure it runs CNI DEL
// and removes the namespace again, as containerd does, so no half-made pod remains.
func setupSandbox(ctx context.Context, o CNIOptions, pod *corev1.Pod) (*Sandbox, error) {
	list, err := loadConfList(o.ConfDir)
	if err != nil {
		return nil, err
	}
	uid := string(pod.UID)
	sb := &Sandbox{ID: sandboxID(uid), PodUID: uid, Namespace: pod.Namespace, Name: pod.Name, NetNSName: "wgm-pod-" + uid, Ports: podPorts(pod), ConfList: list.Bytes}
	ns, err := netns.NewUnowned(sb.NetNSName)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: create network namespace: %w", pod.Namespace, pod.Name, err)
	}
	sb.NetNSPath = ns.Path()
	res, err := o.cni().AddNetworkList(ctx, list, runtimeConf(sb, pod))
	if err != nil {
		_ = o.cni().DelNetworkList(ctx, list, runtimeConf(sb, pod))
		ns.Close()
		return nil, fmt.Errorf("CNI ADD of network %q for pod %s/%s: %w", list.Name, pod.Namespace, pod.Name, err)
	}
	sb.IPs, err = resultIPs(res)
	if err != nil || len(sb.IPs) == 0 {
		_ = o.cni().DelNetworkList(ctx, list, runtimeConf(sb, pod))
		ns.Close()
		if err == nil {
			err = errors.New("the result has no address")
		}
		return nil, fmt.Errorf("CNI ADD of network %q for pod %s/%s: %w", list.Name, pod.Namespace, pod.Name, err)
	}
	if err := saveSandbox(o, sb); err != nil {
		return nil, err
	}
	return sb, nil
}

// teardownSandbox runs CNI DEL with the configuration used for ADD and removes the namespace
// and the record.
func teardownSandbox(ctx context.Context, o CNIOptions, sb *Sandbox, pod *corev1.Pod) error {
	var errs []error
	list, err := libcni.ConfListFromBytes(sb.ConfList)
	if err == nil {
		if err := o.cni().DelNetworkList(ctx, list, runtimeConf(sb, pod)); err != nil {
			errs = append(errs, fmt.Errorf("CNI DEL for pod %s/%s: %w", sb.Namespace, sb.Name, err))
		}
	} else {
		errs = append(errs, fmt.Errorf("stored CNI configuration of pod %s/%s: %w", sb.Namespace, sb.Name, err))
	}
	if err := netns.OpenPath(sb.NetNSPath).Close(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		os.Remove(sandboxFile(o, sb.PodUID))
	}
	return errors.Join(errs...)
}

// resultIPs returns the addresses of the sandbox interfaces, IPv4 first.
func resultIPs(r types.Result) ([]string, error) {
	cur, err := current.NewResultFromResult(r)
	if err != nil {
		return nil, err
	}
	var v4, v6 []string
	for _, ip := range cur.IPs {
		if ip.Interface != nil && *ip.Interface < len(cur.Interfaces) && cur.Interfaces[*ip.Interface].Sandbox == "" {
			continue // a host-side interface
		}
		if ip.Address.IP.To4() != nil {
			v4 = append(v4, ip.Address.IP.String())
		} else {
			v6 = append(v6, ip.Address.IP.String())
		}
	}
	return append(v4, v6...), nil
}

func podPorts(pod *corev1.Pod) []int {
	seen := map[int]bool{}
	var out []int
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if !seen[int(p.ContainerPort)] {
				seen[int(p.ContainerPort)] = true
				out = append(out, int(p.ContainerPort))
			}
		}
	}
	if len(out) == 0 {
		out = []int{8080}
	}
	return out
}

func sandboxDir(o CNIOptions) string { return filepath.Join(o.CacheDir, "wgmesh-testnode") }

func sandboxFile(o CNIOptions, uid string) string {
	return filepath.Join(sandboxDir(o), uid+".json")
}

func saveSandbox(o CNIOptions, sb *Sandbox) error {
	if err := os.MkdirAll(sandboxDir(o), 0o755); err != nil {
		return err
	}
	b, err := json.Marshal(sb)
	if err != nil {
		return err
	}
	tmp := sandboxFile(o, sb.PodUID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, sandboxFile(o, sb.PodUID))
}

// loadSandboxes reads every stored sandbox.
func loadSandboxes(o CNIOptions) ([]*Sandbox, error) {
	files, _ := filepath.Glob(filepath.Join(sandboxDir(o), "*.json"))
	var out []*Sandbox
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		sb := &Sandbox{}
		if err := json.Unmarshal(b, sb); err != nil {
			return nil, fmt.Errorf("sandbox record %s: %w", f, err)
		}
		out = append(out, sb)
	}
	return out, nil
}
