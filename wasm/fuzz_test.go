package wasm

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/fuzzbudget"
)

// FuzzDecodeObservation feeds the host's decoding of an emit record what
// a hostile guest may pass (seeds in testdata/fuzz/FuzzDecodeObservation).
// It must not panic, must stay within the memory budget, and what it
// accepts must hold what the daemon relies on: a type_suffix that is
// lower-case dotted words, a severity that exists, and a record that
// decodes to the same after encoding.
func FuzzDecodeObservation(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxEmitBytes {
			t.Skip("emit refuses it before decoding")
		}
		var (
			obs *messages.PluginObservation
			err error
		)
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { obs, err = decodeObservation(b) })
		if err != nil {
			return
		}
		if obs.TypeSuffix != "" && !typeSuffix.MatchString(obs.TypeSuffix) {
			t.Fatalf("accepted type_suffix %q", obs.TypeSuffix)
		}
		if _, ok := messages.Severity_name[int32(obs.Severity)]; !ok {
			t.Fatalf("accepted severity %d", obs.Severity)
		}
		again, err := proto.Marshal(obs)
		if err != nil {
			t.Fatalf("encode what was accepted: %v", err)
		}
		back, err := decodeObservation(again)
		if err != nil || !proto.Equal(obs, back) {
			t.Fatalf("does not decode to the same after encoding: %v", err)
		}
	})
}

// TestDecodeObservationLargestRecord: the costliest record the fuzzer is
// unlikely to build, a whole MaxEmitBytes of distinct labels (some 124,000
// map entries), decodes within the same budget (measured: 24 MiB).
func TestDecodeObservationLargestRecord(t *testing.T) {
	var b []byte
	for i := 0; ; i++ {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, strconv.FormatInt(int64(i), 16))
		if len(b)+2+len(e) > MaxEmitBytes {
			break
		}
		b = protowire.AppendTag(b, 6, protowire.BytesType)
		b = protowire.AppendBytes(b, e)
	}
	var obs *messages.PluginObservation
	fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() {
		var err error
		obs, err = decodeObservation(b)
		require.NoError(t, err)
	})
	assert.Greater(t, len(obs.Labels), 100_000)
}
