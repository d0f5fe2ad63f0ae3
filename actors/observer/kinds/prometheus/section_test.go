package prometheus

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMetricFilter(t *testing.T) {
	keep, err := (&Section{Include: []string{"http_.*", "up"}, Exclude: []string{".*_bucket"}}).MetricFilter()
	require.NoError(t, err)
	for name, want := range map[string]bool{
		"http_requests_total": true, "up": true, "backup": false, "http_duration_bucket": false, "go_goroutines": false,
	} {
		assert.Equal(t, want, keep(name), name)
	}
	all, err := (&Section{}).MetricFilter()
	require.NoError(t, err)
	assert.True(t, all("anything"))
	_, err = (&Section{Exclude: []string{"("}}).MetricFilter()
	assert.ErrorContains(t, err, `compile metric pattern "(": `)
}
