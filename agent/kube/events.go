package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/reference"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

// Limits of an Event, and how repeats are counted.
const (
	// eventTimeout bounds one write: the caller waits for it.
	eventTimeout = 5 * time.Second
	// noteLimit and instanceLimit are the API server's (events.k8s.io/v1).
	noteLimit     = 1024
	instanceLimit = 128
	// A repeat within seriesWindow of the last occurrence joins the first
	// Event's series; its count is written on the first repeat, then at
	// most every seriesRefresh (client-go's recorders: 6 and 30 minutes).
	seriesWindow  = 6 * time.Minute
	seriesRefresh = 30 * time.Minute
	// unreachableHold: after a write failed for want of the API server
	// (no answer, 5xx, 429), no write is tried for this long, so that an
	// outage costs a caller one eventTimeout at most this often (client-go's
	// recorders retry every 10 s, off the caller's goroutine).
	unreachableHold = 10 * time.Second
)

// Events writes the agent process's Events (events.k8s.io/v1), every part's
// (Events.For names the part). It writes synchronously, in the caller's
// goroutine, through the runtime's client: an Event reported as the agent
// stops (uninstall, a refusal to run) is written before it exits, and there
// is no queue, goroutine or second client. Repeats are not new Events: an
// Event with the same object, related object, type, reason, action, note
// and reporter within seriesWindow of its last occurrence counts in the
// first one's series, so a component that reports the same failure on every
// reconcile does not fill the namespace. Writing is best effort: a failure
// is logged, and while the API server does not answer Events are dropped
// (unreachableHold) rather than making each caller wait.
type Events struct {
	c        client.Writer
	scheme   *runtime.Scheme
	instance string // the node: each part's reportingInstance is <part>-<node>
	log      logr.Logger
	now      func() time.Time

	mu     sync.Mutex
	seen   map[eventKey]*eventSeries
	pruned time.Time
	stamps int64     // the last name stamp
	down   time.Time // no write until then (unreachableHold)
}

type eventKey struct {
	regarding, related              corev1.ObjectReference
	typ, reason, action, note, part string
}

// eventSeries is an Event written and its repeats since.
type eventSeries struct {
	ev         *eventsv1.Event // as created (name, namespace)
	count      int32
	last       time.Time // last occurrence
	written    time.Time // last write of the count
	writtenCnt int32
}

// NewEvents returns the Event writer; instance (the node's name) names the
// reporting instance of every part.
func NewEvents(c client.Writer, scheme *runtime.Scheme, instance string, log logr.Logger) *Events {
	return &Events{c: c, scheme: scheme, instance: instance, log: log, now: time.Now, seen: map[eventKey]*eventSeries{}}
}

// For is the recorder of one part of the agent (its reportingController:
// wgmesh-agent, wgmesh-service-nat).
func (e *Events) For(part string) recorder.EventRecorder { return partRecorder{e: e, part: part} }

type partRecorder struct {
	e    *Events
	part string
}

// Eventf writes an Event about regarding (related: the other object
// involved, or nil); note is a format for args.
func (r partRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	r.e.write(r.part, regarding, related, nil, eventtype, reason, action, note, args...)
}

// AnnotatedEventf is Eventf with annotations on the Event.
func (r partRecorder) AnnotatedEventf(regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	r.e.write(r.part, regarding, related, annotations, eventtype, reason, action, note, args...)
}

func (e *Events) write(part string, regarding, related runtime.Object, annotations map[string]string, eventtype, reason, action, note string, args ...any) {
	if len(args) > 0 {
		note = fmt.Sprintf(note, args...)
	}
	if len(note) > noteLimit {
		note = note[:noteLimit-3] + "..."
	}
	log := e.log.WithValues("reason", reason, "note", note)
	ref, err := reference.GetReference(e.scheme, regarding)
	if err != nil {
		log.Error(err, "not recording an Event: no reference to its object")
		return
	}
	var rel *corev1.ObjectReference
	if related != nil {
		if rel, err = reference.GetReference(e.scheme, related); err != nil {
			log.Error(err, "recording an Event without its related object")
		}
	}
	key := eventKey{regarding: *ref, typ: eventtype, reason: reason, action: action, note: note, part: part}
	if rel != nil {
		key.related = *rel
	}
	now := e.now()
	ctx, cancel := context.WithTimeout(context.Background(), eventTimeout)
	defer cancel()
	if s, patch := e.repeat(key, now); s != nil {
		if patch != nil && e.reachable(now, log) {
			if err := e.c.Patch(ctx, s, client.RawPatch(types.MergePatchType, patch)); err != nil {
				e.failed(err, now)
				log.Error(err, "recording a repeated Event")
			}
		}
		return
	}
	if !e.reachable(now, log) {
		return
	}
	instance := part + "-" + e.instance
	if len(instance) > instanceLimit {
		instance = instance[:instanceLimit]
	}
	ns := ref.Namespace
	if ns == "" {
		// Where client-go's recorders put Events about cluster-scoped
		// objects.
		ns = metav1.NamespaceDefault
	}
	ev := &eventsv1.Event{
		ObjectMeta:          metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", ref.Name, e.stamp(now)), Namespace: ns, Annotations: annotations},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: part,
		ReportingInstance:   instance,
		Action:              action,
		Reason:              reason,
		Type:                eventtype,
		Note:                note,
		Regarding:           *ref,
		Related:             rel,
	}
	if err := e.c.Create(ctx, ev); err != nil {
		e.failed(err, now)
		log.Error(err, "recording an Event")
		return
	}
	e.mu.Lock()
	e.seen[key] = &eventSeries{ev: ev, count: 1, last: now, written: now, writtenCnt: 1}
	e.mu.Unlock()
}

// reachable reports whether writes are tried (no failure for want of the
// API server within unreachableHold).
func (e *Events) reachable(now time.Time, log logr.Logger) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Before(e.down) {
		log.V(1).Info("not recording an Event: the API server did not answer the last write", "retryAfter", e.down)
		return false
	}
	return true
}

// failed holds writes off when err says the API server is not answering.
func (e *Events) failed(err error, now time.Time) {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Code < 500 && st.Status().Code != 429 {
		return // refused: this Event's fault, not the API server's
	}
	e.mu.Lock()
	e.down = now.Add(unreachableHold)
	e.mu.Unlock()
}

// stamp is the time in an Event's name, as client-go's recorders name them
// (<object>.<nanoseconds, hex>), made unique within the process.
func (e *Events) stamp(now time.Time) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stamps = max(now.UnixNano(), e.stamps+1)
	return e.stamps
}

// repeat counts an occurrence of an Event written within seriesWindow, and
// returns it with the patch that writes its series when due (nil: nothing
// to write); nil when the Event is new.
func (e *Events) repeat(key eventKey, now time.Time) (*eventsv1.Event, []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.Sub(e.pruned) > time.Minute {
		for k, s := range e.seen {
			if now.Sub(s.last) > seriesWindow {
				delete(e.seen, k)
			}
		}
		e.pruned = now
	}
	s := e.seen[key]
	if s == nil || now.Sub(s.last) > seriesWindow {
		return nil, nil
	}
	s.count++
	s.last = now
	if s.writtenCnt > 1 && now.Sub(s.written) < seriesRefresh {
		return s.ev, nil
	}
	s.written, s.writtenCnt = now, s.count
	patch, _ := json.Marshal(map[string]any{"series": eventsv1.EventSeries{Count: s.count, LastObservedTime: metav1.NewMicroTime(now)}})
	return s.ev.DeepCopy(), patch
}
