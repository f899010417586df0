package bench

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Addresses of the service-proxy benchmark (DESIGN.md, "Addresses tests may
// use"): the local cluster's service CIDR (198.18.128.0/20) holds only 4094
// addresses, so 10,000 Services get a /16 of their own, and pods a /17 beside it.
const (
	benchServiceCIDR = "198.19.0.0/16"
	benchClusterCIDR = "198.18.0.0/17"
	benchNamespace   = "bench"
	servicePort      = 80
	endpointPort     = 8080
	// endpointsPerService of every bulk Service.
	endpointsPerService = 10
	createWorkers       = 16
	managedBy           = "bench.wgmesh.io"
)

var (
	// Bulk Service i has ClusterIP bulkServiceBase+i and endpoints in
	// 198.18.16.0-198.18.127.255 (never contacted; shared between Services
	// when there are more endpoints than addresses).
	bulkServiceBase  = netip.MustParseAddr("198.19.1.0")
	bulkEndpointBase = netip.MustParseAddr("198.18.16.0")
	bulkEndpoints    = 112 * 256

	// The probe Services the client connects to; their endpoints live in the
	// endpoint namespace (proxyNet).
	probeIP   = netip.MustParseAddr("198.19.250.1") // 10 endpoints, for connect latency
	switchIP  = netip.MustParseAddr("198.19.250.2") // one endpoint flipped between two addresses
	probeEPs  = addrRange(netip.MustParseAddr("198.18.2.10"), 10)
	switchEPs = [2]netip.Addr{netip.MustParseAddr("198.18.2.20"), netip.MustParseAddr("198.18.2.21")}
	// changeEP is the endpoint of the Services created one at a time.
	changeEP = netip.MustParseAddr("198.18.2.30")
)

func addrRange(first netip.Addr, n int) []netip.Addr {
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = first
		first = first.Next()
	}
	return out
}

func addAddr(a netip.Addr, n int) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(n)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func bulkName(i int) string          { return fmt.Sprintf("svc-%05d", i) }
func bulkClusterIP(i int) netip.Addr { return addAddr(bulkServiceBase, i) }
func bulkEndpoint(i, j int) netip.Addr {
	return addAddr(bulkEndpointBase, (i*endpointsPerService+j)%bulkEndpoints)
}
func bulkKey(i int) []byte { return serviceKey(bulkClusterIP(i), servicePort) }
func bulkKeys(n int) map[string]bool {
	m := map[string]bool{}
	for i := range n {
		m[string(bulkKey(i))] = true
	}
	return m
}

// benchObjects creates the benchmark's Services and EndpointSlices directly
// (no controller manager: slices written as the EndpointSlice controller would).
type benchObjects struct {
	cs      kubernetes.Interface
	created int // bulk Services 0..created-1 exist
}

func (o *benchObjects) setup(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}
	if _, err := o.cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("namespace %s: %w", benchNamespace, err)
	}
	if err := o.createService(ctx, "probe", probeIP, probeEPs); err != nil {
		return err
	}
	return o.createService(ctx, "switch", switchIP, switchEPs[:1])
}

// grow creates bulk Services (with their slices) until n exist, concurrently.
func (o *benchObjects) grow(ctx context.Context, n int) error {
	if n <= o.created {
		return nil
	}
	next := make(chan int)
	errs := make(chan error, createWorkers)
	var wg sync.WaitGroup
	for range createWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				eps := make([]netip.Addr, endpointsPerService)
				for j := range eps {
					eps[j] = bulkEndpoint(i, j)
				}
				if err := o.createService(ctx, bulkName(i), bulkClusterIP(i), eps); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := o.created; i < n; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		return err
	}
	o.created = n
	return nil
}

// createService creates the EndpointSlice, then the selector-less ClusterIP
// Service (TCP servicePort -> endpointPort) at ip.
func (o *benchObjects) createService(ctx context.Context, name string, ip netip.Addr, endpoints []netip.Addr) error {
	if _, err := o.cs.DiscoveryV1().EndpointSlices(benchNamespace).Create(ctx, endpointSlice(name, endpoints), metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("EndpointSlice %s/%s: %w", benchNamespace, name, err)
	}
	return o.createServiceOnly(ctx, name, ip)
}

func (o *benchObjects) createServiceOnly(ctx context.Context, name string, ip netip.Addr) error {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  ip.String(),
			ClusterIPs: []string{ip.String()},
			IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
			Ports: []corev1.ServicePort{{
				Name: "http", Protocol: corev1.ProtocolTCP, Port: servicePort, TargetPort: intstr.FromInt32(endpointPort),
			}},
		},
	}
	if _, err := o.cs.CoreV1().Services(benchNamespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("Service %s/%s (clusterIP %s): %w", benchNamespace, name, ip, err)
	}
	return nil
}

func (o *benchObjects) deleteService(ctx context.Context, name string) error {
	if err := o.cs.CoreV1().Services(benchNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Service %s/%s: %w", benchNamespace, name, err)
	}
	if err := o.cs.DiscoveryV1().EndpointSlices(benchNamespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete EndpointSlice %s/%s: %w", benchNamespace, name, err)
	}
	return nil
}

// switchSlice returns the "switch" Service's slice pointed at ep, ready for
// updateSlice (read first, so that the timed update is one request).
func (o *benchObjects) switchSlice(ctx context.Context, ep netip.Addr) (*discoveryv1.EndpointSlice, error) {
	cur, err := o.cs.DiscoveryV1().EndpointSlices(benchNamespace).Get(ctx, "switch", metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("EndpointSlice %s/switch: %w", benchNamespace, err)
	}
	cur.Endpoints = endpointSlice("switch", []netip.Addr{ep}).Endpoints
	return cur, nil
}

func (o *benchObjects) updateSlice(ctx context.Context, s *discoveryv1.EndpointSlice) error {
	if _, err := o.cs.DiscoveryV1().EndpointSlices(benchNamespace).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update EndpointSlice %s/%s: %w", s.Namespace, s.Name, err)
	}
	return nil
}

func endpointSlice(service string, addrs []netip.Addr) *discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = discoveryv1.Endpoint{
			Addresses:  []string{a.String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: service, Namespace: benchNamespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: service, discoveryv1.LabelManagedBy: managedBy},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports: []discoveryv1.EndpointPort{{
			Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](endpointPort),
		}},
	}
}
