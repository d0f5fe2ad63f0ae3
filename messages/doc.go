// Package messages is the wire contract, and nothing else: the code
// generated from proto/ (the *.pb.go files, never edited by hand: `make
// proto` regenerates them), the event types (types.go) and the envelope
// (envelope.go: a new event's id, type and time; the stamp the daemon
// adds; routing keys; the CloudEvents sequence and dataschema). It is a
// leaf: it imports no package of the daemon, so that consumers and plugin
// tools can import it alone, and it builds for wasip1. docs/events.md is
// its reference; docs/control.md that of the control channel's Command
// (command.pb.go), which operators' tools publish and the daemon answers
// with a command.result.
//
// The messages that travel between the daemon's actors are in
// actors/protocol.
package messages
