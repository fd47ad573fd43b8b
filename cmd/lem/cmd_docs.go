package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/llm-energy-measure/lem/schemas"
)

func init() {
	register(&command{
		name:    "docs",
		summary: "Print a generated document: 'events' (docs/events.md) or 'cli' (docs/cli.md).",
		usage:   "events|cli",
		setup: func(fs *flag.FlagSet) func([]string) error {
			out := fs.String("o", "-", "output file ('-' for standard output)")
			return func(args []string) error {
				if len(args) != 1 {
					return errUsage
				}
				switch args[0] {
				case "events":
					return writeOrPrint(*out, schemas.EventsMarkdown(), os.Stdout)
				case "cli":
					return writeOrPrint(*out, cliMarkdown(), os.Stdout)
				}
				return fmt.Errorf("unknown document %q (want events or cli)", args[0])
			}
		},
	})
	register(&command{
		name:    "version",
		summary: "Print the version of lem and of its wire format.",
		setup: func(fs *flag.FlagSet) func([]string) error {
			return func([]string) error {
				fmt.Printf("lem %s (wire v%d)\n", version, schemas.WireVersion)
				return nil
			}
		},
	})
}
