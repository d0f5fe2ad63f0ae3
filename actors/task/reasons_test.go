package task

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/polar/observerd/configs/yamldoc"
)

func TestRejectionReasonsAreBounded(t *testing.T) {
	var probs []*yamldoc.Problem
	for i := range yamldoc.MaxProblems {
		probs = append(probs, &yamldoc.Problem{File: "p.yaml", Line: i + 1, Path: strings.Repeat("k", 256) + ".x", Message: "unknown key"})
	}
	reasons := rejectionReasons(probs)
	total := 0
	for _, r := range reasons {
		total += len(r) + 1
	}
	assert.LessOrEqual(t, total, maxReason+100)
	assert.Equal(t, probs[0].Error(), reasons[0], "the first problems, whole")
	assert.Regexp(t, `^… and \d+ more problems \(observerctl policy validate lists them all\)$`, reasons[len(reasons)-1])
	assert.Equal(t, []string{"p.yaml: short"}, rejectionReasons([]*yamldoc.Problem{{File: "p.yaml", Message: "short"}}))
}
