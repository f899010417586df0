package deps

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/wgmesh/wgmesh/test/repo"
)

// repoRoot is the repository's top directory (this package is test/deps).

// provided reads hack/deps.sh's list for target: command -> package.
func provided(t *testing.T, root, target string) map[string]string {
	t.Helper()
	out, err := exec.Command("bash", filepath.Join(root, "hack", "deps.sh"), "list", target).Output()
	if err != nil {
		t.Fatalf("hack/deps.sh list %s: %v", target, err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		cmd, pkg, ok := strings.Cut(line, ":")
		if !ok || pkg == "" {
			t.Fatalf("hack/deps.sh list %s: bad entry %q (want command:package or :package)", target, line)
		}
		m[cmd] = pkg // ":pkg" lands under "": a package is still listed
		m["package "+pkg] = pkg
	}
	return m
}

// Targets are the make targets with a list in hack/deps.sh.
var targets = []string{"demo", "test", "test-kernel", "bench", "conformance"}

// scriptTargets says which make targets run each script in hack/ (and CI's entry point):
// a command a script runs must be in the list of every target that runs it. A new
// script fails the guard until it is placed here.
var scriptTargets = map[string][]string{
	".ci/run":                  {"test"},
	"hack/cni-plugins.sh":      {"demo", "test", "test-kernel", "bench"},
	"hack/control-plane.sh":    targets,
	"hack/demo.sh":             {"demo"},
	"hack/deps.sh":             targets,
	"hack/e2e-test.sh":         {"conformance"},
	"hack/helm.sh":             {"demo", "test", "conformance"},
	"hack/image.sh":            {"demo", "test", "conformance"},
	"hack/kube-proxy.sh":       {"bench", "conformance"},
	"hack/lib.sh":              targets,
	"hack/node-parts.sh":       {"demo", "test", "conformance"},
	"hack/promtool.sh":         {"test"},
	"hack/test-kernel.sh":      {"test-kernel"},
	"hack/verify-generated.sh": {"test"},
	"hack/vm.sh":               {"test-kernel"},
}

// goTargets says which make targets run a Go file's commands: tests under test/bench
// run in make bench, the VM's runner in make test-kernel, the demo and conformance
// programs in theirs, every other test in make test, and the rest (the product and the
// local cluster) in make demo and make test alike.
func goTargets(rel string) []string {
	switch {
	case strings.HasPrefix(rel, "test/bench/"):
		return []string{"bench"}
	case strings.HasPrefix(rel, "test/vm/"), strings.HasPrefix(rel, "test/cmd/wgmesh-vm"):
		return []string{"test-kernel"}
	case strings.HasPrefix(rel, "test/cmd/wgmesh-demo/"):
		return []string{"demo"}
	case strings.HasPrefix(rel, "test/cmd/wgmesh-conformance/"):
		return []string{"conformance"}
	case strings.HasSuffix(rel, "_test.go"), strings.HasPrefix(rel, "kubectl/"):
		return []string{"test"} // the kubectl plugin's optional tools (dot) are the tests' to need
	}
	return []string{"demo", "test"}
}

// use is one external command a file runs or looks up, or a package it names.
type use struct {
	file string
	line int
	cmd  string // a command name, or "package <name>" for one a message tells users to install
}

func (u use) String() string { return fmt.Sprintf("%s:%d: %s", u.file, u.line, u.cmd) }

// TestEveryCommandIsProvided is the guard: every external command a test, the product or a
// hack/ script runs (exec.Command, exec.LookPath, a namespace's Exec, a shell command line)
// and every package a skip or error message tells users to apt-get install is in the list
// hack/deps.sh has for each make target that runs it.
func TestEveryCommandIsProvided(t *testing.T) {
	root := repo.Root(t)
	lists := map[string]map[string]string{}
	for _, tg := range targets {
		lists[tg] = provided(t, root, tg)
	}
	uses, err := collect(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(uses) < 100 {
		t.Fatalf("found only %d command uses: the scanner is broken", len(uses))
	}
	seen := map[string]bool{}
	for _, u := range uses {
		tgs, err := targetsOf(u.file)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, tg := range tgs {
			if _, ok := lists[tg][u.cmd]; !ok {
				if key := u.cmd + "/" + tg; !seen[key] {
					seen[key] = true
					t.Errorf("%s, run by make %s: no list in hack/deps.sh provides it (add command:package to a group of target %s)", u, tg, tg)
				}
			}
		}
	}
}

// TestGuardCatches feeds the scanner code that runs a command no list has, in each form it
// knows, so the guard above cannot pass by seeing nothing.
func TestGuardCatches(t *testing.T) {
	goSrc := `package x
import ("context"; "os/exec")
type ns struct{}
func (ns) Exec(ctx context.Context, argv ...string) ([]byte, error) { return nil, nil }
func f(ctx context.Context, n ns, pid string) {
	exec.Command("frobnicate-a", "-x")
	exec.CommandContext(ctx, "nsenter", "-t", pid, "-n", "frobnicate-b")
	exec.LookPath("frobnicate-c")
	n.Exec(ctx, "sh", "-c", "frobnicate-d --now && true")
	argv := []string{"frobnicate-e", "-1"}
	_ = exec.Command(argv[0], argv[1:]...)
	for _, tool := range []string{"frobnicate-f"} { exec.LookPath(tool) }
	_ = "frobnicate-g is not on PATH (apt-get install frobnicate-pkg)"
	for _, argv := range [][]string{{"frobnicate-h", "x"}} { n.Exec(ctx, argv...) }
	for _, args := range [][]string{{"not-a-command"}} { _ = args }
	exec.Command(pid, "not-a-command-either")
}`
	shSrc := `#!/usr/bin/env bash
set -euo pipefail
helper() { frobnicate-i --flag; }
x="$(frobnicate-j | frobnicate-k)"
if ! command -v frobnicate-l >/dev/null; then frobnicate-m; fi
case "$1" in
  up|down) frobnicate-n "$x" ;; # not-a-command
esac
unshare -m --propagation private frobnicate-o
if pid="$("$cmd" not-a-command-3)"; then frobnicate-q; fi
for a in not1 not2; do echo "$a (not3 x)"; done
cat >"$f" <<EOF
not4 here
EOF
[[ -n "$x" ]] && frobnicate-p
helper
`
	var got []string
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x.go", goSrc, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range goUses(fset, f, "x.go") {
		got = append(got, u.cmd)
	}
	for _, u := range shellUses(shSrc, "x.sh", nil) {
		got = append(got, u.cmd)
	}
	sort.Strings(got)
	want := []string{"cat", "echo", "frobnicate-a", "frobnicate-b", "frobnicate-c", "frobnicate-d", "frobnicate-e", "frobnicate-f", "frobnicate-h",
		"frobnicate-i", "frobnicate-j", "frobnicate-k", "frobnicate-l", "frobnicate-m", "frobnicate-n", "frobnicate-o", "frobnicate-p", "frobnicate-q",
		"nsenter", "package frobnicate-pkg", "sh", "true", "unshare"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("found\n  %s\nwant\n  %s", strings.Join(got, " "), strings.Join(want, " "))
	}
}

func targetsOf(rel string) ([]string, error) {
	if strings.HasSuffix(rel, ".go") {
		return goTargets(rel), nil
	}
	tgs, ok := scriptTargets[rel]
	if !ok {
		return nil, fmt.Errorf("%s: which make targets run it? add it to scriptTargets in test/deps", rel)
	}
	return tgs, nil
}

// collect scans every Go file and every script of the repository.
func collect(root string) ([]use, error) {
	var uses []use
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if name := d.Name(); rel != "." && (strings.HasPrefix(name, ".") && rel != ".ci" || name == "testdata" || name == "bin" || rel == "test/deps") {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(rel, ".go"):
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			uses = append(uses, goUses(fset, f, rel)...)
		case strings.HasSuffix(rel, ".sh") && strings.HasPrefix(rel, "hack/"), rel == ".ci/run":
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var lib []byte
			if strings.Contains(string(b), "lib.sh") {
				lib, _ = os.ReadFile(filepath.Join(root, "hack", "lib.sh"))
			}
			uses = append(uses, shellUses(string(b), rel, shellFuncs(string(lib)))...)
		}
		return nil
	})
	return uses, err
}

// execFuncs are the calls whose first string argument is a command: os/exec's and the
// test harness's (a namespace's, a machine's or a node's Exec and Command).
var execFuncs = map[string]bool{"Command": true, "CommandContext": true, "LookPath": true, "Exec": true}

// isContext reports whether e looks like a context argument (ctx, tctx, context.X(...)).
func isContext(e ast.Expr) bool {
	switch v := e.(type) {
	case *ast.Ident:
		return strings.HasSuffix(strings.ToLower(v.Name), "ctx")
	case *ast.CallExpr:
		if s, ok := v.Fun.(*ast.SelectorExpr); ok {
			if id, ok := s.X.(*ast.Ident); ok && id.Name == "context" {
				return true
			}
		}
	}
	return false
}

// wrappers run the command that follows their own flags.
var wrappers = map[string]bool{"nsenter": true, "unshare": true, "env": true, "timeout": true, "xargs": true, "exec": true, "command": true, "time": true}

// valueFlags are wrapper flags that take the next word as their value.
var valueFlags = map[string]bool{"-t": true, "--target": true, "--propagation": true, "-s": true}

var (
	bareWord    = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]*$`)
	aptInstall  = regexp.MustCompile(`apt-get install ((?:-y )?(?:[a-z0-9][a-z0-9.+-]*(?: |\)|$))+)`)
	systemPaths = regexp.MustCompile(`^/(?:usr/)?s?bin/`)
)

// commandName is s as a command on PATH, or "" when s is a path or not a word.
func commandName(s string) string {
	if systemPaths.MatchString(s) {
		s = systemPaths.ReplaceAllString(s, "")
	}
	if bareWord.MatchString(s) {
		return s
	}
	return ""
}

// argvUses reads an argv given as words (empty for a word that is not a literal):
// its command, the command a wrapper runs, and a shell's -c script.
func argvUses(words []string) []string {
	var out []string
	for i := 0; i < len(words); i++ {
		cmd := commandName(words[i])
		if cmd == "" {
			return out
		}
		out = append(out, cmd)
		switch {
		case (cmd == "sh" || cmd == "bash") && i+2 < len(words) && words[i+1] == "-c":
			for _, u := range shellUses(words[i+2], "", nil) {
				out = append(out, u.cmd)
			}
			return out
		case cmd == "bash" || cmd == "sh":
			// bash -o pipefail -c SCRIPT
			for j := i + 1; j+1 < len(words); j++ {
				if words[j] == "-c" {
					for _, u := range shellUses(words[j+1], "", nil) {
						out = append(out, u.cmd)
					}
					break
				}
			}
			return out
		case wrappers[cmd]:
			j := i + 1
			for ; j < len(words); j++ {
				w := words[j]
				if !strings.HasPrefix(w, "-") || w == "" {
					if w == "" && j > i+1 && valueFlags[words[j-1]] {
						continue
					}
					break
				}
				if valueFlags[w] {
					j++
				}
			}
			i = j - 1
		default:
			return out
		}
	}
	return out
}

// goUses finds the commands a Go file runs and the packages its messages name.
func goUses(fset *token.FileSet, f *ast.File, rel string) []use {
	var out []use
	add := func(pos token.Pos, cmds ...string) {
		for _, c := range cmds {
			out = append(out, use{file: rel, line: fset.Position(pos).Line, cmd: c})
		}
	}
	literals := func(exprs []ast.Expr) []string {
		var words []string
		for _, e := range exprs {
			switch v := e.(type) {
			case *ast.BasicLit:
				if s, err := strconv.Unquote(v.Value); err == nil && v.Kind == token.STRING {
					words = append(words, s)
					continue
				}
			case *ast.CallExpr: // append([]string{"nsenter", ...}, argv...)
				if id, ok := v.Fun.(*ast.Ident); ok && id.Name == "append" && len(v.Args) > 0 {
					if cl, ok := v.Args[0].(*ast.CompositeLit); ok {
						inner := make([]string, 0, len(cl.Elts))
						for _, el := range cl.Elts {
							if bl, ok := el.(*ast.BasicLit); ok && bl.Kind == token.STRING {
								s, _ := strconv.Unquote(bl.Value)
								inner = append(inner, s)
							} else {
								inner = append(inner, "")
							}
						}
						words = append(words, inner...)
						continue
					}
				}
			}
			words = append(words, "")
		}
		return words
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch v := n.(type) {
		case *ast.CallExpr:
			var name string
			switch fn := v.Fun.(type) {
			case *ast.SelectorExpr:
				name = fn.Sel.Name
			case *ast.Ident:
				name = fn.Name
			}
			if !execFuncs[name] {
				return true
			}
			args := v.Args
			if len(args) > 0 && isContext(args[0]) {
				args = args[1:]
			}
			add(v.Pos(), argvUses(literals(args))...)
		case *ast.AssignStmt: // argv := []string{"tcpdump", ...}
			for i, lhs := range v.Lhs {
				id, ok := lhs.(*ast.Ident)
				if !ok || i >= len(v.Rhs) || (id.Name != "argv" && id.Name != "cmdline") {
					continue
				}
				if cl, ok := v.Rhs[i].(*ast.CompositeLit); ok {
					add(cl.Pos(), argvUses(literals(cl.Elts))...)
				}
			}
		case *ast.RangeStmt:
			// for _, tool := range []string{...} { exec.LookPath(tool) }
			// for _, argv := range [][]string{{"ip", ...}, {"nft", ...}} { n.Exec(ctx, argv...) }
			cl, ok := v.X.(*ast.CompositeLit)
			val, _ := v.Value.(*ast.Ident)
			if !ok || val == nil {
				return true
			}
			lookup, run := false, false
			ast.Inspect(v.Body, func(n ast.Node) bool {
				c, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				s, ok := c.Fun.(*ast.SelectorExpr)
				if !ok || !execFuncs[s.Sel.Name] {
					return true
				}
				for _, a := range c.Args {
					if id, ok := a.(*ast.Ident); ok && id.Name == val.Name {
						lookup = lookup || s.Sel.Name == "LookPath"
						run = run || c.Ellipsis.IsValid()
					}
				}
				return true
			})
			for _, el := range cl.Elts {
				switch e := el.(type) {
				case *ast.BasicLit:
					if lookup {
						add(e.Pos(), argvUses(literals([]ast.Expr{e}))...)
					}
				case *ast.CompositeLit:
					if run {
						add(e.Pos(), argvUses(literals(e.Elts))...)
					}
				}
			}
		case *ast.BasicLit:
			if v.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(v.Value)
			if err != nil {
				return true
			}
			for _, m := range aptInstall.FindAllStringSubmatch(s, -1) {
				for _, p := range strings.Fields(strings.TrimRight(m[1], ")")) {
					if p != "-y" {
						add(v.Pos(), "package "+strings.TrimRight(p, ")"))
					}
				}
			}
		}
		return true
	})
	return out
}

// shellKeywords and shellBuiltins never name a command on PATH.
var shellKeywords = strings.Fields(`if then elif else fi case esac for select while until do done in function time ! { } [[ ]] coproc`)
var shellBuiltins = strings.Fields(`: . [ alias bg bind break builtin caller cd command compgen complete continue declare dirs disown echo enable eval exec exit export false fc fg getopts hash help history jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly return set shift shopt source suspend test times trap true type typeset ulimit umask unalias unset wait`)

var funcDef = regexp.MustCompile(`(?m)^\s*(?:function\s+)?([A-Za-z_][A-Za-z0-9_-]*)\s*\(\)`)

// shellFuncs are the functions a script defines.
func shellFuncs(src string) map[string]bool {
	m := map[string]bool{}
	for _, s := range funcDef.FindAllStringSubmatch(src, -1) {
		m[s[1]] = true
	}
	return m
}

// shellUses finds the commands a shell script runs: the words in command position (after a
// separator, an assignment or a keyword), the commands wrappers run, command -v's lookups,
// and the same inside $(...) and quoted strings' substitutions. Builtins that are also
// programs (echo, true, kill) count as the programs; functions the script (or lib) defines
// do not.
func shellUses(src, rel string, lib map[string]bool) []use {
	funcs := shellFuncs(src)
	for k := range lib {
		funcs[k] = true
	}
	toks := lexShell(src)
	var out []use
	isKeyword := map[string]bool{}
	for _, k := range shellKeywords {
		isKeyword[k] = true
	}
	isBuiltin := map[string]bool{}
	for _, b := range shellBuiltins {
		isBuiltin[b] = true
	}
	programs := map[string]bool{"echo": true, "true": true, "false": true, "kill": true, "printf": true, "test": true}
	assignment := regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=`)

	cmdPos := true
	casePattern := false
	skipUntil := ""
	inCase := 0
	type state struct {
		casePattern bool
		skipUntil   string
		inCase      int
	}
	var saved []state // outside each substitution we are in
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		if tk.op != "" {
			switch tk.op {
			case "$(": // a substitution is a command line of its own
				saved = append(saved, state{casePattern, skipUntil, inCase})
				casePattern, skipUntil, inCase, cmdPos = false, "", 0, true
				continue
			case ")$":
				if n := len(saved); n > 0 {
					casePattern, skipUntil, inCase = saved[n-1].casePattern, saved[n-1].skipUntil, saved[n-1].inCase
					saved = saved[:n-1]
				}
				cmdPos = false
				continue
			case ";;", ";&", ";;&":
				if inCase > 0 {
					casePattern = true
				}
			case ")":
				if casePattern {
					casePattern = false
				}
			}
			if tk.op == "<" || tk.op == ">" {
				i++ // the redirection's target
				continue
			}
			cmdPos = true
			continue
		}
		w := tk.word
		if skipUntil != "" {
			if w == skipUntil || (skipUntil == "]]" && w == "]") {
				skipUntil = ""
			}
			continue
		}
		if casePattern {
			if w == "esac" {
				casePattern = false
				inCase--
				cmdPos = false
			}
			continue
		}
		if !cmdPos {
			if w == "in" && i >= 2 && toks[i-2].word == "case" {
				casePattern = true
				inCase++
			}
			continue
		}
		switch {
		case w == "case":
			cmdPos = false
			continue
		case w == "for" || w == "select":
			skipUntil = "do"
			continue
		case w == "[[" || w == "[":
			skipUntil = map[string]string{"[[": "]]", "[": "]"}[w]
			continue
		case w == "esac":
			inCase--
			continue
		case tk.quoted:
			cmdPos = false // a command named by a variable or a path: not ours to check
			continue
		case isKeyword[w] || w == "" || assignment.MatchString(w):
			continue
		}
		if i+2 < len(toks) && toks[i+1].op == "(" && toks[i+2].op == ")" {
			i += 2 // a function definition
			continue
		}
		// A command: the word and, after a wrapper, the command it runs.
		var words []string
		for j := i; j < len(toks) && toks[j].op == ""; j++ {
			if toks[j].quoted {
				words = append(words, "")
			} else {
				words = append(words, toks[j].word)
			}
		}
		cmdPos = false
		if w == "command" && len(words) > 2 && words[1] == "-v" {
			if c := commandName(words[2]); c != "" && !funcs[c] {
				out = append(out, use{file: rel, line: tk.line, cmd: c})
			}
			continue
		}
		for _, c := range argvUses(words) {
			if funcs[c] || (isBuiltin[c] && !programs[c]) {
				continue
			}
			out = append(out, use{file: rel, line: tk.line, cmd: c})
		}
	}
	return out
}

// shellTok is a word (quoted when it began with a quote or $) or an operator.
type shellTok struct {
	word   string
	op     string
	quoted bool
	line   int
}

// lexShell splits a script into words and operators, dropping comments and here-document
// bodies and flattening command substitutions ($(...), `...`, <(...)) into the stream
// between separators, including those inside double quotes.
func lexShell(src string) []shellTok {
	var toks []shellTok
	line := 1
	var word strings.Builder
	quoted, inWord := false, false
	var heredocs []string
	flush := func() {
		if inWord {
			toks = append(toks, shellTok{word: word.String(), quoted: quoted, line: line})
		}
		word.Reset()
		quoted, inWord = false, false
	}
	op := func(o string) { flush(); toks = append(toks, shellTok{op: o, line: line}) }
	var sub func(i int, closer byte) int
	// sub lexes a substitution starting at src[i] up to its closer, as its own command.
	sub = func(i int, closer byte) int {
		end := matching(src, i, closer)
		saved := word.String()
		savedQ, savedIn := quoted, inWord
		word.Reset()
		quoted, inWord = false, false
		toks = append(toks, shellTok{op: "$(", line: line})
		toks = append(toks, lexShell(src[i:end])...)
		toks = append(toks, shellTok{op: ")$", line: line})
		word.WriteString(saved)
		quoted, inWord = savedQ, savedIn
		return end
	}
	for i := 0; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\\' && i+1 < len(src):
			if src[i+1] == '\n' {
				line++
			} else {
				word.WriteByte(src[i+1])
				inWord = true
			}
			i++
		case c == '\n':
			flush()
			toks = append(toks, shellTok{op: "\n", line: line})
			line++
			for _, delim := range heredocs { // skip the bodies
				for i+1 < len(src) {
					j := strings.IndexByte(src[i+1:], '\n')
					if j < 0 {
						j = len(src) - i - 1
					}
					l := src[i+1 : i+1+j]
					i += j + 1
					line++
					if strings.TrimSpace(l) == delim {
						break
					}
				}
			}
			heredocs = nil
		case c == '#' && !inWord:
			for i+1 < len(src) && src[i+1] != '\n' {
				i++
			}
		case c == '\'':
			j := strings.IndexByte(src[i+1:], '\'')
			if j < 0 {
				j = len(src) - i - 1
			}
			if !inWord {
				quoted = true
			}
			inWord = true
			word.WriteString(src[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			if !inWord {
				quoted = true
			}
			inWord = true
			for i++; i < len(src) && src[i] != '"'; i++ {
				switch {
				case src[i] == '\\':
					i++
				case src[i] == '$' && i+1 < len(src) && src[i+1] == '(' && !(i+2 < len(src) && src[i+2] == '('):
					i = sub(i+2, ')')
				case src[i] == '`':
					i = sub(i+1, '`')
				case src[i] == '\n':
					line++
				}
			}
		case c == '$' && i+1 < len(src) && src[i+1] == '(' && !(i+2 < len(src) && src[i+2] == '('):
			if !inWord {
				quoted = true // the word is the substitution's output, not a command name
			}
			inWord = true
			i = sub(i+2, ')')
		case c == '$' && i+1 < len(src) && (src[i+1] == '{' || src[i+1] == '('):
			end := matching(src, i+2, map[byte]byte{'{': '}', '(': ')'}[src[i+1]])
			if !inWord {
				quoted = true
			}
			inWord = true
			word.WriteString(src[i:min(end+1, len(src))])
			i = end
		case c == '`':
			i = sub(i+1, '`')
		case (c == '<' || c == '>') && i+1 < len(src) && src[i+1] == '(':
			flush()
			i = sub(i+2, ')')
		case c == '<' && strings.HasPrefix(src[i:], "<<") && !strings.HasPrefix(src[i:], "<<<"):
			flush()
			j := i + 2
			for j < len(src) && (src[j] == '-' || src[j] == ' ') {
				j++
			}
			k := j
			for k < len(src) && !strings.ContainsRune(" \t\n;|&)", rune(src[k])) {
				k++
			}
			heredocs = append(heredocs, strings.Trim(src[j:k], `'"`))
			i = k - 1
		case c == '<' || c == '>':
			// a redirection: >, >>, 2>&1, >&2, <<<; its target (if any) follows
			flushed := inWord && isDigits(word.String())
			if flushed {
				word.Reset()
				inWord = false
			}
			flush()
			j := i + 1
			for j < len(src) && (src[j] == '>' || src[j] == '<' || src[j] == '&' || src[j] == '|') {
				j++
			}
			for j < len(src) && src[j] >= '0' && src[j] <= '9' {
				j++
			}
			if strings.HasSuffix(src[i:j], "&") || (j > i+1 && src[j-1] >= '0' && src[j-1] <= '9' && strings.Contains(src[i:j], "&")) {
				i = j - 1 // 2>&1, >&2: no target word
				continue
			}
			toks = append(toks, shellTok{op: string(c), line: line})
			i = j - 1
		case c == ' ' || c == '\t':
			flush()
		case strings.HasPrefix(src[i:], ";;&"):
			op(";;&")
			i += 2
		case strings.HasPrefix(src[i:], ";;"), strings.HasPrefix(src[i:], "&&"), strings.HasPrefix(src[i:], "||"):
			op(src[i : i+2])
			i++
		case c == ';' || c == '|' || c == '&' || c == ')':
			op(string(c))
		case c == '(':
			if inWord && strings.HasSuffix(word.String(), "=") { // arr=( ... )
				end := matching(src, i+1, ')')
				word.WriteString(src[i:min(end+1, len(src))])
				for _, r := range src[i:min(end+1, len(src))] {
					if r == '\n' {
						line++
					}
				}
				i = end
				continue
			}
			op("(")
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	flush()
	return toks
}

// matching is the index of the closer that ends the construct opened just before src[i],
// skipping quotes and nested parentheses.
func matching(src string, i int, closer byte) int {
	depth := 0
	for ; i < len(src); i++ {
		c := src[i]
		switch {
		case c == '\\':
			i++
		case c == '#' && (i == 0 || src[i-1] == ' ' || src[i-1] == '\t' || src[i-1] == '\n'):
			if j := strings.IndexByte(src[i:], '\n'); j >= 0 {
				i += j
			} else {
				i = len(src) - 1
			}
		case c == '\'' && closer != '`':
			if j := strings.IndexByte(src[i+1:], '\''); j >= 0 {
				i += j + 1
			}
		case c == '"' && closer != '"':
			for i++; i < len(src) && src[i] != '"'; i++ {
				if src[i] == '\\' {
					i++
				}
			}
		case c == closer && depth == 0:
			return i
		case c == '(' && closer == ')', c == '{' && closer == '}':
			depth++
		case c == ')' && closer == ')', c == '}' && closer == '}':
			depth--
		}
	}
	return len(src)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
