// compose-config loads a Compose file with compose-go, the loader `docker compose` itself is built on, and prints
// the resolved model as JSON, as `docker compose config --format json` does: variables interpolated from the
// environment and the env files, profiles applied, the file checked against the Compose specification. A file the
// loader refuses (a required variable without a value, an invalid key) exits 1 with the loader's message.
//
//	compose-config -f compose-lgtm.yml [--env-file .env] [--profile aws] [--project-directory DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, envFiles, profiles list
	flag.Var(&files, "f", "a Compose file (repeatable)")
	flag.Var(&envFiles, "env-file", "an env file (repeatable; default: .env beside the first file)")
	flag.Var(&profiles, "profile", "a profile to enable (repeatable)")
	dir := flag.String("project-directory", "", "the project directory (default: the first file's)")
	flag.Parse()

	options := []cli.ProjectOptionsFn{
		cli.WithOsEnv,
		cli.WithEnvFiles(envFiles...),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithName("otel-kit"),
	}
	if *dir != "" {
		options = append(options, cli.WithWorkingDirectory(*dir))
	}
	projectOptions, err := cli.NewProjectOptions(files, options...)
	if err != nil {
		fail(err)
	}
	project, err := projectOptions.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
