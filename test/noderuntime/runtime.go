package noderuntime

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Options configure a node runtime.
type Options struct {
	NodeName string
	NodeIPs  []string
	CNI      CNIOptions
	// RetryAfter is the wait before retrying a failed CNI ADD (default 2s).
	RetryAfter time.Duration
	Log        logr.Logger
}

// Runtime is the kubelet + container runtime stand-in of one node.
type Runtime struct {
	o      Options
	client client.Client
	mu     sync.Mutex
	pods   map[types.NamespacedName]*podState
	// lastErr avoids repeating the same Event on every retry.
	lastErr map[types.UID]string
}

type podState struct {
	sb *Sandbox
	wl *Workload
}

// Run registers the node and runs its pods until ctx ends; then it stops the workloads and
// leaves sandboxes in place (like a kubelet restart), for the next Run to pick up.
func Run(ctx context.Context, cfg *rest.Config, o Options) error {
	if o.RetryAfter == 0 {
		o.RetryAfter = 2 * time.Second
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	if err := RegisterNode(ctx, direct, o.NodeName, o.NodeIPs); err != nil {
		return err
	}
	o.Log.Info("node registered", "node", o.NodeName, "ips", o.NodeIPs)
	mgr, err := ctrl.NewManager(cfg, manager.Options{
		Scheme:  scheme,
		Metrics: metricsserver.Options{BindAddress: "0"},
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.nodeName", o.NodeName)},
		}},
		Logger: o.Log,
	})
	if err != nil {
		return err
	}
	r := &Runtime{o: o, client: mgr.GetClient(), pods: map[types.NamespacedName]*podState{}, lastErr: map[types.UID]string{}}
	if err := r.recover(); err != nil {
		return err
	}
	err = ctrl.NewControllerManagedBy(mgr).
		Named("node-runtime").
		For(&corev1.Pod{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
	if err != nil {
		return err
	}
	// Sandboxes left by an earlier run whose pods are gone are torn down once the cache
	// has synced (a deleted pod gets no reconcile of its own).
	err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return nil
		}
		r.mu.Lock()
		var keys []types.NamespacedName
		for k := range r.pods {
			keys = append(keys, k)
		}
		r.mu.Unlock()
		for _, k := range keys {
			if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: k}); err != nil {
				o.Log.Error(err, "cleanup of an earlier sandbox", "pod", k)
			}
		}
		return nil
	}))
	if err != nil {
		return err
	}
	err = mgr.Start(ctx)
	r.mu.Lock()
	for _, st := range r.pods {
		if st.wl != nil {
			st.wl.Stop()
		}
	}
	r.mu.Unlock()
	return err
}

// recover loads the sandboxes a previous run left.
func (r *Runtime) recover() error {
	sbs, err := loadSandboxes(r.o.CNI)
	if err != nil {
		return err
	}
	for _, sb := range sbs {
		r.pods[types.NamespacedName{Namespace: sb.Namespace, Name: sb.Name}] = &podState{sb: sb}
	}
	return nil
}

// Reconcile makes the node's side of one pod match the API: sandbox + workload + status for
// a live pod; teardown and final deletion for a pod being deleted or gone.
func (r *Runtime) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	log := r.o.Log.WithValues("pod", req.NamespacedName)
	pod := &corev1.Pod{}
	err := r.client.Get(ctx, req.NamespacedName, pod)
	if apierrors.IsNotFound(err) {
		return reconcile.Result{}, r.teardown(ctx, req.NamespacedName, nil, log)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	if st := r.pods[req.NamespacedName]; st != nil && st.sb.PodUID != string(pod.UID) {
		// A new pod with the same name: the old one's sandbox goes first.
		if err := r.teardown(ctx, req.NamespacedName, nil, log); err != nil {
			return reconcile.Result{}, err
		}
	}
	if pod.DeletionTimestamp != nil {
		if err := r.teardown(ctx, req.NamespacedName, pod, log); err != nil {
			return reconcile.Result{}, err
		}
		// As a kubelet does once the containers are gone: delete with grace 0.
		err := r.client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return reconcile.Result{}, fmt.Errorf("finalise pod %s: %w", req.NamespacedName, err)
		}
		log.Info("pod deleted")
		return reconcile.Result{}, nil
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return reconcile.Result{}, nil
	}
	st := r.pods[req.NamespacedName]
	if st != nil {
		if _, err := os.Stat(st.sb.NetNSPath); err != nil {
			log.Info("sandbox namespace vanished; making it again", "netns", st.sb.NetNSPath)
			r.teardown(ctx, req.NamespacedName, pod, log)
			st = nil
		}
	}
	if st == nil {
		sb, err := setupSandbox(ctx, r.o.CNI, pod)
		if err != nil {
			return r.failed(ctx, pod, err, log)
		}
		log.Info("sandbox ready", "ips", sb.IPs, "netns", sb.NetNSPath)
		st = &podState{sb: sb}
		r.pods[req.NamespacedName] = st
	}
	if st.wl == nil {
		wl, err := StartWorkload(pod.Name, netns.OpenPath(st.sb.NetNSPath), st.sb.Ports)
		if err != nil {
			return r.failed(ctx, pod, err, log)
		}
		st.wl = wl
	}
	delete(r.lastErr, pod.UID)
	want := RunningStatus(pod, st.sb, r.o.NodeIPs, metav1.Now())
	if statusUpToDate(pod.Status, want) {
		return reconcile.Result{}, nil
	}
	if pod.Status.StartTime != nil {
		want.StartTime = pod.Status.StartTime
	}
	pod.Status = want
	if err := r.client.Status().Update(ctx, pod); err != nil {
		return reconcile.Result{}, fmt.Errorf("status of pod %s: %w", req.NamespacedName, err)
	}
	return reconcile.Result{}, nil
}

// failed reports a sandbox failure on the pod (status + Event, once per distinct error)
// and retries later.
func (r *Runtime) failed(ctx context.Context, pod *corev1.Pod, cause error, log logr.Logger) (reconcile.Result, error) {
	msg := cause.Error()
	log.Error(cause, "pod sandbox")
	if r.lastErr[pod.UID] != msg {
		r.lastErr[pod.UID] = msg
		r.event(ctx, pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: "+msg)
		pod.Status = PendingStatus(pod, r.o.NodeIPs, "FailedCreatePodSandBox", msg, metav1.Now())
		if err := r.client.Status().Update(ctx, pod); err != nil {
			log.Error(err, "pod status")
		}
	}
	return reconcile.Result{RequeueAfter: r.o.RetryAfter}, nil
}

func (r *Runtime) teardown(ctx context.Context, key types.NamespacedName, pod *corev1.Pod, log logr.Logger) error {
	st := r.pods[key]
	if st == nil {
		return nil
	}
	if st.wl != nil {
		st.wl.Stop()
		st.wl = nil
	}
	if err := teardownSandbox(ctx, r.o.CNI, st.sb, pod); err != nil {
		return err
	}
	delete(r.pods, key)
	delete(r.lastErr, types.UID(st.sb.PodUID))
	log.Info("sandbox removed", "ips", st.sb.IPs)
	return nil
}

func (r *Runtime) event(ctx context.Context, pod *corev1.Pod, typ, reason, msg string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, GenerateName: pod.Name + "."},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name,
			UID: pod.UID, ResourceVersion: pod.ResourceVersion},
		Reason: reason, Message: msg, Type: typ, Count: 1,
		FirstTimestamp: now, LastTimestamp: now,
		Source: corev1.EventSource{Component: "wgmesh-testnode", Host: r.o.NodeName},
	}
	if err := r.client.Create(ctx, ev); err != nil {
		r.o.Log.Error(err, "event", "pod", pod.Name, "reason", reason)
	}
}
