package backend

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Launch is how to start one backend: the command line, extra
// environment, the health path to poll, and files to write before start
// (name → content, relative to the run's directory; argv refers to them
// by that name).
type Launch struct {
	Argv   []string
	Env    []string
	Health string
	Files  map[string][]byte
}

// String renders the launch as a shell-like line (for logs and `lem
// config show`), secrets in the environment redacted.
func (l Launch) String() string {
	var b strings.Builder
	for _, e := range l.Env {
		k, v, _ := strings.Cut(e, "=")
		b.WriteString(k + "=" + RedactValue(k, v) + " ")
	}
	for i, a := range l.Argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t'\"{}$") {
			b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
		} else {
			b.WriteString(a)
		}
	}
	return b.String()
}

// secretKey matches names whose values are secrets (HF_TOKEN,
// AWS_SECRET_ACCESS_KEY, *_PASSWORD, API keys).
var secretKey = regexp.MustCompile(`(?i)(token|secret|password|passwd|api[_-]?key|credential|private[_-]?key)`)

// RedactValue returns v, or "<redacted>" when name says it holds a secret.
func RedactValue(name, v string) string {
	if v != "" && secretKey.MatchString(name) {
		return "<redacted>"
	}
	return v
}

// Redacted returns a copy of c whose secret environment values are
// replaced: what logs, `lem config show` and the stored run configuration
// see. The launch itself uses c.
func (c Config) Redacted() Config {
	if len(c.Env) == 0 {
		return c
	}
	env := make(map[string]string, len(c.Env))
	for k, v := range c.Env {
		env[k] = RedactValue(k, v)
	}
	c.Env = env
	return c
}

// Command builds the launch of a normalised, valid configuration. The
// Python server of kind pytorch is referred to as pyServer (a path written
// by the caller).
func Command(c *Config, pyServer string) (Launch, error) {
	pl := plugins[c.Kind]
	if pl == nil {
		return Launch{}, fmt.Errorf("backend.kind: unknown %q", c.Kind)
	}
	if pl.Args == nil {
		return Launch{}, fmt.Errorf("backend kind %s is attached to, not launched", c.Kind)
	}
	a := &Argv{dtypes: pl.Dtypes, kind: c.Kind}
	if err := pl.Args(a, c, pyServer); err != nil {
		return Launch{}, err
	}
	argv := a.a
	if len(c.Command) > 0 {
		// Replace the executable (its first ExeArgs elements: "python3 -m
		// sglang.launch_server" counts as one executable).
		skip := max(pl.ExeArgs, 1)
		argv = append(append([]string{}, c.Command...), argv[skip:]...)
	}
	l := Launch{Health: "/health", Argv: append(argv, c.ExtraArgs...), Files: a.files}
	if p := c.Parallelism; len(p.Devices) > 0 {
		ds := make([]string, len(p.Devices))
		for i, d := range p.Devices {
			ds[i] = strconv.Itoa(d)
		}
		l.Env = append(l.Env, "CUDA_VISIBLE_DEVICES="+strings.Join(ds, ","))
	}
	keys := make([]string, 0, len(c.Env))
	for k := range c.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		l.Env = append(l.Env, k+"="+c.Env[k])
	}
	return l, nil
}
