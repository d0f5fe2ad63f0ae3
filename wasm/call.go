package wasm

import (
	"bytes"
	"context"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/polar/observerd/messages"
)

// call is the state of one plugin call, which the host functions reach
// through the context wazero passes them (see callOf).
type call struct {
	ctx     context.Context
	timeout time.Duration // the call's own, for the failure detail
	plugin  string
	log     zerolog.Logger
	http    HTTPDoer // nil: http_request refuses every URL
	target  *url.URL // nil: no target, http_request refuses every URL
	state   *[]byte  // where set_state saves, kept by the Plugin

	obs       []*messages.PluginObservation
	emits     int
	emitBytes int
	requests  int
	maxBody   int    // what http_request reads of a body at most
	pending   []byte // the encoded HttpResponse http_response copies out

	logBytes       int // log, stdout and stderr so far
	dropped        int // bytes of them over MaxLogBytes
	stdout, stderr bytes.Buffer

	// limit is the first limit the guest hit: the call fails with it.
	limit *CallError
	// rejected counts the records emit refused as invalid: the call ends
	// as FailureInvalidEmit.
	rejected int
	// refusal is the last thing a host function refused the guest, and
	// why; guestError the last line the guest logged at level error. A
	// failed call's CallError quotes both (see CallError.Host).
	refusal    string
	guestError string
}

type callKey struct{}

func newCall(ctx context.Context, plugin string, log zerolog.Logger, http HTTPDoer, target *url.URL, state *[]byte, timeout time.Duration) *call {
	if state == nil {
		state = new([]byte)
	}
	return &call{ctx: ctx, timeout: timeout, plugin: plugin, log: log, http: http, target: target, state: state, maxBody: MaxBodyBytes}
}

// callOf returns the call a host function runs in. The host sets it on
// every context it passes to guest code.
func callOf(ctx context.Context) *call { return ctx.Value(callKey{}).(*call) }

// hit records that the guest hit a limit; the first one is the call's
// failure.
func (c *call) hit(f Failure, detail string) {
	if c.limit == nil {
		c.limit = &CallError{Plugin: c.plugin, Failure: f, Detail: detail}
	}
}

// budget takes up to n bytes of the call's output budget and returns how
// many it may use, counting the rest as dropped.
func (c *call) budget(n int) int {
	ok := min(n, MaxLogBytes-c.logBytes)
	c.logBytes += ok
	c.dropped += n - ok
	return ok
}

// maxText bounds a guest's text that the host quotes (in a warning, in a
// failure's detail): the guest chooses it, and the log budget is for the
// guest's own output.
const maxText = 256

// clip shortens a guest's string to maxText bytes of valid UTF-8, cut on a
// character's boundary: what it returns may end up in an event, whose
// strings protobuf wants valid.
func clip(s string) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	if len(s) <= maxText {
		return s
	}
	cut := maxText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// oneLine is a guest's text as one line, clipped, with control and other
// unprintable characters escaped (\n, \x1b, \u202e), so that a reason
// quoting it stays one line and prints safely anywhere.
func oneLine(s string) string {
	var b strings.Builder
	for _, r := range clip(s) {
		if unicode.IsPrint(r) || r == utf8.RuneError {
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

// refuse logs that a host function refused the guest something (what,
// and detail, which may hold the guest's own text) and remembers it for
// the call's failure.
func (c *call) refuse(what, detail string) {
	c.log.Warn().Str("error", clip(detail)).Msg(what)
	c.refusal = what + ": " + oneLine(detail)
}

// logRecordCost is what one log record costs the budget on top of its
// text: a line in the daemon's log is far more than its text, and 65,536
// one-byte records must not be 65,536 lines.
const logRecordCost = 128

// logText logs one message of the guest's, within the budget.
func (c *call) logText(level int32, b []byte) {
	if c.budget(logRecordCost) < logRecordCost {
		c.dropped += len(b)
		return
	}
	b = b[:c.budget(len(b))]
	if len(b) == 0 {
		return
	}
	lvl := zerolog.InfoLevel
	switch level {
	case 0:
		lvl = zerolog.DebugLevel
	case 2:
		lvl = zerolog.WarnLevel
	case 3:
		lvl = zerolog.ErrorLevel
		c.guestError = oneLine(text(b))
	}
	c.log.WithLevel(lvl).Str("stream", "log").Msg(text(b))
}

// output is an instance's stdout or stderr: what the guest writes goes to
// the current call's buffer, within the budget, and is logged when the
// call ends.
type output struct {
	inst   *instance
	stderr bool
}

func (o output) Write(p []byte) (int, error) {
	c := o.inst.call
	buf := &c.stdout
	if o.stderr {
		buf = &c.stderr
	}
	buf.Write(p[:c.budget(len(p))])
	// The guest is never told: a full log is not its failure.
	return len(p), nil
}

// flush logs the call's stdout and stderr, and what the budget dropped.
func (c *call) flush() {
	if c.stdout.Len() > 0 {
		c.log.Info().Str("stream", "stdout").Msg(text(c.stdout.Bytes()))
	}
	if c.stderr.Len() > 0 {
		c.log.Warn().Str("stream", "stderr").Msg(text(c.stderr.Bytes()))
	}
	if c.dropped > 0 {
		c.log.Warn().Int("dropped_bytes", c.dropped).Int("cap_bytes", MaxLogBytes).Msg("plugin output over its cap per call")
	}
}

// stderrLine is the first line the guest wrote to stderr in this call (a
// Go guest's "panic: ..." or "fatal error: ..."), for the failure detail.
func (c *call) stderrLine() string {
	line, _, _ := strings.Cut(strings.TrimSpace(text(c.stderr.Bytes())), "\n")
	return oneLine(line)
}

// text is b as valid UTF-8, without a trailing newline.
func text(b []byte) string {
	return strings.TrimSuffix(strings.ToValidUTF8(string(b), string(utf8.RuneError)), "\n")
}
