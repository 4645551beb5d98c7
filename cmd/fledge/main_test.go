package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestValidateRouterWorkers(t *testing.T) {
	assert.NoError(t, options{routerWorkers: 1}.validate())
	assert.EqualError(t, options{routerWorkers: 0}.validate(), "--router-workers 0: want 1 or more")
	assert.EqualError(t, options{routerWorkers: -1}.validate(), "--router-workers -1: want 1 or more")
}
