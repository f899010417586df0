package noderuntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Dialer opens a connection (net.Dialer.DialContext's shape).
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// NSDialer dials from inside ns: the socket is made on a thread in the namespace, so it
// stays there whatever thread uses it later.
func NSDialer(ns *netns.NS) Dialer {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() error {
			var err error
			d := net.Dialer{Timeout: 3 * time.Second}
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
}

// HTTPPath maps a request word to the workload's HTTP path: "hostname" -> "/hostname",
// "clientip" -> "/clientip", "echo X" -> "/echo?msg=X"; a request starting with "/" is a
// path already.
func HTTPPath(request string) string {
	switch {
	case strings.HasPrefix(request, "/"):
		return request
	case strings.HasPrefix(request, "echo "):
		return "/echo?msg=" + url.QueryEscape(strings.TrimPrefix(request, "echo "))
	case request == "":
		return "/hostname"
	}
	return "/" + request
}

// Request sends one request to a workload at addr ("host:port") over proto ("tcp", "udp",
// "http") and returns the answer. tcp and udp send the request as a line ("hostname",
// "clientip", "echo <text>"); http GETs HTTPPath(request).
func Request(ctx context.Context, dial Dialer, proto, addr, request string) (string, error) {
	const timeout = 3 * time.Second
	switch proto {
	case "tcp", "udp":
		conn, err := dial(ctx, proto, addr)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(timeout))
		if _, err := conn.Write([]byte(request + "\n")); err != nil {
			return "", err
		}
		var b []byte
		if proto == "udp" {
			buf := make([]byte, 65536)
			n, err := conn.Read(buf)
			if err != nil {
				return "", err
			}
			b = buf[:n]
		} else if b, err = io.ReadAll(conn); err != nil && len(b) == 0 {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	case "http":
		tr := &http.Transport{DialContext: dial, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		// Longer than a dial: a /dial answer may wait for the workload's own 3s dial.
		cl := &http.Client{Timeout: 3 * timeout, Transport: tr}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+HTTPPath(request), nil)
		if err != nil {
			return "", err
		}
		resp, err := cl.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		}
		return strings.TrimSpace(string(body)), nil
	}
	return "", fmt.Errorf("protocol %q: want tcp, udp or http", proto)
}

// DialResult is the JSON answer of the workload's /dial endpoint (as agnhost netexec's).
type DialResult struct {
	Responses []string `json:"responses"`
	Errors    []string `json:"errors"`
}

// ParseDialAnswer returns the first response of a /dial answer, or its errors.
func ParseDialAnswer(body string) (string, error) {
	var r DialResult
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return "", fmt.Errorf("dial answer %q: %w", body, err)
	}
	if len(r.Responses) > 0 {
		return r.Responses[0], nil
	}
	if len(r.Errors) > 0 {
		return "", errors.New(strings.Join(r.Errors, "; "))
	}
	return "", errors.New("dial answer has neither responses nor errors")
}
