package noderuntime

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wgmesh/wgmesh/test/netns"
)

// Workload is the built-in container of every pod: on each port it answers over TCP (a
// request line, or nothing: the hostname), UDP (one request per datagram) and HTTP (on the
// same TCP port):
//
//	hostname      -> the pod name          (HTTP /hostname, also /)
//	clientip      -> the caller's ip:port  (HTTP /clientip)
//	echo <text>   -> <text>                (HTTP /echo?msg=<text>; POST /echo echoes the body)
//	HTTP /bytes?n=N                        -> N bytes of 'x' (large payloads)
//	HTTP /dial?host=&port=&protocol=http|tcp|udp&request=hostname&tries=1
//	                                       -> DialResult JSON, dialled FROM the pod
//	HTTP /healthz                          -> ok
type Workload struct {
	name    string
	ns      *netns.NS
	mu      sync.Mutex
	closers []io.Closer
	wg      sync.WaitGroup
}

// StartWorkload starts the servers inside ns (a pod's network namespace).
func StartWorkload(name string, ns *netns.NS, ports []int) (*Workload, error) {
	w := &Workload{name: name, ns: ns}
	for _, p := range ports {
		var tl net.Listener
		var ul net.PacketConn
		err := ns.Do(func() error {
			var err error
			if tl, err = net.Listen("tcp", ":"+strconv.Itoa(p)); err != nil {
				return err
			}
			ul, err = net.ListenPacket("udp", ":"+strconv.Itoa(p))
			return err
		})
		if err != nil {
			if tl != nil {
				tl.Close()
			}
			w.Stop()
			return nil, fmt.Errorf("workload %s: listen on port %d: %w", name, p, err)
		}
		hl := &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: tl.Addr()}
		srv := &http.Server{Handler: w.mux(), ReadHeaderTimeout: 5 * time.Second}
		w.closers = append(w.closers, tl, ul, srv, hl)
		w.wg.Add(3)
		go func() { defer w.wg.Done(); w.serveTCP(tl, hl) }()
		go func() { defer w.wg.Done(); srv.Serve(hl) }()
		go func() { defer w.wg.Done(); w.serveUDP(ul) }()
	}
	return w, nil
}

// Stop closes every listener and waits for the servers to end.
func (w *Workload) Stop() {
	w.mu.Lock()
	cs := w.closers
	w.closers = nil
	w.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	w.wg.Wait()
}

func (w *Workload) answer(line, client string) string {
	line = strings.TrimRight(line, "\r\n")
	switch {
	case line == "clientip":
		return client
	case strings.HasPrefix(line, "echo "):
		return strings.TrimPrefix(line, "echo ")
	}
	return w.name
}

func (w *Workload) serveTCP(l net.Listener, httpL *chanListener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go w.handleTCP(c, httpL)
	}
}

var httpMethods = []string{"GET ", "POST", "HEAD", "PUT ", "DELE", "OPTI", "PATC"}

func (w *Workload) handleTCP(c net.Conn, httpL *chanListener) {
	br := bufio.NewReaderSize(c, 64<<10)
	c.SetReadDeadline(time.Now().Add(time.Second))
	head, err := br.Peek(4)
	if err == nil {
		for _, m := range httpMethods {
			if string(head) == m {
				c.SetReadDeadline(time.Time{})
				if !httpL.deliver(&bufConn{Conn: c, r: br}) {
					c.Close()
				}
				return
			}
		}
	}
	defer c.Close()
	var line string
	if err == nil || len(head) > 0 {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, _ = br.ReadString('\n')
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, w.answer(line, c.RemoteAddr().String())+"\n")
}

func (w *Workload) serveUDP(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo([]byte(w.answer(string(buf[:n]), from.String())+"\n"), from)
	}
}

func (w *Workload) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" && r.URL.Path != "/hostname" {
			http.NotFound(rw, r)
			return
		}
		fmt.Fprintln(rw, w.name)
	})
	m.HandleFunc("/healthz", func(rw http.ResponseWriter, r *http.Request) { fmt.Fprintln(rw, "ok") })
	m.HandleFunc("/clientip", func(rw http.ResponseWriter, r *http.Request) { fmt.Fprintln(rw, r.RemoteAddr) })
	m.HandleFunc("/echo", func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			io.Copy(rw, r.Body)
			return
		}
		fmt.Fprintln(rw, r.URL.Query().Get("msg"))
	})
	m.HandleFunc("/bytes", func(rw http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 || n > 64<<20 {
			http.Error(rw, "n: want a byte count 0..67108864", http.StatusBadRequest)
			return
		}
		rw.Header().Set("Content-Length", strconv.Itoa(n))
		chunk := []byte(strings.Repeat("x", 32<<10))
		for n > 0 {
			k := min(n, len(chunk))
			if _, err := rw.Write(chunk[:k]); err != nil {
				return
			}
			n -= k
		}
	})
	m.HandleFunc("/dial", w.handleDial)
	return m
}

func (w *Workload) handleDial(rw http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	host, port, proto, request := q.Get("host"), q.Get("port"), q.Get("protocol"), q.Get("request")
	tries, _ := strconv.Atoi(q.Get("tries"))
	if tries < 1 {
		tries = 1
	}
	if proto == "" {
		proto = "http"
	}
	if host == "" || port == "" {
		http.Error(rw, "host and port are required", http.StatusBadRequest)
		return
	}
	var res DialResult
	for range tries {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		ans, err := Request(ctx, NSDialer(w.ns), proto, net.JoinHostPort(host, port), request)
		cancel()
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			continue
		}
		res.Responses = append(res.Responses, ans)
	}
	rw.Header().Set("Content-Type", "application/json")
	json.NewEncoder(rw).Encode(res)
}

// bufConn replays what was peeked.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener hands connections that turned out to be HTTP to an http.Server.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
