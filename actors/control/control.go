// Package control is the control actor: it answers the commands that
// operators send the node over RabbitMQ (docs/control.md). It never
// decides what runs: the observer commands go to the task-manager as the
// admin socket's do, a central policy goes through the policy-manager's
// cache directory, and the state is the state-manager's snapshot.
//
// Accepts (actors/protocol): ControlDelivery, from the broker: one message
// of the node's queue polar.control.<node>, with its verified AMQP
// user_id and its reply_to. Replies: nothing.
//
// Sends: Pause, Resume and ObserveNow to the task-manager
// (protocol.RunObserverCommand), GetState to the state-manager and
// GetOutboxStats to the broker (protocol.AskSnapshot, AskOutbox: the
// answer of /v1/state), PolicyOwner to the policy-manager, all as
// requests with a deadline; and, for every delivery, refused ones
// included, an Emit of a command.result to the state-manager, whose
// correlation_id and causation_id are the command's id and whose Accepted
// is the delivery's Settle: the delivery is acked (and the answer copied
// to its reply_to) only once the answer is in the outbox.
//
// A delivery is refused, with one messages.ReturnCode each and a message
// that never quotes the body, when it is over its sender's rate, too
// large, has no user_id, comes from a user control.allow does not name, is
// not a valid Command, has expired, targets other nodes, carries no
// argument this daemon knows, or is a command its user may not send. A
// sender over its rate twice over gets no answers (they are bounded too),
// its deliveries acked. A refusal is
// acked like any answer: it is never requeued. A command whose id was
// answered before (a redelivery) is answered again from the window of
// recent ids (window.go), with repeat set, and nothing is done twice.
package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/actors/policymanager"
	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// Options configure the control actor.
type Options struct {
	Node   string
	Labels []string
	// Allow maps a broker user to the commands it may send
	// (configs.ControlCommands).
	Allow map[string][]string
	// Rate is each user's commands a second (bursts of twice as many).
	Rate float64
	// Window is the file of the window of recent command ids.
	Window string
	// Central is the central policies' cache directory, which the
	// policy-manager watches; Env validates their documents, as the
	// policy-manager validates files.
	Central string
	Env     policy.Env
	// State, Task, Broker and Policies are the state-manager, the
	// task-manager, the broker and the policy-manager.
	State, Task, Broker, Policies *actor.PID
	// Now is the clock of expiry, rates and the window (nil: time.Now).
	Now func() time.Time
	Log zerolog.Logger
}

// WindowFile is the window's file in state_dir.
const WindowFile = "control-ids.db"

// Bounds of what a command may carry.
const (
	// maxBody is the largest message taken: a policy document at its
	// largest, and the rest of a command.
	maxBody = policy.MaxFileSize + 16<<10
	// maxReason bounds the problems an ApplyPolicy's answer carries, as
	// a policy.rejected bounds them.
	maxReason = 16 << 10
	// askTimeout bounds each request to another actor.
	askTimeout = 2 * time.Second
)

// Actor is the control actor.
type Actor struct {
	opts   Options
	window *window
	// rates are the senders' buckets, made at the first command of each:
	// one per user control.allow names, and one that every other sender
	// shares (key ""), so at most as many as it names, plus one. answers
	// bound, the same way, the refusals of what is over the rate: beyond
	// them a delivery is acked without an answer, so that no sender can
	// fill the outbox with answers.
	rates, answers map[string]*rate.Limiter
	// unanswered counts the deliveries acked without an answer since the
	// last log line about them, at most one a second.
	unanswered int
	logged     time.Time
}

// New returns the control actor.
func New(opts Options) *Actor {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Actor{opts: opts, rates: map[string]*rate.Limiter{}, answers: map[string]*rate.Limiter{}}
}

// Props for the control actor; each incarnation opens the window anew.
func Props(opts Options) *actor.Props {
	return actor.PropsFromProducer(func() actor.Actor { return New(opts) })
}

// Receive handles the actor's messages.
func (a *Actor) Receive(ctx actor.Context) {
	switch msg := ctx.Message().(type) {
	case *actor.Started:
		w, err := openWindow(a.opts.Window, windowMax, windowMaxAge)
		if err != nil {
			panic(err) // restarted with backoff; escalated when it lasts
		}
		a.window = w
	case *actor.Stopping, *actor.Restarting:
		if a.window != nil {
			if err := a.window.close(); err != nil {
				a.opts.Log.Error().Err(err).Msg("control: closing the window of command ids")
			}
			a.window = nil
		}
	case *protocol.ControlDelivery:
		a.answer(ctx.ActorSystem().Root, msg)
	}
}

// answer handles a delivery and emits its answer, whatever came of it,
// unless its sender is over its rate twice over.
func (a *Actor) answer(root *actor.RootContext, d *protocol.ControlDelivery) {
	res, id := a.handleSafely(root, d)
	if res == nil {
		a.unanswered++
		if now := a.opts.Now(); now.Sub(a.logged) >= time.Second {
			a.opts.Log.Warn().Int("deliveries", a.unanswered).Str("user", d.UserID).
				Msg("control: commands far over their sender's rate, acked without an answer")
			a.unanswered, a.logged = 0, now
		}
		if d.Settle != nil {
			d.Settle(nil)
		}
		return
	}
	res.Caller = &messages.Caller{Channel: "amqp", User: d.UserID}
	res.Ok = res.Code == messages.ReturnCode_RETURN_CODE_OK
	ev := messages.NewEvent(messages.TypeCommandResult)
	ev.CorrelationId, ev.CausationId = id, id
	switch res.Code {
	case messages.ReturnCode_RETURN_CODE_OK, messages.ReturnCode_RETURN_CODE_FAILED:
	case messages.ReturnCode_RETURN_CODE_NO_USER, messages.ReturnCode_RETURN_CODE_NOT_ALLOWED:
		// Someone who may not command the node tried to.
		ev.Severity = messages.Severity_SEVERITY_MEDIUM
	default:
		ev.Severity = messages.Severity_SEVERITY_LOW
	}
	ev.Data = &messages.Event_CommandResult{CommandResult: res}
	root.Send(a.opts.State, &protocol.Emit{From: protocol.ActorEmitter(protocol.Control), Event: ev, Accepted: d.Settle})
	a.opts.Log.Info().Str("id", id).Str("command", res.Command).Str("target", res.Target).
		Str("code", res.Code.String()).Bool("repeat", res.Repeat).Str("result", firstLine(res.Message)).
		Str("user", d.UserID).Str("issuer", res.Answered.GetIssuer()).Msg("command")
}

// handleSafely is handle, with a panic answered as an internal failure:
// a command must never crash the actor, which would leave the delivery
// unsettled, to crash it again after the next reconnect.
func (a *Actor) handleSafely(root *actor.RootContext, d *protocol.ControlDelivery) (res *messages.CommandResult, id string) {
	defer func() {
		if r := recover(); r != nil {
			a.opts.Log.Error().Interface("panic", r).Str("id", id).Msg("control: handling a command panicked")
			res = refuse(messages.ReturnCode_RETURN_CODE_INTERNAL, "the daemon failed handling the command: %v", r)
		}
	}()
	return a.handle(root, d)
}

// handle decides whether the command may run, and runs it; id is the
// command's id when it has a valid one. A nil result: no answer (the
// sender is far over its rate).
func (a *Actor) handle(root *actor.RootContext, d *protocol.ControlDelivery) (*messages.CommandResult, string) {
	now := a.opts.Now()
	allowed, known := a.opts.Allow[d.UserID]
	sender := d.UserID
	if !known {
		sender = "" // one bucket for every sender control.allow does not name
	}
	// First, so that every delivery spends the rate, refused ones too.
	if !a.bucket(a.rates, sender).AllowN(now, 1) {
		if !a.bucket(a.answers, sender).AllowN(now, 1) {
			return nil, ""
		}
		id := ""
		if len(d.Body) <= maxBody {
			if cmd, err := Decode(d.Body); err == nil {
				id = cmd.Id
			}
		}
		return refuse(messages.ReturnCode_RETURN_CODE_RATE_LIMITED, "more than %g commands a second from broker user %q; send it again later", a.opts.Rate, d.UserID), id
	}
	switch {
	case len(d.Body) > maxBody:
		return refuse(messages.ReturnCode_RETURN_CODE_TOO_LARGE, "the message has %d bytes; a command may have at most %d", len(d.Body), maxBody), ""
	case d.UserID == "":
		return refuse(messages.ReturnCode_RETURN_CODE_NO_USER,
			"the message has no user_id property: set it to your broker user (RabbitMQ checks it), as observerctl remote does"), ""
	case !known:
		return refuse(messages.ReturnCode_RETURN_CODE_NOT_ALLOWED, "broker user %q may send no command to node %s (control.allow)", d.UserID, a.opts.Node), ""
	}
	cmd, err := Decode(d.Body)
	if err != nil {
		return refuse(messages.ReturnCode_RETURN_CODE_MALFORMED, "%v", err), ""
	}
	id := cmd.Id
	if prev := a.window.get(id); prev != nil {
		prev.Repeat = true
		if prev.Code == messages.ReturnCode_RETURN_CODE_OK && cmd.GetGetState() != nil {
			// Reading is not acting: the state is read again.
			prev.Output, _ = a.state(root)
		}
		return prev, id
	}
	res := a.decide(root, cmd, d.UserID, allowed, now)
	res.Answered = answered(cmd)
	// Recorded without the output: a GetState answered again reads the
	// state again.
	stored := proto.CloneOf(res)
	stored.Output = nil
	if err := a.window.put(id, stored, now); err != nil {
		a.opts.Log.Error().Err(err).Str("id", id).Msg("control: the command's answer is not recorded; a redelivery would act again")
	}
	return res, id
}

// decide checks a decoded command against the rate, its expiry, its
// target and what its user may send, then runs it.
func (a *Actor) decide(root *actor.RootContext, cmd *messages.Command, user string, allowed []string, now time.Time) *messages.CommandResult {
	name := CommandName(cmd)
	switch {
	case cmd.ExpiresAt != nil && !now.Before(cmd.ExpiresAt.AsTime()):
		return refuse(messages.ReturnCode_RETURN_CODE_EXPIRED, "the command expired at %s", cmd.ExpiresAt.AsTime().UTC().Format(time.RFC3339))
	case !a.targets(cmd.Target):
		return refuse(messages.ReturnCode_RETURN_CODE_WRONG_TARGET, "the command is for %s, not for node %s (labels: %s)",
			describeTarget(cmd.Target), a.opts.Node, strings.Join(a.opts.Labels, ", "))
	case name == "":
		return refuse(messages.ReturnCode_RETURN_CODE_UNKNOWN_COMMAND,
			"the command carries no argument this daemon knows (a newer sender's?): it knows %s", strings.Join(commandNames, ", "))
	case !slices.Contains(allowed, name):
		return refuse(messages.ReturnCode_RETURN_CODE_NOT_ALLOWED, "broker user %q may not send %s (control.allow)", user, name)
	}
	res := a.run(root, cmd, user)
	res.Command = name
	return res
}

// run carries out an authorized command.
func (a *Actor) run(root *actor.RootContext, cmd *messages.Command, user string) *messages.CommandResult {
	switch args := cmd.Arguments.(type) {
	case *messages.Command_ObserveNow_:
		return a.observer(root, "observe", args.ObserveNow.Policy, args.ObserveNow.Observer)
	case *messages.Command_Pause_:
		return a.observer(root, "pause", args.Pause.Policy, args.Pause.Observer)
	case *messages.Command_Resume_:
		return a.observer(root, "resume", args.Resume.Policy, args.Resume.Observer)
	case *messages.Command_GetState_:
		out, err := a.state(root)
		if err != nil {
			return refuse(messages.ReturnCode_RETURN_CODE_INTERNAL, "%v", err)
		}
		return &messages.CommandResult{Output: out}
	case *messages.Command_ApplyPolicy_:
		res := a.apply(root, args.ApplyPolicy, user)
		res.Target = args.ApplyPolicy.Name
		return res
	case *messages.Command_RemovePolicy_:
		res := a.remove(args.RemovePolicy.Name)
		res.Target = args.RemovePolicy.Name
		return res
	}
	return refuse(messages.ReturnCode_RETURN_CODE_UNKNOWN_COMMAND, "unknown command")
}

// observer has the task-manager carry out an observer command, exactly as
// the admin socket's.
func (a *Actor) observer(root *actor.RootContext, name, pol, obs string) *messages.CommandResult {
	if !policy.ValidName(pol) || !policy.ValidName(obs) {
		return refuse(messages.ReturnCode_RETURN_CODE_MALFORMED,
			"invalid policy or observer name: each has up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit")
	}
	res := protocol.RunObserverCommand(root, a.opts.Task, name, pol, obs, askTimeout)
	target := res.Target
	switch {
	case res.Ok:
		res = &messages.CommandResult{}
	case strings.HasPrefix(res.Message, "ask task-manager"):
		res = refuse(messages.ReturnCode_RETURN_CODE_INTERNAL, "%s", res.Message)
	default:
		res = refuse(messages.ReturnCode_RETURN_CODE_FAILED, "%s", res.Message)
	}
	res.Target = target
	return res
}

// state is the JSON of /v1/state: the state-manager's snapshot with the
// broker's outbox.
func (a *Actor) state(root *actor.RootContext) ([]byte, error) {
	s, err := protocol.AskSnapshot(root, a.opts.State, askTimeout)
	if err != nil {
		return nil, err
	}
	answer := *s // a copy: the snapshot may be shared
	answer.Outbox = protocol.AskOutbox(root, a.opts.Broker, askTimeout)
	out, err := json.Marshal(&answer)
	if err != nil {
		return nil, fmt.Errorf("encode the state: %w", err)
	}
	return out, nil
}

// apply validates a central policy as the policy-manager validates a
// file, and caches it for the policy-manager to apply. An invalid one
// changes nothing: the version that runs keeps running.
func (a *Actor) apply(root *actor.RootContext, args *messages.Command_ApplyPolicy, user string) *messages.CommandResult {
	name := args.Name
	if !policy.ValidName(name) {
		return refuse(messages.ReturnCode_RETURN_CODE_MALFORMED,
			"invalid policy name: up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit")
	}
	if len(args.Document) > policy.MaxFileSize {
		return refuse(messages.ReturnCode_RETURN_CODE_TOO_LARGE, "the policy document has %d bytes; a policy may have at most %d", len(args.Document), policy.MaxFileSize)
	}
	file := policymanager.CentralFile(a.opts.Central, name)
	p, err := parseSafely(file, args.Document, a.opts.Env)
	if err != nil {
		return refuse(messages.ReturnCode_RETURN_CODE_INVALID_POLICY, "%s", problems(err))
	}
	if p.Metadata.Name != name {
		return refuse(messages.ReturnCode_RETURN_CODE_INVALID_POLICY, "%s:%d: metadata.name: the document names policy %q, the command %q",
			file, p.NameLine(), p.Metadata.Name, name)
	}
	answer, err := root.RequestFuture(a.opts.Policies, &protocol.PolicyOwner{Name: name}, askTimeout).Result()
	owner, ok := answer.(*protocol.Owner)
	switch {
	case err != nil || !ok:
		return refuse(messages.ReturnCode_RETURN_CODE_INTERNAL, "ask policy-manager who owns policy %s: %v", name, err)
	case owner.File != "" && owner.File != file:
		return refuse(messages.ReturnCode_RETURN_CODE_NAME_CONFLICT, "policy %s is the local file %s:%d's; the central policy %s is refused",
			name, owner.File, owner.Line, file)
	}
	if err := policymanager.WriteCentral(a.opts.Central, name, args.Document, user); err != nil {
		return refuse(messages.ReturnCode_RETURN_CODE_INTERNAL, "%v", err)
	}
	return &messages.CommandResult{Message: fmt.Sprintf("policy %s revision %s cached as %s: policy.applied follows when it runs", name, p.Revision, file)}
}

// remove removes a central policy from the cache: the policy-manager then
// removes it.
func (a *Actor) remove(name string) *messages.CommandResult {
	if !policy.ValidName(name) {
		return refuse(messages.ReturnCode_RETURN_CODE_MALFORMED,
			"invalid policy name: up to 63 lower-case letters, digits, '-' and '_', beginning and ending with a letter or digit")
	}
	err := policymanager.RemoveCentral(a.opts.Central, name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return refuse(messages.ReturnCode_RETURN_CODE_NOT_FOUND, "no central policy %s on node %s", name, a.opts.Node)
	case err != nil:
		return refuse(messages.ReturnCode_RETURN_CODE_INTERNAL, "%v", err)
	}
	return &messages.CommandResult{Message: fmt.Sprintf("central policy %s removed: policy.removed follows", name)}
}

// parseSafely is policy.Parse, with a panic of the parser (a hostile
// document) a problem of the document.
func parseSafely(file string, doc []byte, env policy.Env) (p *policy.Policy, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, &yamldoc.Problem{File: file, Message: fmt.Sprintf("the parser crashed on the document: %v", r)}
		}
	}()
	return policy.Parse(file, doc, env)
}

// problems renders a document's problems one a line, file:line first, as
// many as fit in maxReason.
func problems(err error) string {
	var b strings.Builder
	probs := yamldoc.ProblemsOf(err)
	for i, p := range probs {
		line := p.Error()
		if b.Len()+len(line)+1 > maxReason && i > 0 {
			fmt.Fprintf(&b, "… and %d more problems (observerctl policy validate lists them all)", len(probs)-i)
			break
		}
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(line)
	}
	return b.String()
}

// bucket is sender's bucket in buckets: Rate a second, bursts of twice
// as many.
func (a *Actor) bucket(buckets map[string]*rate.Limiter, sender string) *rate.Limiter {
	l := buckets[sender]
	if l == nil {
		l = rate.NewLimiter(rate.Limit(a.opts.Rate), max(1, int(2*a.opts.Rate)))
		buckets[sender] = l
	}
	return l
}

// targets reports whether t selects this node.
func (a *Actor) targets(t *messages.Command_Target) bool {
	switch s := t.GetSelector().(type) {
	case *messages.Command_Target_Node:
		return s.Node == a.opts.Node
	case *messages.Command_Target_Group:
		return slices.Contains(a.opts.Labels, s.Group)
	case *messages.Command_Target_All:
		return s.All
	}
	return false
}

func describeTarget(t *messages.Command_Target) string {
	switch s := t.GetSelector().(type) {
	case *messages.Command_Target_Node:
		return "node " + s.Node
	case *messages.Command_Target_Group:
		return "group " + s.Group
	}
	return "no node"
}

// answered is the command as the result carries it: without an
// ApplyPolicy's document, which the result names and the cache holds.
func answered(cmd *messages.Command) *messages.Command {
	out := proto.CloneOf(cmd)
	if ap := out.GetApplyPolicy(); ap != nil {
		ap.Document = nil
	}
	return out
}

func refuse(code messages.ReturnCode, format string, args ...any) *messages.CommandResult {
	return &messages.CommandResult{Code: code, Message: fmt.Sprintf(format, args...)}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// WindowPath is the window's file in stateDir.
func WindowPath(stateDir string) string { return filepath.Join(stateDir, WindowFile) }
