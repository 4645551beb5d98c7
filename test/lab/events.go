package lab

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// EventMessages waits until object namespace/name has at least want Events
// with reason, and returns their messages, oldest first. Events are written
// asynchronously by their recorder, so they may land a moment after the
// change they report.
func (l *Lab) EventMessages(ctx context.Context, namespace, name, reason string, want int) ([]string, error) {
	var events []corev1.Event
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := l.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name + ",reason=" + reason})
		if err != nil {
			return false, err
		}
		events = list.Items
		return len(events) >= want, nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %d %s events of %s/%s, want %d: %w", len(events), reason, namespace, name, want, err)
	}
	slices.SortStableFunc(events, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	msgs := make([]string, len(events))
	for i, e := range events {
		msgs[i] = e.Message
	}
	return msgs, nil
}

// eventTime is when an Event happened: EventTime for events.k8s.io writers,
// FirstTimestamp for older ones.
func eventTime(e corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	return e.FirstTimestamp.Time
}
