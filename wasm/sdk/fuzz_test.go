//go:build !wasip1

package sdk

import (
	"bytes"
	"maps"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/fuzzbudget"
)

// The fuzz targets feed the plugin's hand-written decoding what a host
// could pass (seeds in testdata/fuzz/<target>): it must not panic and
// must stay within the memory budget. Whatever the generated types decode
// the SDK must decode to the same, once encoded as a host sends it: known
// fields only. (On raw input the two may differ where the wire is
// malformed: a field of the wrong wire type is an unknown field to the
// generated code, a zero value to the SDK.)

// asSent is m encoded as the host sends it: without unknown fields, at
// any depth, map entries in key order.
func asSent(t *testing.T, m proto.Message) []byte {
	t.Helper()
	var discard func(protoreflect.Message)
	discard = func(m protoreflect.Message) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			if fd.Message() != nil && !fd.IsList() && !fd.IsMap() {
				discard(v.Message())
			}
			return true
		})
		m.SetUnknown(nil)
	}
	discard(m.ProtoReflect())
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

func FuzzDecodeObserveRequest(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { _, _ = decodeObserveRequest(b) })
		var want messages.ObserveRequest
		if proto.Unmarshal(b, &want) != nil {
			return
		}
		got, err := decodeObserveRequest(asSent(t, &want))
		if err != nil {
			t.Fatalf("the SDK refuses what the host sends: %v", err)
		}
		wantTime := time.Time{}
		if want.Time != nil {
			wantTime = time.Unix(want.Time.Seconds, int64(want.Time.Nanos)).UTC()
		}
		if got.Observer != want.Observer || got.Target.Name != want.Target.GetName() || got.Target.URL != want.Target.GetUrl() ||
			!bytes.Equal(got.ConfigJSON, want.ConfigJson) || !bytes.Equal(got.State, want.State) || !got.Time.Equal(wantTime) {
			t.Fatalf("decoded %+v, the host sent %v", got, &want)
		}
	})
}

func FuzzDecodeHTTPResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { _, _ = decodeHTTPResponse(b) })
		var want messages.HttpResponse
		if proto.Unmarshal(b, &want) != nil {
			return
		}
		got, err := decodeHTTPResponse(asSent(t, &want))
		if err != nil {
			t.Fatalf("the SDK refuses what the host sends: %v", err)
		}
		if got.StatusCode != int(want.StatusCode) || !maps.Equal(got.Header, want.Headers) ||
			!bytes.Equal(got.Body, want.Body) || got.Truncated != want.Truncated {
			t.Fatalf("decoded %+v, the host sent %v", got, &want)
		}
	})
}
