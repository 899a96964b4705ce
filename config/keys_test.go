package config

import (
	"reflect"
	"strings"
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
