package actors

import (
	"context"
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
)

// NewSystem returns a fresh actor system whose own logs go to log.
func NewSystem(log zerolog.Logger) *actor.ActorSystem {
	cfg := actor.Configure(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(&slogHandler{log: log.With().Str("lib", "protoactor").Logger()})
	}))
	return actor.NewActorSystemWithConfig(cfg)
}

// slogHandler is a slog.Handler writing to zerolog. protoactor logs through
// slog; routing it here keeps one log stream with one format and level.
type slogHandler struct {
	log zerolog.Logger
}

func (h *slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return h.log.GetLevel() <= zerologLevel(l)
}

func (h *slogHandler) Handle(_ context.Context, r slog.Record) error {
	e := h.log.WithLevel(zerologLevel(r.Level))
	r.Attrs(func(a slog.Attr) bool {
		e = e.Interface(a.Key, a.Value.Any())
		return true
	})
	e.Msg(r.Message)
	return nil
}

func (h *slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	c := h.log.With()
	for _, a := range attrs {
		c = c.Interface(a.Key, a.Value.Any())
	}
	return &slogHandler{log: c.Logger()}
}

func (h *slogHandler) WithGroup(name string) slog.Handler {
	return &slogHandler{log: h.log.With().Str("group", name).Logger()}
}

func zerologLevel(l slog.Level) zerolog.Level {
	switch {
	case l >= slog.LevelError:
		return zerolog.ErrorLevel
	case l >= slog.LevelWarn:
		return zerolog.WarnLevel
	case l >= slog.LevelInfo:
		return zerolog.InfoLevel
	default:
		return zerolog.DebugLevel
	}
}
