package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/wgmesh/wgmesh/test/wait"
)

// iperfSeconds is the length of each measurement.
const iperfSeconds = 5

// commander runs a command inside some namespace (a netns, a node, a pod).
type commander func(ctx context.Context, argv ...string) *exec.Cmd

// iperfTCP runs an iperf3 server through server (bound to addr) and a client
// through client, and returns the received throughput in bits per second.
func iperfTCP(tb testing.TB, server, client commander, addr string, port int) float64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := server(ctx, "iperf3", "-s", "-1", "-B", addr, "-p", fmt.Sprint(port))
	if err := srv.Start(); err != nil {
		tb.Fatalf("iperf3 server: %v", err)
	}
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
	type result struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	var res result
	_ = wait.Poll(ctx, 5*time.Second, func() error { // the server needs a moment to listen
		out, _ := client(ctx, "iperf3", "-c", addr, "-p", fmt.Sprint(port), "-t", fmt.Sprint(iperfSeconds), "-J").Output()
		res = result{}
		if err := json.Unmarshal(out, &res); err != nil {
			tb.Fatalf("iperf3 client to %s: %v\n%s", addr, err, out)
		}
		if strings.Contains(res.Error, "Connection refused") {
			return errors.New(res.Error)
		}
		return nil
	})
	if res.Error != "" || res.End.SumReceived.BitsPerSecond == 0 {
		tb.Fatalf("iperf3 to %s: %q, %v bit/s", addr, res.Error, res.End.SumReceived.BitsPerSecond)
	}
	return res.End.SumReceived.BitsPerSecond
}
