package admin

import (
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// channel is how a request arrived.
type channel string

const (
	overTCP  channel = "tcp"
	overUnix channel = "unix"
)

// Bounds of every admin connection and request. net/http refuses a
// request line and headers beyond maxHeaderBytes (plus its 4 KiB of
// slack) with 431 before any handler runs: a path of 900 KB never reaches
// the router. The write timeout covers /v1/state's two asks (askTimeout
// each) and the answer. The idle timeout is short because the maxConns
// slots are shared by every local process: a client that keeps a
// connection open without using it holds a slot for 5 s at most (a
// scraper every 15 s just connects again).
const (
	maxHeaderBytes    = 8 << 10
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 3 * askTimeout
	idleTimeout       = 5 * time.Second
)

// maxConns bounds the connections each listener serves at once; further
// ones wait in the kernel's backlog. A local process opening connections
// by the thousand then holds up the admin API, not the daemon's file
// descriptors, which its outbox, broker connection and observers need.
const maxConns = 64

// bounded is the http.Server of a channel, with every bound set.
func bounded(h http.Handler, log zerolog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		MaxHeaderBytes:    maxHeaderBytes,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		ErrorLog:          stdlog.New(errorLog{log}, "", 0),
	}
}

// guard refuses, before any handler and emitting nothing, what no
// legitimate client of the channel sends: on the socket, a peer that may
// not use it; on TCP, a Host that is not a loopback name (a DNS-rebound
// page); on both, a web page's foreign Origin (a cross-site request) and
// a request body (no endpoint takes one).
func (a *Actor) guard(ch channel, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ch == overUnix {
			if err := peerOf(r.Context()).authorize(a.access); err != nil {
				a.refuse(w, ch, http.StatusForbidden, "peer", err.Error())
				return
			}
		}
		switch {
		case ch == overTCP && !loopbackHost(r.Host):
			a.refuse(w, ch, http.StatusMisdirectedRequest, "foreign host",
				"this endpoint answers only requests for a loopback host: localhost, 127.0.0.0/8 or [::1]")
		case !loopbackOrigin(r.Header.Values("Origin")):
			a.refuse(w, ch, http.StatusForbidden, "foreign origin", "requests from web pages of other origins are refused")
		case r.ContentLength != 0:
			a.refuse(w, ch, http.StatusRequestEntityTooLarge, "body", "the admin API takes no request body")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// loopbackHost reports whether a Host header names this host's loopback:
// localhost, 127.0.0.0/8 or ::1, with or without a port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// loopbackOrigin reports whether the Origin headers, if any, are all
// http(s) origins on a loopback host. Browsers send one on cross-site
// requests; command-line clients send none.
func loopbackOrigin(origins []string) bool {
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !loopbackHost(u.Host) {
			return false
		}
	}
	return true
}

// limitListener accepts at most cap(slots) connections open at once. Not
// x/net's netutil.LimitListener: its connections hide the *net.UnixConn
// whose peer credentials the socket reads (readPeer unwraps ours).
type limitListener struct {
	net.Listener
	slots  chan struct{}
	closed chan struct{}
	once   sync.Once
}

func limit(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// limitedConn gives its slot back when closed.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
