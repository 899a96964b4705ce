package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// knownKeys lists every leaf key of the file format, from the raw structs'
// toml tags.
func knownKeys() []string {
	var keys []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				walk(ft)
				continue
			}
			keys = append(keys, tag)
		}
	}
	walk(reflect.TypeOf(rawConfig{}))
	return keys
}

// relayd.toml(5) documents every key, as the example file does.
func TestManPageDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../packaging/man/relayd.toml.5.scd")
	if err != nil {
		t.Fatal(err)
	}
	man := strings.ReplaceAll(string(b), `\_`, "_")
	for _, k := range knownKeys() {
		if !strings.Contains(man, "*"+k+"* = ") {
			t.Errorf("relayd.toml(5) does not document %q", k)
		}
	}
}
