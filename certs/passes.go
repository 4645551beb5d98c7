package certs

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// runPasses runs pass at once, then every interval until ctx is done. A pass
// that fails, or is not complete, is repeated after min(interval,
// retryInterval); its error is logged, never returned: an error would stop
// the whole manager, while what the last pass left stays valid for weeks.
func runPasses(ctx context.Context, clk clock.Clock, interval time.Duration, log logr.Logger, failed string, pass func(context.Context) (complete bool, err error)) {
	for {
		wait := interval
		complete, err := pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil || !complete {
			wait = min(interval, retryInterval)
		}
		if err != nil {
			log.Error(err, failed, "retryIn", wait)
		}
		if !sleep(ctx, clk, wait) {
			return
		}
	}
}

// sleep waits d on clk and reports false if ctx ended first.
func sleep(ctx context.Context, clk clock.Clock, d time.Duration) bool {
	t := clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// readSecret reads a Secret; nil without error means it does not exist.
func readSecret(ctx context.Context, c client.Client, key client.ObjectKey, what string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := c.Get(ctx, key, &s)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("certs: read %s %s: %w", what, key, err)
	}
	return &s, nil
}
