package config

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// qualifiedKeys lists every key of the file format as TABLE.KEY ("" for
// the top level, "account" for [[account]]), from the raw structs' toml
// tags.
func qualifiedKeys() []string {
	var keys []string
	var walk func(t reflect.Type, table string)
	walk = func(t reflect.Type, table string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			ft := f.Type
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if f.Anonymous { // its keys are the table's own
					walk(ft, table)
					continue
				}
				walk(ft, tag)
				continue
			}
			keys = append(keys, table+"."+tag)
		}
	}
	walk(reflect.TypeOf(rawConfig{}), "")
	slices.Sort(keys)
	return keys
}

// topLevelAliases are keys accepted at the top level for compatibility and
// documented with their table's key.
var topLevelAliases = map[string]string{".on_state_change": "health.on_state_change"}

// documented maps TABLE.KEY to the value a document shows for it.
type documented map[string]string

// exampleKeys reads config.example.toml: each key, set or commented out,
// under the table it stands in; the first [[account]] shows every account
// key.
func exampleKeys(t *testing.T) documented {
	t.Helper()
	b, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^#? ?([a-z0-9_]+) = (.*)$`)
	table := regexp.MustCompile(`^\[\[?([a-z0-9_]+)\]\]?$`)
	doc, cur := documented{}, ""
	for sc := bufio.NewScanner(strings.NewReader(string(b))); sc.Scan(); {
		line := sc.Text()
		if m := table.FindStringSubmatch(line); m != nil {
			cur = m[1]
		} else if m := keyLine.FindStringSubmatch(line); m != nil {
			k := cur + "." + m[1]
			if _, dup := doc[k]; !dup {
				doc[k] = strings.TrimSpace(m[2])
			}
		}
	}
	return doc
}

// manTables maps relayd.toml(5)'s section headings to tables.
var manTables = map[string]string{
	"TOP-LEVEL KEYS": "", "LOG TABLE": "log", "IMAP TABLE": "imap", "POP3 TABLE": "pop3", "SMTP TABLE": "smtp",
	"LOGIN TABLE": "login", "QUEUE TABLE": "queue", "HEALTH TABLE": "health",
	"METRICS TABLE": "metrics", "WEB TABLE": "web", "SENDMAIL TABLE": "sendmail", "ACCOUNT (once per mailbox)": "account",
}

// manKeys reads relayd.toml(5): each "*key* = value" entry of a table's
// section, with its description.
func manKeys(t *testing.T) (doc, desc documented) {
	t.Helper()
	b, err := os.ReadFile("../packaging/man/relayd.toml.5.scd")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(b), `\_`, "_")
	entry := regexp.MustCompile(`^\*([a-z0-9_]+)\* = (.*)$`)
	doc, desc = documented{}, documented{}
	cur, in, last := "", false, ""
	for sc := bufio.NewScanner(strings.NewReader(text)); sc.Scan(); {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "# "); ok {
			cur, in = manTables[h]
			last = ""
			continue
		}
		if !in {
			continue
		}
		if m := entry.FindStringSubmatch(line); m != nil {
			last = cur + "." + m[1]
			doc[last] = strings.TrimSpace(m[2])
		} else if strings.HasPrefix(line, "\t") && last != "" {
			desc[last] += strings.TrimSpace(line) + " "
		}
	}
	return doc, desc
}

// readmeKeys reads the README's configuration reference: a table per
// "#### [table]" heading, each row "| `key` | default | meaning |"; the
// default is a `value`, or words when there is no single one.
func readmeKeys(t *testing.T) (doc, defaults documented) {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, ref, ok := strings.Cut(string(b), "\n### Configuration reference\n")
	if !ok {
		t.Fatal("README.md has no \"### Configuration reference\" section")
	}
	if i := regexp.MustCompile(`\n##?#? `).FindStringIndex(ref); i != nil {
		ref = ref[:i[0]]
	}
	heading := regexp.MustCompile("^#### (?:Top level|`\\[\\[?([a-z0-9_]+)\\]\\]?`)")
	row := regexp.MustCompile("^\\| `([a-z0-9_]+)` \\| ([^|]*) \\|")
	doc, defaults = documented{}, documented{}
	cur := ""
	for sc := bufio.NewScanner(strings.NewReader(ref)); sc.Scan(); {
		line := sc.Text()
		if m := heading.FindStringSubmatch(line); m != nil {
			cur = m[1]
		} else if m := row.FindStringSubmatch(line); m != nil {
			k, d := cur+"."+m[1], strings.TrimSpace(m[2])
			doc[k] = d
			if v, ok := strings.CutPrefix(d, "`"); ok && strings.HasSuffix(v, "`") && strings.Count(d, "`") == 2 {
				defaults[k] = strings.TrimSuffix(v, "`")
			}
		}
	}
	return doc, defaults
}

// The README (shipped in /usr/share/doc/relayd), relayd.toml(5) and
// config.example.toml document the same keys, in the same tables; the man
// page and the example show the same value for each key, and a default the
// README gives is the value both show. No man page entry defers to another
// document.
func TestDocsAgreeOnKeys(t *testing.T) {
	want := map[string]bool{}
	for _, k := range qualifiedKeys() {
		if alias, ok := topLevelAliases[k]; ok {
			k = alias
		}
		want[k] = true
	}
	example := exampleKeys(t)
	man, desc := manKeys(t)
	readme, defaults := readmeKeys(t)
	for name, doc := range map[string]documented{"config.example.toml": example, "relayd.toml(5)": man, "README.md": readme} {
		for k := range want {
			if _, ok := doc[k]; !ok {
				t.Errorf("%s does not document %s", name, k)
			}
		}
		for k := range doc {
			if !want[k] {
				t.Errorf("%s documents %s, which is no key of the file format (config/raw.go)", name, k)
			}
		}
	}
	for k, v := range man {
		if ev, ok := example[k]; ok && ev != v {
			t.Errorf("%s: relayd.toml(5) shows %s, config.example.toml %s", k, v, ev)
		}
		if strings.Contains(desc[k], "example file") && !strings.Contains(desc[k], "placeholder") || len(desc[k]) < 20 {
			t.Errorf("%s: relayd.toml(5) does not describe it: %q", k, desc[k])
		}
	}
	for k, d := range defaults {
		if mv, ok := man[k]; ok && mv != d {
			t.Errorf("%s: the README gives the default %s, relayd.toml(5) shows %s", k, d, mv)
		}
	}
}

// The EXAMPLES of relayd.toml(5) are whole configurations that parse once
// the placeholders a reader fills in are filled in.
func TestManPageExamplesParse(t *testing.T) {
	b, err := os.ReadFile("../packaging/man/relayd.toml.5.scd")
	if err != nil {
		t.Fatal(err)
	}
	_, ex, ok := strings.Cut(string(b), "\n# EXAMPLES\n")
	if !ok {
		t.Fatal("relayd.toml(5) has no EXAMPLES section")
	}
	ex, _, _ = strings.Cut(ex, "\n# ")
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	n := 0
	for _, block := range regexp.MustCompile("(?s)```\n(.*?)```").FindAllStringSubmatch(ex, -1) {
		text := block[1]
		if !strings.Contains(text, "[[account]]") {
			continue
		}
		n++
		text = strings.ReplaceAll(text, `"$2a$10$..."`, `"`+string(hash)+`"`)
		if _, err := Parse(text); err != nil {
			t.Errorf("relayd.toml(5) example does not parse: %v\n%s", err, text)
		}
	}
	if n < 4 {
		t.Errorf("relayd.toml(5) has %d configuration examples, want at least 4 (shared mailbox, Gmail, app-only, Graph with a fallback)", n)
	}
}
