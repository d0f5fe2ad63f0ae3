package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/polar/observerd/actors/protocol"
	"github.com/polar/observerd/configs"
	"github.com/polar/observerd/configs/yamldoc"
	"github.com/polar/observerd/messages"
	"github.com/polar/observerd/policy"
)

// The control channel's exchange and the address of RabbitMQ's direct
// reply-to (docs/control.md).
const (
	controlExchange = "polar.control"
	directReplyTo   = "amq.rabbitmq.reply-to"
)

// maxAnswers bounds the answers one command collects: a fleet larger than
// that is not one command's.
const maxAnswers = 1 << 14

// remote is `remote pause|resume|observe|status|apply|remove`: it
// publishes one Command to the polar.control exchange, as the broker user
// it logs in as, and prints the answers that come back on direct
// reply-to within --wait, one line per node, then the nodes of --nodes
// that stayed silent. Exit 0 when every node expected answered OK (or,
// without --nodes and --node, when at least one answered and all OK); 1
// otherwise; 2 for bad usage.
func remote(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || !slices.Contains([]string{"pause", "resume", "observe", "status", "apply", "remove"}, args[0]) {
		fmt.Fprintln(stderr, "usage: observerctl remote pause|resume|observe|status|apply|remove [flags] [ARGS]; see observerctl remote status --help")
		return exitUsage
	}
	verb := args[0]
	fs := flag.NewFlagSet("remote "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfig, "config `file` whose broker section (URLs, TLS, auth, password) is used to log in")
	url := fs.String("url", "", "broker `URL` instead of the config's broker.urls (amqps://USER@HOST:PORT/VHOST; no password in it)")
	passwordFile := fs.String("password-file", "", "file holding the broker password instead of the config's (else env "+configs.PasswordEnv+")")
	user := fs.String("user", "", "the broker user you log in as, sent as user_id (default: the URL's user; required with auth: external)")
	node := fs.String("node", "", "send to this node only")
	group := fs.String("group", "", "send to the nodes labelled `label` (their config's labels)")
	nodes := fs.String("nodes", "", "comma-separated nodes expected to answer: the silent ones are named and make the exit code 1")
	wait := fs.Duration("wait", 5*time.Second, "how long to wait for the answers")
	asJSON := fs.Bool("json", false, "print each answer as a JSON line (status: the nodes' /v1/state)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if *node != "" && *group != "" {
		fmt.Fprintln(stderr, "observerctl remote: --node and --group exclude each other")
		return exitUsage
	}
	cmd, err := remoteCommand(verb, fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "observerctl remote %s: %v\n", verb, err)
		return exitUsage
	}
	key := "all"
	cmd.Target = &messages.Command_Target{Selector: &messages.Command_Target_All{All: true}}
	switch {
	case *node != "":
		key = "node." + *node
		cmd.Target.Selector = &messages.Command_Target_Node{Node: *node}
	case *group != "":
		key = "group." + *group
		cmd.Target.Selector = &messages.Command_Target_Group{Group: *group}
	}
	expected := splitNodes(*nodes)
	if *node != "" && len(expected) == 0 {
		expected = []string{*node}
	}

	cfg, err := configs.Load(*configPath)
	if cfg == nil {
		for _, p := range yamldoc.ProblemsOf(err) {
			fmt.Fprintln(stderr, p.Error())
		}
		return exitProblems
	}
	if *url != "" {
		cfg.Broker.URLs = []string{*url}
	}
	if *passwordFile != "" {
		cfg.Broker.PasswordFile = *passwordFile
	}
	if *user == "" {
		if uri, err := amqp.ParseURI(cfg.Broker.URLs[0]); err == nil {
			*user = uri.Username
		}
	}
	if *user == "" {
		fmt.Fprintln(stderr, "observerctl remote: set --user to the broker user you log in as (it is sent as user_id, which RabbitMQ checks)")
		return exitUsage
	}
	hostname, _ := os.Hostname()
	cmd.Issuer = *user + "@" + hostname
	cmd.IssuedAt = timestamppb.Now()
	cmd.ExpiresAt = timestamppb.New(time.Now().Add(*wait))

	conn, err := dialBroker(cfg, "observerctl remote")
	if err != nil {
		fmt.Fprintf(stderr, "observerctl remote: %v\n", err)
		return exitProblems
	}
	defer conn.Close()
	answers, err := send(ctx, conn, key, *user, cmd, *wait, expected)
	if err != nil {
		fmt.Fprintf(stderr, "observerctl remote: %v\n", err)
		return exitProblems
	}
	return report(stdout, verb, cmd, answers, expected, *asJSON)
}

// remoteCommand is the Command of a verb and its arguments.
func remoteCommand(verb string, args []string) (*messages.Command, error) {
	cmd := &messages.Command{Id: uuid.Must(uuid.NewV7()).String()}
	want := 1
	if verb == "status" {
		want = 0
	}
	if len(args) != want {
		return nil, fmt.Errorf("want %d argument(s), got %d", want, len(args))
	}
	observer := func() (string, string, error) {
		pol, obs, ok := strings.Cut(args[0], "/")
		if !ok || !policy.ValidName(pol) || !policy.ValidName(obs) {
			return "", "", fmt.Errorf("want POLICY/OBSERVER, got %q", args[0])
		}
		return pol, obs, nil
	}
	switch verb {
	case "pause", "resume", "observe":
		pol, obs, err := observer()
		if err != nil {
			return nil, err
		}
		switch verb {
		case "pause":
			cmd.Arguments = &messages.Command_Pause_{Pause: &messages.Command_Pause{Policy: pol, Observer: obs}}
		case "resume":
			cmd.Arguments = &messages.Command_Resume_{Resume: &messages.Command_Resume{Policy: pol, Observer: obs}}
		default:
			cmd.Arguments = &messages.Command_ObserveNow_{ObserveNow: &messages.Command_ObserveNow{Policy: pol, Observer: obs}}
		}
	case "status":
		cmd.Arguments = &messages.Command_GetState_{GetState: &messages.Command_GetState{}}
	case "apply":
		doc, err := policy.ReadFile(args[0])
		if err != nil {
			return nil, err
		}
		// Validated here for the name only: each node validates it
		// against its own config, and says what it finds.
		name, err := policyName(args[0], doc)
		if err != nil {
			return nil, err
		}
		cmd.Arguments = &messages.Command_ApplyPolicy_{ApplyPolicy: &messages.Command_ApplyPolicy{Name: name, Document: doc}}
	case "remove":
		if !policy.ValidName(args[0]) {
			return nil, fmt.Errorf("invalid policy name %q", args[0])
		}
		cmd.Arguments = &messages.Command_RemovePolicy_{RemovePolicy: &messages.Command_RemovePolicy{Name: args[0]}}
	}
	return cmd, nil
}

// policyName is the metadata.name of a policy document, read without
// validating the rest (each node does).
func policyName(file string, doc []byte) (string, error) {
	var head struct {
		Metadata struct {
			Name string `yaml:"name"`
		} `yaml:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil || !policy.ValidName(head.Metadata.Name) {
		return "", fmt.Errorf("%s: no valid metadata.name", file)
	}
	return head.Metadata.Name, nil
}

// send publishes cmd to the control exchange with routing key key, as
// user, and collects the answers on direct reply-to until wait passed or
// every node of expected (if any) answered.
// A refusal of the broker (a user_id that is not the login's: 406
// PRECONDITION_FAILED; no permission on the exchange: 403) is an error,
// as is a command that no node's queue is bound to.
func send(ctx context.Context, conn *amqp.Connection, key, user string, cmd *messages.Command, wait time.Duration, expected []string) ([]*messages.Event, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	// Consumed before publishing, on the same channel, as direct reply-to
	// requires; no-ack.
	replies, err := ch.Consume(directReplyTo, "", true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", directReplyTo, err)
	}
	body, err := proto.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode the command: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	confirm, err := ch.PublishWithDeferredConfirmWithContext(pctx, controlExchange, key, true, false, amqp.Publishing{
		ContentType: "application/protobuf", MessageId: cmd.Id, UserId: user, ReplyTo: directReplyTo,
		Timestamp: cmd.IssuedAt.AsTime(), Type: "polar.observer.v1.Command", AppId: "observerctl", Body: body,
	})
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	select {
	case e := <-closed:
		return nil, fmt.Errorf("the broker refused the command: %v", e)
	case <-confirm.Done():
		if !confirm.Acked() {
			return nil, errors.New("the broker did not take the command (nack)")
		}
	case <-pctx.Done():
		return nil, fmt.Errorf("the broker did not confirm the command within %s", wait)
	}
	var answers []*messages.Event
	waiting := map[string]bool{}
	for _, n := range expected {
		waiting[n] = true
	}
	deadline := time.NewTimer(time.Until(cmd.ExpiresAt.AsTime()))
	defer deadline.Stop()
	for len(answers) < maxAnswers {
		select {
		case r := <-returns:
			return nil, fmt.Errorf("no node is bound to %s on %s (%s)", key, controlExchange, r.ReplyText)
		case e := <-closed:
			return answers, fmt.Errorf("the connection closed: %v", e)
		case d, ok := <-replies:
			if !ok {
				return answers, errors.New("the connection closed")
			}
			if ev, err := decode(d); err == nil && ev.CorrelationId == cmd.Id && ev.GetCommandResult() != nil {
				answers = append(answers, ev)
				delete(waiting, ev.Node)
				if len(expected) > 0 && len(waiting) == 0 {
					return answers, nil
				}
			}
		case <-deadline.C:
			return answers, nil
		case <-ctx.Done():
			return answers, nil
		}
	}
	return answers, nil
}

// report prints one line per answering node (status: one table), then
// the silent nodes, and returns the exit code.
func report(w io.Writer, verb string, cmd *messages.Command, answers []*messages.Event, expected []string, asJSON bool) int {
	slices.SortFunc(answers, func(a, b *messages.Event) int { return strings.Compare(a.Node, b.Node) })
	answered := map[string]bool{}
	failed := false
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if verb == "status" && !asJSON {
		fmt.Fprintln(tw, "NODE\tREADY\tBROKER\tPOLICIES\tOBSERVERS\tOUTBOX\tREASON")
	}
	for _, ev := range answers {
		if answered[ev.Node] {
			continue // a copy of a redelivered answer
		}
		answered[ev.Node] = true
		res := ev.GetCommandResult()
		if res.Code != messages.ReturnCode_RETURN_CODE_OK {
			failed = true
		}
		switch {
		case asJSON:
			line := map[string]any{"node": ev.Node, "code": res.Code.String(), "message": res.Message, "repeat": res.Repeat}
			if len(res.Output) > 0 && json.Valid(res.Output) {
				line["output"] = json.RawMessage(res.Output)
			}
			b, _ := json.Marshal(line)
			fmt.Fprintln(tw, string(b))
		case verb == "status":
			statusRow(tw, ev.Node, res)
		default:
			fmt.Fprintf(tw, "%s\t%s\t%s\n", printable(ev.Node), outcome(verb, res), printable(firstLineOf(res.Message)))
			if verb == "apply" && res.Code == messages.ReturnCode_RETURN_CODE_INVALID_POLICY {
				for _, p := range strings.Split(res.Message, "\n")[1:] {
					fmt.Fprintf(tw, "\t\t%s\n", printable(p))
				}
			}
		}
	}
	var silent []string
	for _, n := range expected {
		if !answered[n] {
			silent = append(silent, n)
		}
	}
	if !asJSON {
		for _, n := range silent {
			fmt.Fprintf(tw, "%s\tsilent\tno answer\n", printable(n))
		}
	}
	_ = tw.Flush()
	summary := fmt.Sprintf("%d answered", len(answered))
	if len(expected) > 0 {
		summary += fmt.Sprintf(", %d silent", len(silent))
	}
	if !asJSON {
		fmt.Fprintf(w, "%s (command %s)\n", summary, cmd.Id)
	}
	if failed || len(silent) > 0 || len(answered) == 0 {
		return exitProblems
	}
	return exitOK
}

// outcome is the second column of a node's line.
func outcome(verb string, res *messages.CommandResult) string {
	switch {
	case verb == "apply" && res.Code == messages.ReturnCode_RETURN_CODE_OK:
		return "applied"
	case verb == "apply" && res.Code == messages.ReturnCode_RETURN_CODE_INVALID_POLICY:
		return "rejected"
	case res.Code == messages.ReturnCode_RETURN_CODE_OK:
		return "ok"
	}
	return strings.ToLower(strings.TrimPrefix(res.Code.String(), "RETURN_CODE_"))
}

// statusRow is a node's row of `remote status`.
func statusRow(w io.Writer, node string, res *messages.CommandResult) {
	var s protocol.Snapshot
	if res.Code != messages.ReturnCode_RETURN_CODE_OK || json.Unmarshal(res.Output, &s) != nil {
		fmt.Fprintf(w, "%s\t-\t-\t-\t-\t-\t%s\n", printable(node), printable(outcome("status", res)+": "+firstLineOf(res.Message)))
		return
	}
	ready, why := s.Ready()
	broker := "connected"
	if !s.Broker.Connected {
		broker = "down"
	}
	states := map[string]int{}
	for _, o := range s.Observers {
		states[o.State]++
	}
	var obs []string
	for _, st := range slices.Sorted(maps.Keys(states)) {
		obs = append(obs, fmt.Sprintf("%d %s", states[st], st))
	}
	outbox := "-"
	if s.Outbox != nil {
		outbox = fmt.Sprintf("%d", s.Outbox.Events)
	}
	fmt.Fprintf(w, "%s\t%t\t%s\t%d\t%s\t%s\t%s\n", printable(node), ready, broker, len(s.Policies),
		printable(strings.Join(obs, ", ")), outbox, printable(strings.Join(why, "; ")))
}

func splitNodes(s string) []string {
	var out []string
	for n := range strings.SplitSeq(s, ",") {
		if n = strings.TrimSpace(n); n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
