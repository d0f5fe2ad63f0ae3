package control

import (
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/test/fuzzbudget"
)

// FuzzDecode feeds the decoder what a sender may put in a message body:
// it must answer every input with a command or an error, never panic,
// and what it accepts must be a command with a UUIDv7 and a target.
func FuzzDecode(f *testing.F) {
	for _, c := range []*messages.Command{
		command(nil),
		apply("web", webPolicy),
		command(func(c *messages.Command) { c.Arguments = nil }),
		command(func(c *messages.Command) { c.Target = nil }),
		command(func(c *messages.Command) { c.Id = uuid.NewString() }),
	} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\xff\xff"))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > maxBody {
			return // refused before decoding
		}
		var (
			cmd *messages.Command
			err error
		)
		fuzzbudget.Check(t, fuzzbudget.MaxAlloc, func() { cmd, err = Decode(body) })
		if err != nil {
			if cmd != nil {
				t.Fatal("a command with an error")
			}
			return
		}
		if !validID(cmd.Id) || cmd.Target.GetSelector() == nil {
			t.Fatalf("accepted a command without a valid id or target: %v", cmd)
		}
		_ = CommandName(cmd)
	})
}
