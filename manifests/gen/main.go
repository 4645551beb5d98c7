// Command gen writes manifests/webhooks.yaml from webhook.Configurations.
// Run it from the repository root after changing the webhook configuration:
//
//	go run ./manifests/gen
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/fledge-dev/fledge/manifests"
)

func main() {
	out := flag.String("o", "manifests/webhooks.yaml", "file to write")
	flag.Parse()
	data, err := manifests.Webhooks()
	if err == nil {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
