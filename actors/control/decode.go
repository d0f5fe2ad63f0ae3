package control

import (
	"fmt"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/polar/observerd/messages"
)

// maxIssuer bounds the issuer a command names (for people: logs and the
// result).
const maxIssuer = 256

// commandNames are the commands by the names control.allow gives them,
// in the order of the Command's arguments.
var commandNames = []string{"observe_now", "pause", "resume", "apply_policy", "remove_policy", "get_state"}

// Decode decodes and checks a command's body (protobuf): its id is a
// UUIDv7 and it has a target. What it asks for is left to the caller: an
// argument this daemon does not know decodes to none (CommandName ""). Its
// errors describe the body, never quote it.
func Decode(body []byte) (*messages.Command, error) {
	cmd := &messages.Command{}
	if err := proto.Unmarshal(body, cmd); err != nil {
		return nil, fmt.Errorf("the body is not a Command (protobuf, polar.observer.v1.Command): %w", err)
	}
	switch {
	case !validID(cmd.Id):
		return nil, fmt.Errorf("the command's id is not a UUIDv7")
	case len(cmd.Issuer) > maxIssuer:
		return nil, fmt.Errorf("the command's issuer has %d bytes; at most %d", len(cmd.Issuer), maxIssuer)
	case cmd.Target.GetSelector() == nil:
		return nil, fmt.Errorf("the command has no target (node, group or all)")
	}
	return cmd, nil
}

// CommandName is the name of what cmd asks for (one of commandNames), ""
// when it carries no argument this daemon knows.
func CommandName(cmd *messages.Command) string {
	switch cmd.Arguments.(type) {
	case *messages.Command_ObserveNow_:
		return "observe_now"
	case *messages.Command_Pause_:
		return "pause"
	case *messages.Command_Resume_:
		return "resume"
	case *messages.Command_ApplyPolicy_:
		return "apply_policy"
	case *messages.Command_RemovePolicy_:
		return "remove_policy"
	case *messages.Command_GetState_:
		return "get_state"
	}
	return ""
}

// validID reports whether id is a UUIDv7, as a command's id must be.
func validID(id string) bool {
	u, err := uuid.Parse(id)
	return err == nil && u.Version() == 7 && len(id) == 36
}
