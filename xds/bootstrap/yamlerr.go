package bootstrap

import (
	"errors"
	"regexp"
	"strconv"

	yamlv2 "go.yaml.in/yaml/v2"
)

// The YAML library under sigs.k8s.io/yaml (go.yaml.in/yaml/v2) numbers the
// lines of parser errors from 0 but those of scanner errors from 1, and
// leaves the line out of a parser error on the first line. yamlError makes
// every syntax error say "yaml: line N: ..." with N counted from 1. The
// problem texts below are the parser's own (parserc.go); none is also a
// scanner text. TestYAMLLineNumbers pins the behaviour.
var parserProblems = map[string]bool{
	"did not find expected ',' or ']'":       true,
	"did not find expected ',' or '}'":       true,
	"did not find expected '-' indicator":    true,
	"did not find expected <document start>": true,
	"did not find expected <stream-start>":   true,
	"did not find expected key":              true,
	"did not find expected node content":     true,
	"found duplicate %TAG directive":         true,
	"found duplicate %YAML directive":        true,
	"found incompatible YAML document":       true,
	"found undefined tag handle":             true,
}

var yamlErrorText = regexp.MustCompile(`^yaml: (?:line ([0-9]+): )?(.*)$`)

// yamlError rewrites a YAML syntax or duplicate-key error as described
// above; other errors are returned unchanged.
func yamlError(err error) error {
	var te *yamlv2.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return errors.New("yaml: " + te.Errors[0]) // "line N: key "x" already set in map"
	}
	m := yamlErrorText.FindStringSubmatch(err.Error())
	if m == nil || !parserProblems[m[2]] {
		return err
	}
	line := 1
	if m[1] != "" {
		n, _ := strconv.Atoi(m[1])
		line = n + 1
	}
	return errors.New("yaml: line " + strconv.Itoa(line) + ": " + m[2])
}
