package main

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// TestEveryFlagIsRead walks every flag of every command in the kong model
// and fails for one whose struct field no code on that command's path
// reads: a flag accepted and silently ignored (as sync --interactive once
// was).
//
// "Read" is decided on the type-checked source of this package, not by
// name: a field counts as read where a selector expression resolves to
// that very field (go/types), outside the left-hand side of a plain
// assignment, in a function reachable from the command's Run method or
// from run (which every command goes through) by calls and function
// values within this package. A field of an embedded struct shared by
// several commands (Common, Replication) must be read on each command's
// own path. Flags that kong acts on itself (--help, and types with a kong
// hook such as --version) are not fields the code needs to read.
//
// This catches a flag declared and never looked at, or looked at only by
// another command's code; it cannot tell whether a flag that is read
// changes what the command does, which the integration tests check.
func TestEveryFlagIsRead(t *testing.T) {
	pkg, info, files := typeCheckThisPackage(t)
	g := buildReadGraph(info, files)

	var cli CLI
	parser, err := kong.New(&cli, kong.Name("postgres-seren-replicator"), kong.Vars{"version": "test"})
	if err != nil {
		t.Fatal(err)
	}
	fields := fieldsByAddress(reflect.ValueOf(&cli).Elem())
	runFunc := pkg.Scope().Lookup("run").(*types.Func)
	checked := 0
	var walk func(n *kong.Node, roots []*types.Func, where string)
	walk = func(n *kong.Node, roots []*types.Func, where string) {
		reads := g.readsFrom(roots)
		for _, f := range n.Flags {
			if f.Name == "help" {
				continue
			}
			sf, ok := fields[fieldKey{f.Target.UnsafeAddr(), f.Target.Type()}]
			if !ok {
				t.Errorf("%s --%s: no struct field of CLI holds it", where, f.Name)
				continue
			}
			if kongHandles(f.Target) {
				continue
			}
			v := fieldVar(t, pkg, sf)
			checked++
			if !reads[v] {
				t.Errorf("%s --%s (%s.%s) is never read on the command's path (%s): build what it promises or remove it",
					where, f.Name, sf.owner, sf.name, rootNames(roots))
			}
		}
		for _, child := range n.Children {
			if child.Type != kong.CommandNode {
				continue
			}
			run := runMethod(t, pkg, child.Target.Type())
			walk(child, []*types.Func{runFunc, run}, "postgres-seren-replicator "+child.Name)
		}
	}
	walk(parser.Model.Node, []*types.Func{runFunc}, "postgres-seren-replicator")
	if checked < 40 {
		t.Errorf("checked only %d flags: the walk of the kong model is broken", checked)
	}
}

// TestReadGraphCatchesAnUnreadField runs the analysis of
// TestEveryFlagIsRead on a small program with the flaws it must report: a
// field only assigned, a field read only by another command, a field read
// by a function nothing calls. Fields read through a method value, a
// closure, a promoted embedded field and a call chain count as read.
func TestReadGraphCatchesAnUnreadField(t *testing.T) {
	const src = `package p
type Shared struct{ Name string; Unused string }
func (s Shared) describe() string { return s.Name }
type A struct {
	Shared
	Used, Written, OtherOnly, Dead, ViaClosure, ViaValue int
}
type B struct{ A }
func (a *A) Run() error {
	a.Written = 1
	f := func() int { return a.ViaClosure }
	g := a.helper
	_ = a.describe()
	return use(a.Used + f() + g())
}
func (a *A) helper() int { return a.ViaValue }
func (b *B) Run() error { return use(b.OtherOnly) }
func dead(a *A) int { return a.Dead }
func use(int) error { return nil }
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	info := newInfo()
	pkg, err := (&types.Config{}).Check("p", fset, []*ast.File{f}, info)
	if err != nil {
		t.Fatal(err)
	}
	g := buildReadGraph(info, []*ast.File{f})
	a := pkg.Scope().Lookup("A").Type().(*types.Named)
	run := a.Method(0)
	for i := 0; i < a.NumMethods(); i++ {
		if a.Method(i).Name() == "Run" {
			run = a.Method(i)
		}
	}
	reads := g.readsFrom([]*types.Func{run})
	st := a.Underlying().(*types.Struct)
	shared := pkg.Scope().Lookup("Shared").Type().Underlying().(*types.Struct)
	var got []string
	for _, s := range []*types.Struct{st, shared} {
		for i := 0; i < s.NumFields(); i++ {
			if fv := s.Field(i); !fv.Embedded() && !reads[fv] {
				got = append(got, fv.Name())
			}
		}
	}
	slices.Sort(got)
	if want := []string{"Dead", "OtherOnly", "Unused", "Written"}; !slices.Equal(got, want) {
		t.Errorf("unread fields of A.Run's path = %v, want %v", got, want)
	}
}

// readGraph is, for each function of the package, the struct fields it
// reads and the package's functions it calls or takes as a value.
type readGraph struct {
	reads map[*types.Func]map[*types.Var]bool
	uses  map[*types.Func]map[*types.Func]bool
}

func newInfo() *types.Info {
	return &types.Info{
		Defs:       map[*ast.Ident]types.Object{},
		Uses:       map[*ast.Ident]types.Object{},
		Selections: map[*ast.SelectorExpr]*types.Selection{},
	}
}

func buildReadGraph(info *types.Info, files []*ast.File) readGraph {
	g := readGraph{reads: map[*types.Func]map[*types.Var]bool{}, uses: map[*types.Func]map[*types.Func]bool{}}
	for _, file := range files {
		for _, decl := range file.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			fn := info.Defs[fd.Name].(*types.Func)
			reads, uses := map[*types.Var]bool{}, map[*types.Func]bool{}
			written := map[*ast.SelectorExpr]bool{}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.AssignStmt:
					if n.Tok == token.ASSIGN {
						for _, lhs := range n.Lhs {
							if sel, ok := lhs.(*ast.SelectorExpr); ok {
								written[sel] = true
							}
						}
					}
				case *ast.SelectorExpr:
					if s, ok := info.Selections[n]; ok {
						switch obj := s.Obj().(type) {
						case *types.Var:
							if !written[n] {
								reads[obj] = true
							}
						case *types.Func:
							uses[obj.Origin()] = true
						}
					}
				case *ast.Ident:
					if obj, ok := info.Uses[n].(*types.Func); ok {
						uses[obj.Origin()] = true
					}
				}
				return true
			})
			g.reads[fn], g.uses[fn] = reads, uses
		}
	}
	return g
}

// readsFrom is every field read by the functions reachable from roots.
func (g readGraph) readsFrom(roots []*types.Func) map[*types.Var]bool {
	seen := map[*types.Func]bool{}
	out := map[*types.Var]bool{}
	queue := slices.Clone(roots)
	for len(queue) > 0 {
		fn := queue[0]
		queue = queue[1:]
		if seen[fn] {
			continue
		}
		seen[fn] = true
		for v := range g.reads[fn] {
			out[v] = true
		}
		for callee := range g.uses[fn] {
			queue = append(queue, callee)
		}
	}
	return out
}

// structField names one field of a named struct type of this package.
type structField struct{ owner, name string }

type fieldKey struct {
	addr uintptr
	typ  reflect.Type
}

// fieldsByAddress maps the address and type of every field under v (a
// struct), embedded structs included, to the named struct declaring it:
// kong's flags point at the field they fill.
func fieldsByAddress(v reflect.Value) map[fieldKey]structField {
	out := map[fieldKey]structField{}
	var visit func(v reflect.Value)
	visit = func(v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			f, sf := v.Field(i), v.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			out[fieldKey{f.UnsafeAddr(), f.Type()}] = structField{owner: v.Type().Name(), name: sf.Name}
			if f.Kind() == reflect.Struct {
				visit(f)
			}
		}
	}
	visit(v)
	return out
}

// kongHandles reports whether kong acts on the flag itself, through a hook
// method on its type (kong.VersionFlag, kong.ConfigFlag and the like).
func kongHandles(v reflect.Value) bool {
	for _, hook := range []string{"BeforeReset", "BeforeResolve", "BeforeApply", "AfterApply"} {
		if _, ok := v.Addr().Type().MethodByName(hook); ok {
			return true
		}
	}
	return false
}

// fieldVar is the types object of the field f.
func fieldVar(t *testing.T, pkg *types.Package, f structField) *types.Var {
	t.Helper()
	obj := pkg.Scope().Lookup(f.owner)
	if obj == nil {
		t.Fatalf("type %s not found in the package", f.owner)
	}
	st := obj.Type().Underlying().(*types.Struct)
	for i := 0; i < st.NumFields(); i++ {
		if st.Field(i).Name() == f.name {
			return st.Field(i)
		}
	}
	t.Fatalf("field %s.%s not found", f.owner, f.name)
	return nil
}

// runMethod is the Run method of the command struct type typ.
func runMethod(t *testing.T, pkg *types.Package, typ reflect.Type) *types.Func {
	t.Helper()
	named := pkg.Scope().Lookup(typ.Name()).Type().(*types.Named)
	obj, _, _ := types.LookupFieldOrMethod(types.NewPointer(named), true, pkg, "Run")
	fn, ok := obj.(*types.Func)
	if !ok {
		t.Fatalf("command %s has no Run method", typ.Name())
	}
	return fn
}

func rootNames(roots []*types.Func) string {
	var names []string
	for _, r := range roots {
		names = append(names, r.FullName())
	}
	return strings.Join(names, ", ")
}

// typeCheckThisPackage parses the package's non-test files and type-checks
// them, reading its imports from the export data the go command builds
// (with the race detector when this test runs with it, so the build cache
// of the test run serves).
func typeCheckThisPackage(t *testing.T) (*types.Package, *types.Info, []*ast.File) {
	t.Helper()
	args := append([]string{"list", "-export", "-deps", "-f", "{{.ImportPath}}\t{{.Export}}"}, raceFlags...)
	cmd := exec.Command("go", append(args, ".")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	exports := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		path, file, _ := strings.Cut(sc.Text(), "\t")
		exports[path] = file
	}
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	lookup := func(path string) (io.ReadCloser, error) {
		file := exports[path]
		if file == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	}
	info := newInfo()
	conf := types.Config{Importer: importer.ForCompiler(fset, "gc", lookup)}
	pkg, err := conf.Check("main", fset, files, info)
	if err != nil {
		t.Fatalf("type-check: %v", err)
	}
	return pkg, info, files
}
