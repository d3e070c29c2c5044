// helm-render renders a Helm chart's templates with Go's text/template, the
// template engine Helm itself is built on, plus the few Helm/sprig template
// functions the Castellan chart uses, implemented here with Helm's meaning.
// No helm binary can be installed on the project's machines (no registry
// ships one), and no JavaScript Go-template implementation covers include,
// pipelines and whitespace trimming faithfully; Go itself comes from Debian
// (golang-go, already installed for the interop tests).
//
// What is reproduced from Helm's engine (pkg/engine): every file under
// templates/ is one named template "<chart>/templates/<file>", all sharing one
// set of definitions; files whose name starts with "_" are only definitions;
// NOTES.txt is not a manifest; missing keys render as empty
// (missingkey=zero, then "<no value>" removed); the data is .Values,
// .Release, .Chart and .Template.
//
// Functions: include, nindent, indent, quote, default, toYaml. A template
// that calls any other function fails to parse here, so the chart cannot
// drift into functions this renderer does not have. toYaml emits block YAML
// that parses to the same data as Helm's (sigs.k8s.io/yaml); the tests
// compare parsed objects, not text.
//
// Input (stdin, JSON): {"chartDir", "values", "release", "chart"}.
// Output (stdout, JSON): {"<chart>/templates/<file>": "<rendered text>"}.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

type input struct {
	ChartDir string                 `json:"chartDir"`
	Values   map[string]interface{} `json:"values"`
	Release  map[string]interface{} `json:"release"`
	Chart    map[string]interface{} `json:"chart"`
}

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	var in input
	if err := json.Unmarshal(raw, &in); err != nil {
		fail(err)
	}
	name, _ := in.Chart["Name"].(string)
	if name == "" {
		fail(fmt.Errorf("chart has no name"))
	}
	files, err := filepath.Glob(filepath.Join(in.ChartDir, "templates", "*"))
	if err != nil {
		fail(err)
	}
	sort.Strings(files)

	t := template.New("gotpl")
	t.Option("missingkey=zero")
	funcs := template.FuncMap{
		"nindent": func(n int, s string) string { return "\n" + indent(n, s) },
		"indent":  indent,
		"quote":   quote,
		"default": dfault,
		"toYaml":  toYaml,
		// Replaced below by one that sees the parsed templates.
		"include": func(string, interface{}) (string, error) { return "", nil },
	}
	t.Funcs(funcs)
	t.Funcs(template.FuncMap{"include": func(n string, data interface{}) (string, error) {
		var b strings.Builder
		if err := t.ExecuteTemplate(&b, n, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}})
	var manifests []string
	for _, f := range files {
		base := filepath.Base(f)
		text, err := os.ReadFile(f)
		if err != nil {
			fail(err)
		}
		tname := name + "/templates/" + base
		if _, err := t.New(tname).Parse(string(text)); err != nil {
			fail(err)
		}
		if !strings.HasPrefix(base, "_") && base != "NOTES.txt" {
			manifests = append(manifests, tname)
		}
	}
	out := map[string]string{}
	for _, tname := range manifests {
		data := map[string]interface{}{
			"Values":   in.Values,
			"Release":  in.Release,
			"Chart":    in.Chart,
			"Template": map[string]interface{}{"Name": tname, "BasePath": name + "/templates"},
		}
		var b bytes.Buffer
		if err := t.ExecuteTemplate(&b, tname, data); err != nil {
			fail(err)
		}
		out[tname] = strings.ReplaceAll(b.String(), "<no value>", "")
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "helm-render:", err)
	os.Exit(1)
}

// indent: sprig's, every line prefixed with n spaces.
func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// quote: sprig's, each non-nil argument as a Go double-quoted string.
func quote(args ...interface{}) string {
	parts := []string{}
	for _, a := range args {
		if a != nil {
			parts = append(parts, fmt.Sprintf("%q", strval(a)))
		}
	}
	return strings.Join(parts, " ")
}

func strval(v interface{}) string {
	switch s := v.(type) {
	case string:
		return s
	case []byte:
		return string(s)
	case fmt.Stringer:
		return s.String()
	default:
		return fmt.Sprintf("%v", v)
	}
}

// dfault: sprig's default, the given value unless it is empty.
func dfault(d interface{}, given ...interface{}) interface{} {
	if len(given) == 0 || empty(given[0]) {
		return d
	}
	return given[0]
}

func empty(v interface{}) bool {
	rv := reflect.ValueOf(v)
	if !rv.IsValid() {
		return true
	}
	switch rv.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return rv.Len() == 0
	case reflect.Bool:
		return !rv.Bool()
	case reflect.Float32, reflect.Float64:
		return rv.Float() == 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int() == 0
	case reflect.Ptr, reflect.Interface:
		return rv.IsNil()
	}
	return false
}

// toYaml: block YAML of the data, without the final newline (as Helm's).
func toYaml(v interface{}) string {
	var b strings.Builder
	emit(&b, v, 0)
	return strings.TrimSuffix(b.String(), "\n")
}

func emit(b *strings.Builder, v interface{}, ind int) {
	pad := strings.Repeat(" ", ind)
	switch x := v.(type) {
	case map[string]interface{}:
		if len(x) == 0 {
			b.WriteString(pad + "{}\n")
			return
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(pad + scalar(k) + ":")
			emitValue(b, x[k], ind, true)
		}
	case []interface{}:
		if len(x) == 0 {
			b.WriteString(pad + "[]\n")
			return
		}
		for _, item := range x {
			b.WriteString(pad + "-")
			emitValue(b, item, ind, false)
		}
	default:
		b.WriteString(pad + scalar(v) + "\n")
	}
}

// emitValue writes what follows "key:" or "-": scalars and empty collections
// inline; a map on the next lines (or, after "-", starting on the same line);
// a list under a key at the key's own indentation, as go-yaml does.
func emitValue(b *strings.Builder, v interface{}, ind int, underKey bool) {
	switch x := v.(type) {
	case map[string]interface{}:
		if len(x) == 0 {
			b.WriteString(" {}\n")
			return
		}
		if underKey {
			b.WriteString("\n")
			emit(b, x, ind+2)
			return
		}
		var inner strings.Builder
		emit(&inner, x, ind+2)
		b.WriteString(" " + strings.TrimPrefix(inner.String(), strings.Repeat(" ", ind+2)))
	case []interface{}:
		if len(x) == 0 {
			b.WriteString(" []\n")
			return
		}
		b.WriteString("\n")
		if underKey {
			emit(b, x, ind)
		} else {
			emit(b, x, ind+2)
		}
	default:
		b.WriteString(" " + scalar(v) + "\n")
	}
}

// scalar: plain when YAML (1.1 or 1.2) reads it back as the same string,
// otherwise double-quoted.
func scalar(v interface{}) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case float64:
		if x == float64(int64(x)) {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case string:
		if plainSafe(x) {
			return x
		}
		return strconv.Quote(x)
	default:
		return strconv.Quote(fmt.Sprintf("%v", x))
	}
}

func plainSafe(s string) bool {
	if s == "" {
		return false
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~":
		return false
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_' || r == '/' || (i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.'))
		if !ok {
			return false
		}
	}
	return true
}
