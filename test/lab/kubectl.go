package lab

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
)

// Kubectl runs the real kubectl as the lab's admin, with stdin, and returns
// its stdout and stderr apart: kubectl prints admission warnings on stderr.
func (l *Lab) Kubectl(ctx context.Context, stdin string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "kubectl", args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+l.Kubeconfig)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}
