// Command dashboard-check checks Grafana dashboard JSON against Grafana's own dashboard schema,
// as generated into the Grafana Foundation SDK (github.com/grafana/grafana-foundation-sdk/go):
// the dashboard, each panel's options and field config for its panel plugin, and each query
// for its data source plugin are decoded strictly (an unknown field, a wrong type or a missing
// required field is an error) and then validated against the schema's constraints.
//
// hack/provision.sh builds it (Grafana's dashboard linter is not served by the module proxy
// this project can reach); tests/chart_monitoring.rs runs it on the chart's dashboard.
//
//	dashboard-check FILE...   # exit 0: all valid; 1: findings on stderr; 2: usage or I/O
//	dashboard-check --version
package main

import (
	"fmt"
	"os"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Set by hack/provision.sh: the SDK version and a digest of this source, so a changed
// checker or SDK pin is rebuilt.
var (
	sdkVersion = "unknown"
	source     = "unknown"
)

// findings turns the SDK's result into nil when it found nothing: its strict decoding returns
// an empty cog.BuildErrors, not nil, for a valid input.
func findings(err error) error {
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}

func check(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var d dashboard.Dashboard
	if err := findings(d.UnmarshalJSONStrict(raw)); err != nil {
		return fmt.Errorf("does not match Grafana's dashboard schema:\n%w", err)
	}
	if err := findings(d.Validate()); err != nil {
		return fmt.Errorf("breaks a constraint of Grafana's dashboard schema:\n%w", err)
	}
	return nil
}

func main() {
	args := os.Args[1:]
	if len(args) == 1 && args[0] == "--version" {
		fmt.Printf("dashboard-check grafana-foundation-sdk/go %s source %s\n", sdkVersion, source)
		return
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "usage: dashboard-check FILE... | --version")
		os.Exit(2)
	}
	// Without the plugin registry, panel options and queries would be kept as opaque JSON.
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range args {
		if err := check(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}
