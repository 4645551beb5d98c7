package main

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/fledge-dev/fledge/policy"
)

// table collects rows and aligns them in columns as kubectl does (three
// blanks between columns), without trailing blanks, so that output compares
// exactly in tests and pastes cleanly.
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) {
	t.rows = append(t.rows, cells)
}

func (t *table) String() string {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 4, 3, ' ', 0)
	for _, r := range t.rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	_ = w.Flush() // a bytes.Buffer does not fail
	return trimTrailingBlanks(buf.String())
}

// trimTrailingBlanks removes the padding tabwriter leaves after the last
// non-empty cell of a line.
func trimTrailingBlanks(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// Marks used in tables; colourise paints them on a terminal.
const (
	markPass    = "✓"
	markFail    = "✗"
	markCurrent = "▶"
)

// colourise paints the marks after the table was aligned: escape sequences
// inside cells would count as width and break the columns.
func colourise(s string, on bool) string {
	if !on {
		return s
	}
	return strings.NewReplacer(
		markPass, "\x1b[32m"+markPass+"\x1b[0m",
		markFail, "\x1b[31m"+markFail+"\x1b[0m",
		markCurrent, "\x1b[1;36m"+markCurrent+"\x1b[0m",
	).Replace(s)
}

// formatNumber renders a metric value or bound with four significant
// digits, as people write them: 0.002, 1.2, 350.
func formatNumber(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	if math.Abs(v) >= 1e4 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// requestsOf reads "2,180 requests", or "1 request".
func requestsOf(f float64) string {
	if math.Round(f) == 1 {
		return "1 request"
	}
	return policy.FormatCount(f) + " requests"
}

// userGroup shows a step's target weight and the pod counts that carry it:
// "5% (1 of 21 pods)".
func userGroup(weight, canary, stable int32) string {
	return fmt.Sprintf("%d%% (%d of %d pods)", weight, canary, canary+stable)
}

// since renders how long ago t was, kubectl's way ("3m20s", "2d4h"). A
// time ahead of the local clock (skew with the cluster) counts as now.
func since(now, t time.Time) string {
	return duration.HumanDuration(max(now.Sub(t), 0))
}

// timestamp renders an instant in UTC, so output does not depend on the
// reader's time zone.
func timestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
