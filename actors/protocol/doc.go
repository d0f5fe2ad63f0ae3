// Package protocol is the actor protocol of observerd: every message an
// actor of the tree accepts, answers or sends, and the names of the actors.
// One file per receiver lists what it takes:
//
//	supervisor     starts and stops the tree (no messages of its own)
//	broker         broker.go: Publish, SetOutboxLimit, GetOutboxStats
//	state-manager  state.go: Emit, BrokerStatus, PoliciesLoaded, GetState
//	task-manager   task.go: ApplyPolicy, RemovePolicy, RejectFile, FilesRead, Pause, Resume, ObserveNow
//	policy-manager policymanager.go: PolicyOwner
//	observer       observer.go: RunNow, GetObserverStats
//	control        control.go: ControlDelivery
//	admin          admin.go: Listen
//
// The flows (docs/architecture.md): an observer Emits to the
// state-manager, which completes the envelope and Publishes to the
// broker; the broker tells the state-manager its BrokerStatus; the
// policy-manager tells the task-manager what the files ask for
// (ApplyPolicy, RemovePolicy, RejectFile, FilesRead), and the task-manager,
// which alone decides what runs, tells the state-manager (the policy
// events, PoliciesLoaded); the admin asks the state-manager
// GetState and the broker GetOutboxStats, and sends the task-manager the
// observer commands (requests.go: the same code for the admin and the
// control actor, which takes the broker's control deliveries and asks the
// policy-manager who owns a policy name).
//
// Why a package of its own? The wire contract (package messages) is what
// consumers import, and must not carry the daemon's internals; an actor's
// messages next to the actor would make its siblings import it whole.
// Here a newcomer finds where a new message goes.
package protocol
