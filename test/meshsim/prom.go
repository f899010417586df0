package meshsim

// The Prometheus text exposition, as far as Snap reads it.

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// sample is one line of a Prometheus text exposition.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseProm reads the samples of a text exposition; comments and lines it
// cannot read are left out.
func parseProm(text string) []sample {
	var out []sample
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		head := line[:sp]
		s := sample{value: v, labels: map[string]string{}}
		b := strings.IndexByte(head, '{')
		if b < 0 {
			s.name = head
			out = append(out, s)
			continue
		}
		s.name = head[:b]
		body := strings.TrimSuffix(head[b+1:], "}")
		for body != "" {
			eq := strings.IndexByte(body, '=')
			if eq < 0 || eq+1 >= len(body) || body[eq+1] != '"' {
				break
			}
			k := body[:eq]
			rest := body[eq+2:]
			end := 0
			for end < len(rest) && (rest[end] != '"' || (end > 0 && rest[end-1] == '\\')) {
				end++
			}
			s.labels[k] = rest[:min(end, len(rest))]
			body = strings.TrimPrefix(rest[min(end+1, len(rest)):], ",")
		}
		out = append(out, s)
	}
	return out
}

// sumProm sums the samples named name whose labels pass keep (nil: all),
// and tells whether there was any.
func sumProm(ss []sample, name string, keep func(map[string]string) bool) (float64, bool) {
	var sum float64
	found := false
	for _, s := range ss {
		if s.name == name && (keep == nil || keep(s.labels)) {
			sum += s.value
			found = true
		}
	}
	return sum, found
}

// mustSum is sumProm for a metric that must be there.
func mustSum(ss []sample, who, name string, keep func(map[string]string) bool) (float64, error) {
	v, ok := sumProm(ss, name, keep)
	if !ok {
		return 0, fmt.Errorf("%s exports no %s", who, name)
	}
	return v, nil
}

// byLabel sums the samples named name by the value of label.
func byLabel(ss []sample, name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range ss {
		if s.name == name {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

func (s *Sim) scrape(url string) ([]sample, error) {
	resp, err := s.http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return parseProm(string(b)), nil
}

// isWriteVerb tells whether an HTTP method or API verb writes.
func isWriteVerb(v string) bool {
	switch strings.ToUpper(v) {
	case "POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY", "CREATE", "UPDATE":
		return true
	}
	return false
}

func writes(l map[string]string) bool { return isWriteVerb(l["method"]) }
