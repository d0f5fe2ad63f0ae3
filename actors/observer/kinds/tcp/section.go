package tcp

import "github.com/polar/observerd/policy"

// Section is a tcp observer's section: the address to connect to.
type Section struct {
	Address string `yaml:"address" doc:"host:port to connect to, its host in the daemon's allowed_targets; default the target URL's host and port."`
}

// Complete defaults the address to the target URL's host:port.
func (t *Section) Complete(c *policy.SectionContext) {
	if !c.Has("address") {
		t.Address = c.TargetHostPort
	}
}

// Validate checks the address against allowed_targets.
func (t *Section) Validate(c *policy.SectionContext) {
	// A defaulted address comes from the target, whose own problem
	// already says what is wrong with it.
	if c.Has("address") || c.TargetValid {
		if err := policy.CheckHostPort(t.Address, c.Env.AllowedOf()); err != nil {
			c.Addf("address", "%v", err)
		}
	}
}
