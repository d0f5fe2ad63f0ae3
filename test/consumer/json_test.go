//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"math"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
)

// roundTrip parses each JSON body with Python's protobuf runtime
// (google.protobuf.json_format, Debian's python3-protobuf), and prints it
// back in both encodings, one JSON line per body.
const roundTrip = `
import json, sys
from google.protobuf import json_format
from polar.observer.v1 import event_pb2
for line in sys.stdin:
    m = json_format.Parse(json.loads(line), event_pb2.Event())
    print(json.dumps({"binary": m.SerializeToString(deterministic=True).hex(), "json": json_format.MessageToJson(m)}))
`

// TestJSONRoundTripsThroughPython: the JSON encoding (broker.encoding:
// json) is proto3's canonical JSON, which an independent runtime parses
// without losing anything: every body a real daemon published, and an
// event of every payload with every field set to values that stress the
// mapping (64-bit integers past a double's precision, nanoseconds,
// negative durations, bytes, maps, enums, non-ASCII text), parse in
// Python to the very message Go encoded, and Python's own JSON parses back
// in Go to it too.
func TestJSONRoundTripsThroughPython(t *testing.T) {
	require.NotEmpty(t, daemonJSON, "node-b.example published JSON")
	var bodies [][]byte
	bodies = append(bodies, daemonJSON...)
	for _, ev := range everyPayload() {
		body, err := protojson.Marshal(ev) // as the broker encodes it
		require.NoError(t, err)
		bodies = append(bodies, body)
	}

	var in bytes.Buffer
	for _, b := range bodies {
		line, err := json.Marshal(string(b))
		require.NoError(t, err)
		in.Write(append(line, '\n'))
	}
	ctx, cancel := context.WithTimeout(context.Background(), consumerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/usr/bin/python3", "-c", roundTrip)
	cmd.Env = append(cmd.Environ(), "PYTHONPATH="+python)
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "python3-protobuf: %s", stderr.String())
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, lines, len(bodies))

	for i, line := range lines {
		var back struct{ Binary, JSON string }
		require.NoError(t, json.Unmarshal([]byte(line), &back))
		want := &messages.Event{}
		require.NoError(t, protojson.Unmarshal(bodies[i], want))
		raw, err := hex.DecodeString(back.Binary)
		require.NoError(t, err)
		fromBinary, fromJSON := &messages.Event{}, &messages.Event{}
		require.NoError(t, proto.Unmarshal(raw, fromBinary))
		require.NoError(t, protojson.Unmarshal([]byte(back.JSON), fromJSON))
		assert.True(t, proto.Equal(want, fromBinary), "%s: Python parsed\n%s\nas\n%s", want.Type, bodies[i], fromBinary)
		assert.True(t, proto.Equal(want, fromJSON), "%s: Python wrote\n%s", want.Type, back.JSON)
	}
}

// everyPayload is one event per payload of Event's data, every field of
// the event and of its payload set.
func everyPayload() []*messages.Event {
	var out []*messages.Event
	data := (&messages.Event{}).ProtoReflect().Descriptor().Oneofs().ByName("data")
	for i := range data.Fields().Len() {
		ev := &messages.Event{}
		m := ev.ProtoReflect()
		fill(m, 0)
		field := data.Fields().Get(i)
		payload := m.NewField(field)
		fill(payload.Message(), 1)
		m.Set(field, payload)
		out = append(out, ev)
	}
	return out
}

// fill sets every field of m, but its oneofs, to a value that stresses
// the JSON mapping; messages nest depth levels at most.
func fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && !fd.ContainingOneof().IsSynthetic() {
			continue
		}
		switch {
		case fd.IsMap():
			mp := m.Mutable(fd).Map()
			for _, k := range []string{"a", "ü/\"k\""} {
				mp.Set(protoreflect.ValueOfString(k).MapKey(), scalar(fd.MapValue(), depth))
			}
		case fd.IsList():
			l := m.Mutable(fd).List()
			if fd.Kind() == protoreflect.MessageKind {
				if depth < 2 {
					for range 2 {
						e := l.NewElement()
						fill(e.Message(), depth+1)
						l.Append(e)
					}
				}
				continue
			}
			l.Append(scalar(fd, depth))
			l.Append(scalar(fd, depth))
		case fd.Kind() == protoreflect.MessageKind:
			if v, ok := wellKnown(fd); ok {
				m.Set(fd, v)
			} else if depth < 2 {
				fill(m.Mutable(fd).Message(), depth+1)
			}
		default:
			m.Set(fd, scalar(fd, depth))
		}
	}
}

// wellKnown is a Timestamp with nanoseconds or a negative Duration with
// nanoseconds, which JSON writes as strings.
func wellKnown(fd protoreflect.FieldDescriptor) (protoreflect.Value, bool) {
	switch fd.Message().FullName() {
	case "google.protobuf.Timestamp":
		return protoreflect.ValueOfMessage(timestamppb.New(time.Date(2026, 12, 4, 23, 1, 22, 123456789, time.UTC)).ProtoReflect()), true
	case "google.protobuf.Duration":
		return protoreflect.ValueOfMessage(durationpb.New(-(time.Second + time.Nanosecond)).ProtoReflect()), true
	}
	return protoreflect.Value{}, false
}

func scalar(fd protoreflect.FieldDescriptor, depth int) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		return protoreflect.ValueOfEnum(values.Get(values.Len() - 1).Number())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(math.MinInt32)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(-(1<<53 + 1)) // past a double's precision
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(math.MaxUint32)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(math.MaxUint64)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(0.1)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString("s-" + string(fd.Name()) + " ünï\"code\"\n")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte{0, 0xff, 0x10, '"'})
	case protoreflect.MessageKind:
		if v, ok := wellKnown(fd); ok {
			return v
		}
		msg := dynamicMessage(fd)
		if depth < 2 {
			fill(msg, depth+1)
		}
		return protoreflect.ValueOfMessage(msg)
	}
	panic("no value for " + fd.FullName())
}

// dynamicMessage is a fresh message of a message-valued map's values.
func dynamicMessage(fd protoreflect.FieldDescriptor) protoreflect.Message {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(fd.Message().FullName())
	if err != nil {
		panic(err)
	}
	return mt.New()
}
