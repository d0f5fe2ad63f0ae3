package messages

import (
	"fmt"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// An event's envelope is filled in two steps, each in one place: NewEvent
// gives it what is fixed when it is made (its id, which others may name as
// their correlation or causation at once, its type and its time); Stamp
// gives it what the daemon adds (category, default severity and subject,
// node, source, provenance), and is called only by the state-manager as
// it hands the event to the broker, and by the broker for the reports it
// writes itself while stopping. The broker's outbox assigns the sequence.
// Emitters set what only they know: the payload, a severity, a subject,
// the policy, correlation and causation.

// NewEvent returns an event of the given type with a fresh UUIDv7 id and
// the current time.
func NewEvent(typ string) *Event {
	return &Event{
		Id:   uuid.Must(uuid.NewV7()).String(),
		Type: typ,
		Time: timestamppb.Now(),
	}
}

// Stamp completes the envelope of ev emitted at path (its source: an
// actor's name, or observer/<policy>/<name>) on node: its category, a
// severity when none (info), a subject when none (the node), a time when
// none, its own id as its correlation when it has none (a chain's root:
// every event of a chain, the root included, then shares one correlation
// id), node, source, and a provenance hop.
func Stamp(ev *Event, node, version, path string) {
	now := timestamppb.Now()
	ev.Category = CategoryOf(ev.Type)
	if ev.Severity == Severity_SEVERITY_UNSPECIFIED {
		ev.Severity = Severity_SEVERITY_INFO
	}
	ev.Node = node
	ev.Source = Source(node, path)
	if ev.Subject == "" {
		ev.Subject = node
	}
	if ev.Time == nil {
		ev.Time = now
	}
	if ev.CorrelationId == "" {
		ev.CorrelationId = ev.Id
	}
	ev.Provenance = append(ev.Provenance, &Hop{Service: "observerd", Version: version, Node: node, Time: now})
}

// DataSchema is the CloudEvents dataschema of every event's body, in
// either encoding: the type URL of its message, as the CloudEvents
// protobuf format recommends, so that a generic consumer can pick its
// decoder without knowing the event types.
const DataSchema = "type.googleapis.com/polar.observer.v1.Event"

// CloudEventsSequence is the CloudEvents sequence of an event: its
// node-wide sequence as 20 zero-padded digits, so that comparing the
// strings orders them as the numbers (the largest uint64 has 20 digits).
func CloudEventsSequence(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// RoutingKey is the AMQP routing key of an event: `<type>.<node>` with the
// dots of the node name replaced by `_`, so that topic bindings such as
// `observation.#` or `*.*.web-1` stay unambiguous.
func RoutingKey(typ, node string) string {
	return typ + "." + strings.ReplaceAll(node, ".", "_")
}

// Source is the CloudEvents source of an event emitted by the actor at path
// (e.g. "observer/web/health") on node.
func Source(node, path string) string {
	return fmt.Sprintf("observerd://%s/%s", node, path)
}

// ResultOf returns the result an observation carries: the `result` field
// of its payload, whatever its kind, so that a kind added to the schema
// needs nothing here. An observation whose payload has no result field,
// or leaves it unspecified (a plugin's that reports none, as every plugin
// did before PluginObservation had a result), counts as OK. ok is false
// for an event that is not an observation.
func ResultOf(ev *Event) (r Result, ok bool) {
	if CategoryOf(ev.GetType()) != Category_CATEGORY_OBSERVATION {
		return Result_RESULT_UNSPECIFIED, false
	}
	m := ev.ProtoReflect()
	field := m.WhichOneof(m.Descriptor().Oneofs().ByName("data"))
	if field == nil || field.Kind() != protoreflect.MessageKind {
		return Result_RESULT_OK, true
	}
	payload := m.Get(field).Message()
	rf := payload.Descriptor().Fields().ByName("result")
	if rf == nil || rf.Enum() == nil || rf.Enum().FullName() != Result_RESULT_OK.Descriptor().FullName() {
		return Result_RESULT_OK, true
	}
	if r := Result(payload.Get(rf).Enum()); r != Result_RESULT_UNSPECIFIED {
		return r, true
	}
	return Result_RESULT_OK, true
}
