// Package admin is the admin actor: an HTTP server on a loopback address
// with
//
//   - GET /healthz: the actor system answers;
//   - GET /readyz: the broker is connected and the policies are loaded;
//     otherwise 503 with the reasons as JSON;
//   - GET /v1/state: the state-manager's snapshot with the broker's outbox,
//     as JSON;
//   - GET /metrics: Options.Metrics in the Prometheus text format (404
//     when there is no Gatherer, so that a scraper reports a missing target
//     rather than an empty one);
//   - POST /v1/observers/{policy}/{observer}/{pause|resume|observe}: an
//     observer command for the task-manager, answered with a
//     messages.CommandResult as JSON (200 done, 409 not done, with why)
//     and recorded as a command.result event.
//
// Handlers ask the actors with a deadline; they never touch actor state.
// There is no authentication: the address is loopback only.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/actors/broker"
	"github.com/polar/observerd/messages"
)

// Options configure the admin actor.
type Options struct {
	// Listen is a loopback host:port.
	Listen string
	State  *actor.PID
	// Broker answers broker.GetStats for the outbox part of /v1/state.
	Broker *actor.PID
	// Task takes the observer commands (pause, resume, observe).
	Task *actor.PID
	// Metrics is served on /metrics (nil: /metrics is 404).
	Metrics prometheus.Gatherer
	Log     zerolog.Logger
}

// Path is the admin's actor path, the source of its events.
const Path = "admin"

// Actor is the admin actor.
type Actor struct {
	opts   Options
	server *http.Server
	// listen is the address served, shared by the actor's incarnations so
	// that a Listen (SIGHUP) outlives a restart; "" serves nothing.
	listen *string
}

// Listen moves the admin server to Addr ("" stops serving) while the
// daemon runs. The old address keeps serving if the new one cannot be
// listened on. Sent as a request, it is answered with a Listened.
type Listen struct{ Addr string }

// Listened answers Listen: Err says why the server did not move.
type Listened struct{ Err error }

// askTimeout bounds how long a request waits for the state-manager.
const askTimeout = 2 * time.Second

// New returns the admin actor.
func New(opts Options) *Actor { return &Actor{opts: opts, listen: &opts.Listen} }

// Props for the admin actor. A listen failure at start (port taken) fails
// the actor: restarted with backoff, escalated when it persists.
func Props(opts Options) *actor.Props {
	listen := &opts.Listen
	return actor.PropsFromProducer(func() actor.Actor {
		a := New(opts)
		a.listen = listen
		return a
	})
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		if *a.listen == "" {
			return
		}
		ln, err := net.Listen("tcp", *a.listen)
		if err != nil {
			panic(fmt.Errorf("admin listen: %w", err))
		}
		a.serve(ctx.ActorSystem().Root, ln)
	case *actor.Stopping, *actor.Restarting:
		a.stop()
	case *Listen:
		err := a.move(ctx.ActorSystem().Root, msg.Addr)
		if err != nil {
			a.opts.Log.Error().Err(err).Str("listen", *a.listen).Msg("admin still serving the old address")
		}
		if ctx.Sender() != nil {
			ctx.Respond(&Listened{Err: err})
		}
	}
}

// move serves on addr instead, or stops serving for "".
func (a *Actor) move(root *actor.RootContext, addr string) error {
	if addr == *a.listen {
		return nil
	}
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("admin move: %w", err)
		}
	}
	a.stop()
	*a.listen = addr
	if ln == nil {
		a.opts.Log.Info().Msg("admin stopped serving (admin.listen is empty)")
		return nil
	}
	a.serve(root, ln)
	return nil
}

func (a *Actor) serve(root *actor.RootContext, ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := a.snapshot(root); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unhealthy", "reason": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		s, err := a.snapshot(root)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": []string{err.Error()}})
			return
		}
		if ok, why := s.Ready(); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reasons": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ready": true})
	})
	mux.HandleFunc("GET /v1/state", func(w http.ResponseWriter, _ *http.Request) {
		s, err := a.snapshot(root)
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": err.Error()})
			return
		}
		s.Outbox = a.outbox(root)
		writeJSON(w, http.StatusOK, s)
	})
	mux.HandleFunc("POST /v1/observers/{policy}/{observer}/{command}", func(w http.ResponseWriter, r *http.Request) {
		res := a.command(root, r.PathValue("command"), r.PathValue("policy"), r.PathValue("observer"))
		code := http.StatusOK
		if !res.Ok {
			code = http.StatusConflict
		}
		writeJSON(w, code, res)
	})
	if a.opts.Metrics != nil {
		// ContinueOnError: one failing collector must not hide the others.
		mux.Handle("GET /metrics", promhttp.HandlerFor(a.opts.Metrics, promhttp.HandlerOpts{
			ErrorLog: errorLog{a.opts.Log}, ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	a.server = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := a.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.opts.Log.Error().Err(err).Msg("admin server")
		}
	}()
	a.opts.Log.Info().Str("listen", ln.Addr().String()).Msg("admin listening")
}

func (a *Actor) stop() {
	if a.server == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.server.Shutdown(ctx)
	a.server = nil
}

func (a *Actor) snapshot(root *actor.RootContext) (*messages.Snapshot, error) {
	res, err := root.RequestFuture(a.opts.State, &messages.GetState{}, askTimeout).Result()
	if err != nil {
		return nil, fmt.Errorf("ask state-manager: %w", err)
	}
	s, ok := res.(*messages.Snapshot)
	if !ok {
		return nil, fmt.Errorf("ask state-manager: unexpected answer %T", res)
	}
	return s, nil
}

// commands are the observer commands of POST /v1/observers/P/O/COMMAND.
var commands = map[string]func(policy, observer string) any{
	"pause":   func(p, o string) any { return &messages.Pause{Policy: p, Observer: o} },
	"resume":  func(p, o string) any { return &messages.Resume{Policy: p, Observer: o} },
	"observe": func(p, o string) any { return &messages.ObserveNow{Policy: p, Observer: o} },
}

// command has the task-manager carry out an observer command, and records
// it as a command.result event, whatever came of it.
func (a *Actor) command(root *actor.RootContext, name, policy, observer string) *messages.CommandResult {
	res := &messages.CommandResult{Command: name, Target: policy + "/" + observer}
	switch newMsg, ok := commands[name]; {
	case !ok:
		res.Message = fmt.Sprintf("unknown command %q: use pause, resume or observe", name)
	default:
		answer, err := root.RequestFuture(a.opts.Task, newMsg(policy, observer), askTimeout).Result()
		done, _ := answer.(*messages.CommandDone)
		switch {
		case err != nil:
			res.Message = fmt.Sprintf("ask task-manager: %v", err)
		case done == nil:
			res.Message = fmt.Sprintf("ask task-manager: unexpected answer %T", answer)
		case done.Err != nil:
			res.Message = done.Err.Error()
		default:
			res.Ok = true
		}
	}
	ev := messages.NewEvent(messages.TypeCommandResult)
	ev.Data = &messages.Event_CommandResult{CommandResult: res}
	root.Send(a.opts.State, &messages.Emit{Path: Path, Event: ev})
	a.opts.Log.Info().Str("command", name).Str("target", res.Target).Bool("ok", res.Ok).Str("message", res.Message).Msg("command")
	return res
}

// outbox asks the broker for its outbox's counters; nil when it does not
// answer (restarting, or busy past askTimeout).
func (a *Actor) outbox(root *actor.RootContext) *messages.OutboxSnapshot {
	if a.opts.Broker == nil {
		return nil
	}
	res, err := root.RequestFuture(a.opts.Broker, &broker.GetStats{}, askTimeout).Result()
	st, ok := res.(broker.OutboxStats)
	if err != nil || !ok {
		return nil
	}
	return &messages.OutboxSnapshot{Events: st.Events, Bytes: st.Bytes, LastSequence: st.LastSequence}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// errorLog logs promhttp's errors at error level (zerolog's own Println
// logs at debug, where a broken collector would go unseen).
type errorLog struct{ log zerolog.Logger }

func (e errorLog) Println(v ...any) {
	e.log.Error().Msg(strings.TrimSuffix(fmt.Sprintln(v...), "\n"))
}
