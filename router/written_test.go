package router

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"k8s.io/apimachinery/pkg/types"
)

func TestWrittenTellsACacheThatHasNotSeenTheWrite(t *testing.T) {
	var w written
	web := types.NamespacedName{Namespace: "ns", Name: "web"}
	canary := types.NamespacedName{Namespace: "ns", Name: "web-canary"}
	assert.False(t, w.behind(web, "10", true), "never written")

	w.record(web, "10")
	assert.True(t, w.behind(web, "10", true), "the version written over")
	assert.True(t, w.behind(web, "10", true), "still behind until the cache moves")
	assert.False(t, w.behind(web, "11", true), "the write, or a later version")
	assert.False(t, w.behind(web, "10", true), "forgotten once caught up")

	w.record(canary, "")
	assert.True(t, w.behind(canary, "", false), "created, not in the cache yet")
	assert.False(t, w.behind(canary, "12", true), "created and seen")
	assert.False(t, w.behind(canary, "", false), "forgotten: gone since")
}
