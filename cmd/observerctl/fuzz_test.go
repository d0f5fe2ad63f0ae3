package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
	"unicode"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/fuzzbudget"
)

// FuzzDecode feeds `observerctl tail` what anyone with a publish
// permission on the exchange could send: bodies of either encoding. It
// must never panic, never print a control character to the operator's
// terminal, and stay within the fuzz budget per message. Seeds:
// testdata/fuzz/FuzzDecode and a real event in each encoding.
func FuzzDecode(f *testing.F) {
	ev := &messages.Event{Id: "0190a0a0-0000-7000-8000-000000000001", Type: "observation.http", Node: "web-1",
		Sequence: 7, Time: timestamppb.Now(), Subject: "web\x1b[2J",
		Data: &messages.Event_Http{Http: &messages.HttpObservation{Url: "http://127.0.0.1/", Error: "bad\nthing\x07"}}}
	pb, err := proto.Marshal(ev)
	if err != nil {
		f.Fatal(err)
	}
	js, err := protojson.Marshal(ev)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pb, false)
	f.Add(js, true)
	f.Fuzz(func(t *testing.T, body []byte, isJSON bool) {
		d := amqp.Delivery{Body: body, ContentType: "application/protobuf"}
		if isJSON {
			d.ContentType = "application/json"
		}
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() {
			ev, err := decode(d)
			if err != nil {
				return
			}
			tr := newTracker()
			for _, s := range append(tr.see(ev), line(ev)) {
				s = printable(s)
				if i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
					t.Fatalf("unprintable rune at %d of %q", i, s)
				}
				if len(s) > maxLine+len("…") {
					t.Fatalf("a line of %d bytes", len(s))
				}
			}
		})
	})
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":         "plain text",
		"esc \x1b[2J clear":  `esc \x1b[2J clear`,
		"bell\a and nul\x00": `bell\a and nul\x00`,
		"new\nline\rreturn":  `new\nline\rreturn`,
		"unicode ok: é ✓":    "unicode ok: é ✓",
		"bidi \u202e trick":  `bidi \u202e trick`,
		"invalid \xff utf-8": "invalid \uFFFD utf-8",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
	if got := printable(strings.Repeat("x", 3*maxLine)); len(got) != maxLine+len("…") {
		t.Errorf("not clipped: %d bytes", len(got))
	}
}

func TestTrackerFollowsBoundedNodes(t *testing.T) {
	tr := newTracker()
	var warnings []string
	for i := range maxNodes + 10 {
		warnings = append(warnings, tr.see(&messages.Event{Id: string(rune(0x4e00 + i)), Node: "n" + string(rune(0x4e00+i)), Sequence: 1})...)
	}
	if len(tr.last) != maxNodes {
		t.Fatalf("follows %d nodes", len(tr.last))
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "more than 4096 nodes") {
		t.Fatalf("warnings: %q", warnings)
	}
}

func TestJSONSafe(t *testing.T) {
	in := map[string]string{"subject": "web\x7f\u009b31m\u202eevil", "plain": "ok é"}
	raw, err := json.MarshalIndent(in, "", "  ")
	require.NoError(t, err)
	out := jsonSafe(raw)
	assert.NotContains(t, string(out), "\u009b")
	assert.NotContains(t, string(out), "\x7f")
	assert.NotContains(t, string(out), "\u202e")
	assert.Contains(t, string(out), `\u009b`)
	var back map[string]string
	require.NoError(t, json.Unmarshal(out, &back), "still JSON")
	assert.Equal(t, in, back, "the same value")
	assert.Equal(t, strings.Count(string(raw), "\n"), strings.Count(string(out), "\n"), "indentation kept")
}

// The status table is printed line by line through printable: an
// observer's last error that carries an escape sequence shows as text.
func TestStatusIsPrintable(t *testing.T) {
	now := time.Now()
	s := snapshotAt(now)
	s.Observers[0].LastError = "read: \x1b[2Jcleared"
	s.Broker.LastError = "\u009b31mred"
	var b bytes.Buffer
	printLines(&b, func(w io.Writer) { renderStatus(w, s, now) })
	assert.Contains(t, b.String(), `read: \x1b[2Jcleared`)
	assert.NotContains(t, b.String(), "\x1b")
	assert.NotContains(t, b.String(), "\u009b")
}
