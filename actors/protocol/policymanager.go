package protocol

// The policy-manager accepts PolicyOwner, from the control actor,
// answered with an Owner: which file owns a policy name is its decision.
// It sends the task-manager ApplyPolicy, RemovePolicy, RejectFile and
// FilesRead (task.go).

// PolicyOwner asks the policy-manager which file owns the policy Name.
type PolicyOwner struct{ Name string }

// Owner answers PolicyOwner: File owns the name, at Line of it; "" when
// no file does.
type Owner struct {
	File string
	Line int
}
