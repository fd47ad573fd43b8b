package schemas

import (
	"embed"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

//go:embed clickhouse/*.sql
var migrationFS embed.FS

// ServerVersion is a ClickHouse server version (major.minor).
type ServerVersion struct{ Major, Minor int }

// ParseServerVersion parses "18.16.1" or "24.8.4.13".
func ParseServerVersion(s string) (ServerVersion, error) {
	parts := strings.SplitN(strings.TrimSpace(s), ".", 3)
	if len(parts) < 2 {
		return ServerVersion{}, fmt.Errorf("parsing server version %q: want major.minor", s)
	}
	maj, err1 := strconv.Atoi(parts[0])
	min, err2 := strconv.Atoi(parts[1])
	if err1 != nil || err2 != nil {
		return ServerVersion{}, fmt.Errorf("parsing server version %q: not numeric", s)
	}
	return ServerVersion{maj, min}, nil
}

// AtLeast reports whether v >= o.
func (v ServerVersion) AtLeast(o ServerVersion) bool {
	return v.Major > o.Major || (v.Major == o.Major && v.Minor >= o.Minor)
}

func (v ServerVersion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Migration is one numbered, additive schema change.
type Migration struct {
	ID         int
	Name       string
	MinServer  ServerVersion
	Statements []string // with {db} still in place; see Render
}

// Render returns the statements with the database substituted.
func (m Migration) Render(db string) ([]string, error) {
	if err := CheckIdentifier(db); err != nil {
		return nil, err
	}
	out := make([]string, len(m.Statements))
	for i, s := range m.Statements {
		out[i] = strings.ReplaceAll(s, "{db}", db)
	}
	return out, nil
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// CheckIdentifier rejects anything but a plain SQL identifier, so that
// database and cluster names can be placed into DDL safely.
func CheckIdentifier(s string) error {
	if !identRE.MatchString(s) {
		return fmt.Errorf("invalid identifier %q: want letters, digits and '_' (at most 64), not starting with a digit", s)
	}
	return nil
}

var fileRE = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Migrations returns every embedded migration in order.
func Migrations() ([]Migration, error) {
	entries, err := migrationFS.ReadDir("clickhouse")
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		m := fileRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name must be NNNN_name.sql", e.Name())
		}
		body, err := migrationFS.ReadFile("clickhouse/" + e.Name())
		if err != nil {
			return nil, err
		}
		mig, err := parseMigration(string(body))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", e.Name(), err)
		}
		mig.ID, _ = strconv.Atoi(m[1])
		mig.Name = m[2]
		ms = append(ms, mig)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	for i := 1; i < len(ms); i++ {
		if ms[i].ID == ms[i-1].ID {
			return nil, fmt.Errorf("two migrations numbered %d", ms[i].ID)
		}
	}
	return ms, nil
}

func parseMigration(body string) (Migration, error) {
	var mig Migration
	var stmt strings.Builder
	haveMin := false
	for _, line := range strings.Split(body, "\n") {
		t := strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(t, "-- lem:min-server "); ok {
			sv, err := ParseServerVersion(v)
			if err != nil {
				return mig, err
			}
			mig.MinServer, haveMin = sv, true
			continue
		}
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		stmt.WriteString(line)
		stmt.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			s := strings.TrimSuffix(strings.TrimSpace(stmt.String()), ";")
			mig.Statements = append(mig.Statements, s)
			stmt.Reset()
		}
	}
	if strings.TrimSpace(stmt.String()) != "" {
		return mig, fmt.Errorf("statement without terminating ';'")
	}
	if !haveMin {
		return mig, fmt.Errorf("missing '-- lem:min-server X.Y' line")
	}
	if len(mig.Statements) == 0 {
		return mig, fmt.Errorf("no statements")
	}
	return mig, nil
}
