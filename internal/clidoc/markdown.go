package clidoc

import (
	"fmt"
	"io"
	"strings"

	"github.com/alecthomas/kong"
)

// Markdown writes the reference of app: the description, the global flags,
// then each visible command with its usage, arguments, flags (name,
// environment variable, default, help) and examples. regenerate is the
// command that writes the file, named in its header.
func Markdown(w io.Writer, app *kong.Application, regenerate string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s command-line reference\n\n", app.Name)
	fmt.Fprintf(&b, "<!-- Generated from the command-line model by `%s`: edit the flags' help and the examples in the source, not this file. -->\n\n", regenerate)
	fmt.Fprintf(&b, "```text\n%s\n```\n\n", strings.TrimSpace(app.Help))
	b.WriteString("## Global flags\n\nThese apply to every command.\n\n")
	writeFlags(&b, visibleFlags(app.Node))
	cmds := Commands(app.Node)
	b.WriteString("\n## Commands\n\n| command | does |\n| --- | --- |\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, "| [`%s`](#%s) | %s |\n", c.Path(), anchor(c.Path()), cell(c.Help))
	}
	for _, c := range cmds {
		writeCommand(&b, app.Name, c)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeCommand writes one command's section.
func writeCommand(b *strings.Builder, program string, c *kong.Node) {
	fmt.Fprintf(b, "\n## %s\n\n%s\n\n", c.Path(), strings.TrimSpace(c.Help))
	fmt.Fprintf(b, "```text\n%s %s\n```\n", program, c.Summary())
	if len(c.Positional) > 0 {
		b.WriteString("\n### Arguments\n\n| argument | values | description |\n| --- | --- | --- |\n")
		for _, p := range c.Positional {
			fmt.Fprintf(b, "| `%s` | %s | %s |\n", p.Summary(), values(p.EnumSlice(), p.Enum), cell(p.Help))
		}
	}
	if flags := visibleFlags(c); len(flags) > 0 {
		b.WriteString("\n### Flags\n\nAnd the [global flags](#global-flags).\n\n")
		writeFlags(b, flags)
	}
	if ex := ExamplesOf(c); len(ex) > 0 {
		b.WriteString("\n### Examples\n\n```sh\n")
		for i, e := range ex {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(b, "# %s\n%s %s\n", e.Comment, program, e.Args)
		}
		b.WriteString("```\n")
	}
}

// writeFlags writes a table of flags.
func writeFlags(b *strings.Builder, flags []*kong.Flag) {
	b.WriteString("| flag | environment | default | description |\n| --- | --- | --- | --- |\n")
	for _, f := range flags {
		name := "--" + f.Name
		if !f.IsBool() && !f.IsCounter() {
			name += "=" + f.FormatPlaceHolder()
		}
		if f.Short != 0 {
			name = fmt.Sprintf("-%c, %s", f.Short, name)
		}
		env := ""
		if len(f.Envs) > 0 {
			env = "`" + strings.Join(f.Envs, "`, `") + "`"
		}
		def := ""
		if f.HasDefault && f.Default != "" {
			def = "`" + f.Default + "`"
		}
		help := cell(f.Help)
		if f.Enum != "" {
			help += " Values: " + values(f.EnumSlice(), f.Enum) + "."
		}
		if f.Required {
			help += " Required."
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s |\n", name, env, def, help)
	}
}

// values lists enumerated values, each in backticks; none when enum is
// empty.
func values(vals []string, enum string) string {
	if enum == "" {
		return ""
	}
	return "`" + strings.Join(vals, "`, `") + "`"
}

// cellEscaper escapes what Markdown would read as a table's column
// separator, emphasis or an HTML tag.
var cellEscaper = strings.NewReplacer("|", `\|`, "*", `\*`, "<", `\<`)

// cell makes text fit in one Markdown table cell.
func cell(s string) string {
	return cellEscaper.Replace(strings.Join(strings.Fields(s), " "))
}

// anchor is the heading anchor GitHub gives a heading of text.
func anchor(text string) string {
	return strings.ReplaceAll(strings.ToLower(text), " ", "-")
}
