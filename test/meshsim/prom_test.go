package meshsim

import (
	"strings"
	"testing"
)

const exposition = `# HELP wgmesh_reconciles_total Agent reconciles run.
# TYPE wgmesh_reconciles_total counter
wgmesh_reconciles_total{trigger="watch"} 3
wgmesh_reconciles_total{trigger="resync"} 12
wgmesh_status_writes_total 2
rest_client_requests_total{code="200",host="198.18.0.1:6443",method="GET"} 40
rest_client_requests_total{code="200",host="198.18.0.1:6443",method="PATCH"} 5
rest_client_requests_total{code="201",host="198.18.0.1:6443",method="POST"} 1
apiserver_request_total{resource="meshpeers",subresource="status",verb="PATCH"} 7
odd{msg="a \"quoted\", comma"} 1
go_memstats_heap_inuse_bytes 1.5e+07
not a sample
`

func TestParseProm(t *testing.T) {
	ss := parseProm(exposition)
	if len(ss) != 9 {
		t.Fatalf("%d samples, want 9: %+v", len(ss), ss)
	}
	if s := ss[0]; s.name != "wgmesh_reconciles_total" || s.labels["trigger"] != "watch" || s.value != 3 {
		t.Errorf("first sample %+v", s)
	}
	if s := ss[6]; s.labels["resource"] != "meshpeers" || s.labels["subresource"] != "status" || s.labels["verb"] != "PATCH" {
		t.Errorf("labels of %+v", s)
	}
	if s := ss[7]; s.labels["msg"] != `a \"quoted\", comma` || s.value != 1 {
		t.Errorf("escaped quote and comma in a label: %+v", s)
	}
	if s := ss[8]; s.name != "go_memstats_heap_inuse_bytes" || s.value != 1.5e7 || len(s.labels) != 0 {
		t.Errorf("unlabelled sample %+v", s)
	}
}

func TestSums(t *testing.T) {
	ss := parseProm(exposition)
	if v, ok := sumProm(ss, "wgmesh_reconciles_total", nil); !ok || v != 15 {
		t.Errorf("all reconciles: %v %v, want 15", v, ok)
	}
	if v, err := mustSum(ss, "agent on n1", "rest_client_requests_total", writes); err != nil || v != 6 {
		t.Errorf("write requests: %v %v, want 6 (PATCH and POST, not GET)", v, err)
	}
	if got := byLabel(ss, "wgmesh_reconciles_total", "trigger"); got["watch"] != 3 || got["resync"] != 12 || len(got) != 2 {
		t.Errorf("by trigger: %v", got)
	}
	_, err := mustSum(ss, "agent on n1", "wgmesh_watch_events_total", nil)
	if err == nil || !strings.Contains(err.Error(), "agent on n1 exports no wgmesh_watch_events_total") {
		t.Errorf("a missing metric: %v, want an error naming who and what", err)
	}
}

func TestIsWriteVerb(t *testing.T) {
	for v, want := range map[string]bool{"GET": false, "LIST": false, "WATCH": false, "patch": true, "POST": true, "DELETE": true, "APPLY": true, "UPDATE": true} {
		if isWriteVerb(v) != want {
			t.Errorf("isWriteVerb(%q) = %v, want %v", v, !want, want)
		}
	}
}
