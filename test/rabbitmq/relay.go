package rabbitmq

import (
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Relay listens on a free port of a loopback address and relays every
// connection to a target, byte for byte, until Close: a node presented
// under another node's address, for the tests of a client's verification
// of the server name.
type Relay struct {
	Addr string // host:port it listens on

	l     net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

// StartRelay relays connections to host's free port on to target.
func StartRelay(host, target string) (*Relay, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("start relay: %w", err)
	}
	r := &Relay{Addr: l.Addr().String(), l: l, conns: map[net.Conn]bool{}}
	r.wg.Go(func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, dialTimeout)
			if err != nil {
				in.Close()
				continue
			}
			if !r.track(in, out) {
				return
			}
			r.wg.Go(func() {
				var pair sync.WaitGroup
				pair.Go(func() { _, _ = io.Copy(out, in); out.Close() })
				pair.Go(func() { _, _ = io.Copy(in, out); in.Close() })
				pair.Wait()
				r.mu.Lock()
				defer r.mu.Unlock()
				if r.conns != nil {
					delete(r.conns, in)
					delete(r.conns, out)
				}
			})
		}
	})
	return r, nil
}

// track remembers conns for Close; it is false (and closes them) once the
// relay is closed.
func (r *Relay) track(conns ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		r.conns[c] = true
	}
	return true
}

// Close stops listening, closes the relayed connections and waits until
// every goroutine of the relay has returned.
func (r *Relay) Close() error {
	err := r.l.Close()
	r.mu.Lock()
	for c := range r.conns {
		// A read blocked in io.Copy returns at once.
		_ = c.SetDeadline(time.Now())
		c.Close()
	}
	r.conns = nil
	r.mu.Unlock()
	r.wg.Wait()
	return err
}
