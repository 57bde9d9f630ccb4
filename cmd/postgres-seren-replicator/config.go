package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// configFile is a --config file read: a kong resolver whose keys are the
// long flag names.
type configFile struct {
	path   string
	values map[string]any
}

var _ kong.Resolver = (*configFile)(nil)

// loadConfig reads a --config file (kong.ConfigurationLoader). YAML holds
// JSON, so a JSON file reads too. Key order and comments do not matter.
func loadConfig(r io.Reader) (kong.Resolver, error) {
	path := "--config"
	if f, ok := r.(*os.File); ok {
		path = f.Name()
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrUsage, path, err)
	}
	values := map[string]any{}
	err = yaml.NewDecoder(bytes.NewReader(data)).Decode(&values)
	var typeErr *yaml.TypeError
	switch {
	case errors.Is(err, io.EOF): // an empty file
	case errors.As(err, &typeErr):
		// Its message quotes the value, which may be a connection string
		// with a password.
		return nil, fmt.Errorf("%w: %s: not a mapping of flag names to values", ErrUsage, path)
	case err != nil:
		// A syntax error names the line and the construct, not a value.
		return nil, fmt.Errorf("%w: %s: %v", ErrUsage, path, err)
	}
	return &configFile{path: path, values: values}, nil
}

// Validate refuses a key that is no flag of any command: a typo would
// otherwise be silently ignored.
func (c *configFile) Validate(app *kong.Application) error {
	known := map[string]bool{}
	_ = kong.Visit(app.Node, func(n kong.Visitable, next kong.Next) error {
		if node, ok := n.(*kong.Node); ok {
			for _, f := range node.Flags {
				known[f.Name] = true
			}
		}
		return next(nil)
	})
	var unknown []string
	for k := range c.values {
		if !known[k] || k == "config" || k == "help" || k == "version" {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("%w: %s: unknown key %s (keys are the long flag names, as in --help: source, target, include-tables, …)",
		ErrUsage, c.path, strings.Join(quoteAll(unknown), ", "))
}

// Resolve gives the file's value of flag, unless one of the flag's
// environment variables is set: kong asks resolvers only about flags not
// on the command line, but would let the file win over the environment,
// and the documented order is command line, environment, file, default.
func (c *configFile) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	v, ok := c.values[flag.Name]
	if !ok || v == nil {
		return nil, nil
	}
	if slices.ContainsFunc(flag.Envs, func(env string) bool { _, set := os.LookupEnv(env); return set }) {
		return nil, nil
	}
	switch v := v.(type) {
	case string, []any:
		return v, nil
	case map[string]any:
		return nil, fmt.Errorf("%s: key %s holds a mapping; give a value or a list", c.path, flag.Name)
	default:
		// Numbers and booleans go through the flag's own parser as the
		// command line's text would.
		return fmt.Sprint(v), nil
	}
}

func quoteAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = fmt.Sprintf("%q", v)
	}
	return out
}
