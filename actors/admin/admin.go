// Package admin is the admin actor: an HTTP server on a loopback address
// with /healthz (the actor system answers), /readyz (the broker is
// connected and the policies are loaded; otherwise 503 with the reasons as
// JSON) and /v1/state (the state-manager's snapshot as JSON). Handlers ask
// the state-manager with a deadline; they never touch actor state.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"github.com/polar/observerd/messages"
)

// Options configure the admin actor.
type Options struct {
	// Listen is a loopback host:port.
	Listen string
	State  *actor.PID
	Log    zerolog.Logger
}

// Actor is the admin actor.
type Actor struct {
	opts   Options
	server *http.Server
}

// askTimeout bounds how long a request waits for the state-manager.
const askTimeout = 2 * time.Second

// New returns the admin actor.
func New(opts Options) *Actor { return &Actor{opts: opts} }

// Props for the admin actor. A listen failure (port taken) fails the actor:
// restarted with backoff, escalated when it persists.
func Props(opts Options) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return New(opts) })
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx.ActorSystem().Root)
	case *actor.Stopping, *actor.Restarting:
		a.stop()
	}
}

func (a *Actor) start(root *actor.RootContext) {
	ln, err := net.Listen("tcp", a.opts.Listen)
	if err != nil {
		panic(fmt.Errorf("admin listen: %w", err))
	}
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
		writeJSON(w, http.StatusOK, s)
	})
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

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
