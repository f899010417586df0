package cluster

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wgmesh/wgmesh/test/noderuntime"
)

// WorkloadImage is the image name pods use; the node runtime runs its built-in workload
// whatever the image says.
const WorkloadImage = "wgmesh.io/test-workload:builtin"

// AgnhostImage is what pods run on real nodes (imported by hack/node-parts.sh, the name the
// upstream e2e suite uses).
const AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"

// DefaultWorkloadPort is the port the workload serves when a pod declares none.
const DefaultWorkloadPort = 8080

// PodOptions describe a test pod.
type PodOptions struct {
	Namespace string // default "default"
	Name      string
	Node      *Node
	Labels    map[string]string // default {"app": Name}
	Ports     []int32           // TCP+UDP container ports (default 8080)
	HostPort  int32             // optional hostPort for the first port
	// HostNetwork: the pod shares its node's network namespace (real nodes only), so
	// its address is the node's.
	HostNetwork bool
}

func metaName(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

// CreatePod creates a pod bound to node that runs the built-in workload on ports.
func (c *Cluster) CreatePod(ctx context.Context, node *Node, name string, ports ...int32) (*corev1.Pod, error) {
	return c.CreatePodWith(ctx, PodOptions{Name: name, Node: node, Ports: ports})
}

// CreatePodWith creates a pod from options.
func (c *Cluster) CreatePodWith(ctx context.Context, o PodOptions) (*corev1.Pod, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.Labels == nil {
		o.Labels = map[string]string{"app": o.Name}
	}
	if len(o.Ports) == 0 {
		o.Ports = []int32{DefaultWorkloadPort}
	}
	var ports []corev1.ContainerPort
	for i, p := range o.Ports {
		tcp := corev1.ContainerPort{Name: fmt.Sprintf("tcp-%d", p), ContainerPort: p, Protocol: corev1.ProtocolTCP}
		if i == 0 && o.HostPort != 0 {
			tcp.HostPort = o.HostPort
		}
		ports = append(ports, tcp, corev1.ContainerPort{Name: fmt.Sprintf("udp-%d", p), ContainerPort: p, Protocol: corev1.ProtocolUDP})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, Labels: o.Labels},
		Spec: corev1.PodSpec{
			NodeName:   o.Node.Name,
			Containers: []corev1.Container{{Name: "workload", Image: WorkloadImage, Ports: ports}},
		},
	}
	if o.HostNetwork && !c.opts.RealNodes {
		return nil, fmt.Errorf("create pod %s/%s: HostNetwork needs real nodes", o.Namespace, o.Name)
	}
	pod.Spec.HostNetwork = o.HostNetwork
	if c.opts.RealNodes {
		// The real scheduler places it (on that node); agnhost netexec answers the same
		// requests as the built-in workload, over HTTP and UDP on the first port.
		pod.Spec.NodeName = ""
		pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": o.Node.Name}
		pod.Spec.TerminationGracePeriodSeconds = new(int64)
		ctr := &pod.Spec.Containers[0]
		ctr.Image, ctr.ImagePullPolicy = AgnhostImage, corev1.PullIfNotPresent
		ctr.Args = []string{"netexec", fmt.Sprintf("--http-port=%d", o.Ports[0]), fmt.Sprintf("--udp-port=%d", o.Ports[0])}
		ctr.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: "/hostname", Port: intstr.FromInt32(o.Ports[0])}}, PeriodSeconds: 1}
	}
	if err := c.Client.Create(ctx, pod); err != nil {
		return nil, fmt.Errorf("create pod %s/%s on %s: %w", o.Namespace, o.Name, o.Node.Name, err)
	}
	return pod, nil
}

// WaitPodReady waits until the pod is Running and Ready and returns it. On timeout the error
// carries the pod's status and events.
func (c *Cluster) WaitPodReady(ctx context.Context, namespace, name string, timeout time.Duration) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	err := waitUntil(ctx, timeout, "pod "+namespace+"/"+name+" to be Ready", nil, func() bool {
		if c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, pod) != nil {
			return false
		}
		if pod.Status.Phase != corev1.PodRunning || pod.Status.PodIP == "" {
			return false
		}
		for _, cond := range pod.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	if err != nil {
		return pod, fmt.Errorf("%w; %s", err, c.describePod(ctx, namespace, name))
	}
	return pod, nil
}

// describePod summarises a pod's status and events, for failure messages.
func (c *Cluster) describePod(ctx context.Context, namespace, name string) string {
	var b strings.Builder
	pod := &corev1.Pod{}
	if err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, pod); err == nil {
		fmt.Fprintf(&b, "phase=%s reason=%q message=%q podIPs=%v", pod.Status.Phase, pod.Status.Reason, pod.Status.Message, pod.Status.PodIPs)
	}
	evs := &corev1.EventList{}
	if err := c.Client.List(ctx, evs, client.InNamespace(namespace)); err == nil {
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name {
				fmt.Fprintf(&b, "; event %s %s: %s", e.Type, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

// DeletePod deletes a pod and waits until the runtime has finalised it.
func (c *Cluster) DeletePod(ctx context.Context, namespace, name string, timeout time.Duration) error {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := c.Client.Delete(ctx, pod); err != nil {
		return client.IgnoreNotFound(err)
	}
	return waitUntil(ctx, timeout, "pod "+namespace+"/"+name+" to be gone", nil, func() bool {
		err := c.Client.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{})
		return client.IgnoreNotFound(err) == nil && err != nil
	})
}

// Dial connects from the node's network namespace to addr ("host:port") with "tcp", "udp"
// or "http" and returns the workload's answer to request ("hostname", "clientip",
// "echo <text>", or an HTTP path such as "/bytes?n=1000000"); see noderuntime.Request.
func (n *Node) Dial(ctx context.Context, proto, addr, request string) (string, error) {
	ans, err := noderuntime.Request(ctx, noderuntime.NSDialer(n.NetNS), proto, addr, request)
	if err != nil {
		return "", fmt.Errorf("%s %s %q from node %s: %w", proto, addr, request, n.Name, err)
	}
	return ans, nil
}

// PodDial makes the workload in pod `from` dial host:port with proto ("http", "udp", "tcp")
// and send request ("hostname", "clientip", "echo <msg>"), through the workload's /dial
// endpoint (like agnhost netexec). The request to `from` is made from from's node. It
// returns the answer the target gave.
func (c *Cluster) PodDial(ctx context.Context, from *corev1.Pod, proto, host string, port int, request string) (string, error) {
	node := c.Node(from.Spec.NodeName)
	if node == nil {
		return "", fmt.Errorf("pod %s/%s: node %q is not in this cluster", from.Namespace, from.Name, from.Spec.NodeName)
	}
	if from.Status.PodIP == "" {
		return "", fmt.Errorf("pod %s/%s: %w", from.Namespace, from.Name, errNoPodIP)
	}
	q := url.Values{"host": {host}, "port": {strconv.Itoa(port)}, "protocol": {proto}, "request": {request}, "tries": {"1"}}
	ans, err := node.Dial(ctx, "http", net.JoinHostPort(from.Status.PodIP, strconv.Itoa(workloadPort(from))), "/dial?"+q.Encode())
	if err != nil {
		return "", err
	}
	return noderuntime.ParseDialAnswer(ans)
}

func workloadPort(p *corev1.Pod) int {
	for _, ctr := range p.Spec.Containers {
		for _, port := range ctr.Ports {
			if port.Protocol == corev1.ProtocolTCP || port.Protocol == "" {
				return int(port.ContainerPort)
			}
		}
	}
	return DefaultWorkloadPort
}
