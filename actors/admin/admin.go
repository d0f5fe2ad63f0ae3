// Package admin is the admin actor: the daemon's HTTP API, served on two
// channels that differ in what they serve and to whom.
//
// On the unix socket admin.socket (Options.Socket), mode 0660 in the
// group admin.socket_group, for root, the daemon's own user and the
// members of that group (each connection's peer is read with SO_PEERCRED
// and checked again; anyone else gets 403):
//
//   - the read-only endpoints below;
//   - POST /v1/observers/{policy}/{observer}/{pause|resume|observe}: an
//     observer command for the task-manager, answered with a
//     messages.CommandResult as JSON (200 done, 409 not done, with why)
//     and recorded, with its verified caller, as a command.result event.
//     Names that policy.ValidName refuses get 400, an unknown command 404,
//     a caller over the rate limit 429: none of these emits anything.
//
// On loopback TCP admin.listen (Options.Listen), for any local process,
// only the read-only endpoints:
//
//   - GET /healthz: the actor system answers;
//   - GET /readyz: the broker is connected and the policies are loaded;
//     otherwise 503 with the reasons as JSON;
//   - GET /v1/state: the state-manager's snapshot with the broker's outbox,
//     as JSON;
//   - GET /metrics: Options.Metrics in the Prometheus text format (404
//     when there is no registry, so that a scraper reports a missing
//     target rather than an empty one).
//
// Loopback is not access control, so TCP refuses every command (403), and
// answers only requests whose Host is a loopback name (else 421: DNS
// rebinding) and that carry no foreign Origin (else 403: a web page's
// cross-site request). Both channels bound request headers (8 KiB, 431
// before any handler), bodies (none is taken), time and connections, and
// the rate of each read endpoint (429 over it, see readRate). The read
// endpoints answer from one snapshot of the state-manager, asked for at
// most every snapshotMaxAge whatever the number of clients (see cached).
// Refused requests emit nothing; they are counted in
// observerd_admin_requests_refused_total.
//
// Accepts: Listen (move the TCP server; SIGHUP). Replies: Listened.
// Sends (requests, with a deadline): messages.GetState to the
// state-manager, broker.GetStats to the broker, messages.Pause, Resume
// and ObserveNow to the task-manager; and messages.Emit of command.result
// to the state-manager. Handlers never touch actor state.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Options configure the admin actor.
type Options struct {
	// Listen is a loopback host:port for the read-only endpoints; ""
	// serves none.
	Listen string
	// Socket is the path of the unix socket of the whole API, commands
	// included; "" serves none.
	Socket string
	// SocketGroup is the socket's group, by name or gid (configs.
	// LookupGroup); "" keeps the daemon's group.
	SocketGroup string
	State       *actor.PID
	// Broker answers broker.GetStats for the outbox part of /v1/state.
	Broker *actor.PID
	// Task takes the observer commands (pause, resume, observe).
	Task *actor.PID
	// Metrics is served on /metrics and takes the admin's own metrics
	// (nil: /metrics is 404, and those are counted unregistered).
	Metrics *prometheus.Registry
	// Now is the clock of the rate limits and of the snapshot's age (nil:
	// time.Now); tests drive their own.
	Now func() time.Time
	Log zerolog.Logger
}

// Actor is the admin actor.
type Actor struct {
	opts   Options
	shared *shared
	// tcp and unix are the servers of this incarnation (nil: not serving).
	tcp, unix *server
	// access says who may use the socket, fixed when it is listened on.
	access access
	// state and outbox are the answers of the state-manager and the
	// broker that the read endpoints share.
	state  *cached[*protocol.Snapshot]
	outbox *cached[*protocol.OutboxSnapshot]
}

// shared is what the actor's incarnations share, so that it outlives a
// restart: the TCP address (moved by a SIGHUP), the rates and the
// metrics.
type shared struct {
	// listen is the TCP address served; "" serves nothing.
	listen   string
	commands *rate.Limiter
	// reads are the read endpoints' buckets, by channel and path.
	reads   map[channel]map[string]*rate.Limiter
	refused *prometheus.CounterVec // channel, reason
}

// Commands are rate limited: an operator types one at a time and a script
// acting on a policy's observers sends a few dozen, which 10 a second with
// a burst of 20 lets through within seconds. The limit caps what one
// caller can make the daemon do and publish at 10 command.result events
// a second, a tenth of one policy's default max_events_per_second, and
// keeps the task-manager's mailbox for the policies.
const (
	commandRate  = rate.Limit(10)
	commandBurst = 20
)

// askTimeout bounds how long a request waits for the state-manager.
const askTimeout = 2 * time.Second

// New returns the admin actor, with state of its own (Props shares it
// between incarnations).
func New(opts Options) *Actor {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Actor{opts: opts, shared: newShared(opts)}
}

func newShared(opts Options) *shared {
	return &shared{
		listen:   opts.Listen,
		commands: rate.NewLimiter(commandRate, commandBurst),
		reads:    readLimits(),
		refused:  refusedCounter(opts),
	}
}

// refusedCounter is observerd_admin_requests_refused_total, registered in
// opts.Metrics unless it is nil. When the registry already holds it (a
// New and a Props, or two Props, with one registry), that one is shared;
// any other registration error is logged and the counter counts
// unregistered: metrics never stop the admin API.
func refusedCounter(opts Options) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "observerd_admin_requests_refused_total",
		Help: "Admin requests refused before anything was done or emitted, by channel (tcp, unix) and reason.",
	}, []string{"channel", "reason"})
	if opts.Metrics == nil {
		return c
	}
	err := opts.Metrics.Register(c)
	var already prometheus.AlreadyRegisteredError
	switch {
	case err == nil:
		return c
	case errors.As(err, &already):
		if existing, ok := already.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing
		}
	}
	opts.Log.Error().Err(err).Msg("admin metrics not registered")
	return c
}

// Props for the admin actor. A listen failure at start (port taken, a
// socket path that cannot be served) fails the actor: restarted with
// backoff, escalated when it persists. Every incarnation shares the
// state of one New made here.
func Props(opts Options) *actor.Props {
	first := New(opts)
	return actor.PropsFromProducer(func() actor.Actor { return &Actor{opts: first.opts, shared: first.shared} })
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if err := a.start(ctx.ActorSystem().Root); err != nil {
			a.stop()
			panic(err)
		}
	case *actor.Stopping, *actor.Restarting:
		a.stop()
	case *protocol.Listen:
		err := a.move(ctx.ActorSystem().Root, msg.Addr)
		if err != nil {
			a.opts.Log.Error().Err(err).Str("listen", a.shared.listen).Msg("admin still serving the old address")
		}
		if ctx.Sender() != nil {
			ctx.Respond(&protocol.Listened{Err: err})
		}
	}
}

// start serves the socket and the TCP address, whichever is set.
func (a *Actor) start(root *actor.RootContext) error {
	a.state = newCached(a.opts.Now, func() (*protocol.Snapshot, error) { return protocol.AskSnapshot(root, a.opts.State, askTimeout) })
	a.outbox = newCached(a.opts.Now, func() (*protocol.OutboxSnapshot, error) {
		return protocol.AskOutbox(root, a.opts.Broker, askTimeout), nil
	})
	if a.opts.Socket != "" {
		gid, group := -1, os.Getegid()
		if a.opts.SocketGroup != "" {
			var err error
			if gid, err = configs.LookupGroup(a.opts.SocketGroup); err != nil {
				return fmt.Errorf("admin socket: group %s: %w", a.opts.SocketGroup, err)
			}
			group = gid
		}
		ln, err := listenSocket(a.opts.Socket, gid)
		if err != nil {
			return fmt.Errorf("admin socket: %w", err)
		}
		a.access = access{self: os.Geteuid(), group: group, lookup: lookupUser}
		a.unix = a.serve(root, ln, overUnix)
		a.opts.Log.Info().Str("socket", a.opts.Socket).Int("gid", group).Msg("admin socket listening")
	}
	if a.shared.listen != "" {
		ln, err := net.Listen("tcp", a.shared.listen)
		if err != nil {
			return fmt.Errorf("admin listen: %w", err)
		}
		a.tcp = a.serve(root, ln, overTCP)
		a.opts.Log.Info().Str("listen", ln.Addr().String()).Msg("admin listening")
	}
	return nil
}

// move serves TCP on addr instead, or stops serving it for "".
func (a *Actor) move(root *actor.RootContext, addr string) error {
	if addr == a.shared.listen {
		return nil
	}
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("admin move: %w", err)
		}
	}
	shutdown(a.tcp)
	a.tcp = nil
	a.shared.listen = addr
	if ln == nil {
		a.opts.Log.Info().Msg("admin stopped serving (admin.listen is empty)")
		return nil
	}
	a.tcp = a.serve(root, ln, overTCP)
	a.opts.Log.Info().Str("listen", ln.Addr().String()).Msg("admin listening")
	return nil
}

// server is a channel's HTTP server and its listener.
type server struct {
	http *http.Server
	ln   net.Listener
}

// serve serves the API of a channel on ln, bounded.
func (a *Actor) serve(root *actor.RootContext, ln net.Listener, ch channel) *server {
	srv := &server{http: bounded(a.guard(ch, a.routes(root, ch)), a.opts.Log), ln: limit(ln, maxConns)}
	if ch == overUnix {
		srv.http.ConnContext = withPeer
	}
	go func() {
		if err := srv.http.Serve(srv.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.opts.Log.Error().Err(err).Str("channel", string(ch)).Msg("admin server")
		}
	}()
	return srv
}

// stop stops both servers; the socket's file goes with its listener.
func (a *Actor) stop() {
	shutdown(a.tcp)
	shutdown(a.unix)
	a.tcp, a.unix = nil, nil
}

// shutdown stops a server, its listener closed before it returns: Serve
// may not have started yet, and a socket left to its goroutine to close
// could be unlinked after the next incarnation made its own.
func shutdown(srv *server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.http.Shutdown(ctx)
	_ = srv.ln.Close()
}

// routes are the endpoints of a channel: the read-only ones on both, the
// commands on the socket only.
func (a *Actor) routes(root *actor.RootContext, ch channel) *http.ServeMux {
	mux := http.NewServeMux()
	a.read(mux, ch, "/healthz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if _, err := a.state.get(); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	}))
	a.read(mux, ch, "/readyz", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s, err := a.state.get()
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": []string{err.Error()}})
			return
		}
		if ok, why := s.Ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	}))
	a.read(mux, ch, "/v1/state", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s, err := a.state.get()
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error()})
			return
		}
		// A copy: other requests share s.
		answer := *s
		answer.Outbox, _ = a.outbox.get()
		writeJSON(w, http.StatusOK, &answer)
	}))
	if a.opts.Metrics != nil {
		// ContinueOnError: one failing collector must not hide the others.
		a.read(mux, ch, "/metrics", promhttp.HandlerFor(a.opts.Metrics, promhttp.HandlerOpts{
			ErrorLog: errorLog{a.opts.Log}, ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	if ch == overUnix {
		mux.HandleFunc("POST /v1/observers/{policy}/{observer}/{command}", func(w http.ResponseWriter, r *http.Request) {
			a.handleCommand(root, w, r)
		})
	} else {
		// Every method and path under it: nothing there is read-only.
		mux.HandleFunc("/v1/observers/", func(w http.ResponseWriter, _ *http.Request) {
			a.refuse(w, ch, http.StatusForbidden, "command over tcp",
				"observer commands go through the admin socket (admin.socket), not admin.listen: use observerctl, which finds the socket in the daemon's config")
		})
	}
	return mux
}

// handleCommand checks a command before anything is done or emitted: the
// rate first, so that refused attempts spend it too, then the command and
// the names.
func (a *Actor) handleCommand(root *actor.RootContext, w http.ResponseWriter, r *http.Request) {
	name, pol, obs := r.PathValue("command"), r.PathValue("policy"), r.PathValue("observer")
	_, known := protocol.ObserverCommands[name]
	switch {
	case !a.shared.commands.AllowN(a.opts.Now(), 1):
		a.tooMany(w, overUnix, fmt.Sprintf("too many commands: at most %g a second (bursts of %d); retry in a second", float64(commandRate), commandBurst))
	case !known:
		a.refuse(w, overUnix, http.StatusNotFound, "unknown command", "unknown command: use pause, resume or observe")
	case !policy.ValidName(pol) || !policy.ValidName(obs):
		a.refuse(w, overUnix, http.StatusBadRequest, "invalid name",
			"invalid policy or observer name: each has up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit")
	default:
		res := a.command(root, name, pol, obs, peerOf(r.Context()).caller())
		// The caller's next read shows what the command did.
		a.state.forget()
		code := http.StatusOK
		if !res.Ok {
			code = http.StatusConflict
		}
		writeJSON(w, code, res)
	}
}

// refuse answers a request that is not served, emitting nothing.
func (a *Actor) refuse(w http.ResponseWriter, ch channel, code int, reason, message string) {
	a.shared.refused.WithLabelValues(string(ch), reason).Inc()
	a.opts.Log.Debug().Str("channel", string(ch)).Str("reason", reason).Int("code", code).Msg("admin request refused")
	writeJSON(w, code, map[string]string{"error": message})
}

// command has the task-manager carry out an observer command, and records
// it, with its caller, as a command.result event and a log line, whatever
// came of it.
func (a *Actor) command(root *actor.RootContext, name, pol, obs string, caller *messages.Caller) *messages.CommandResult {
	res := protocol.RunObserverCommand(root, a.opts.Task, name, pol, obs, askTimeout)
	res.Caller = caller
	ev := messages.NewEvent(messages.TypeCommandResult)
	ev.Data = &messages.Event_CommandResult{CommandResult: res}
	root.Send(a.opts.State, &protocol.Emit{From: protocol.ActorEmitter(protocol.Admin), Event: ev})
	a.opts.Log.Info().Str("command", name).Str("target", res.Target).Bool("ok", res.Ok).Str("result", res.Message).
		Str("channel", caller.GetChannel()).Int64("uid", caller.GetUid()).Int64("gid", caller.GetGid()).
		Int64("pid", caller.GetPid()).Str("user", caller.GetUser()).Msg("command")
	return res
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errorLog logs promhttp's and net/http's errors at error level (zerolog's
// own Println logs at debug, where a broken collector would go unseen, and
// net/http's default log would break the JSON log lines).
type errorLog struct{ log zerolog.Logger }

func (e errorLog) Println(v ...any) {
	e.log.Error().Msg(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}

func (e errorLog) Write(p []byte) (int, error) {
	e.log.Error().Msg(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
