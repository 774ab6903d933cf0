package format

import (
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"strings"
)

type kind uint8

const (
	kindLiteral kind = iota
	kindRemoteAddress
	kindRemoteAddressNoPort
	kindRemotePort
	kindLocalAddress
	kindLocalAddressNoPort
	kindLocalPort
	kindProtocol
	kindServerName
	kindUpstreamAddress
	kindHostname
	kindStartTime
	kindRequestHeader
	kindDynamicMetadata
	kindFilterState
)

// segment is a literal or one command.
type segment struct {
	kind      kind
	text      string     // literal text; HOSTNAME's value; DYNAMIC_METADATA's namespace
	path      []string   // DYNAMIC_METADATA: the keys below the namespace
	main, alt headerName // REQ; alt only when hasAlt
	hasAlt    bool
	maxLen    int // -1 when no :N suffix
}

// headerName is a header named by %REQ()%, resolved at parse time.
type headerName struct {
	pseudo string // ":method", ":authority", ":path" or ":scheme"; "" for an ordinary header
	key    string // canonical key of an ordinary header
}

func newHeaderName(name string) headerName {
	switch l := strings.ToLower(name); l {
	case ":method", ":authority", ":path", ":scheme":
		return headerName{pseudo: l}
	}
	return headerName{key: textproto.CanonicalMIMEHeaderKey(name)}
}

// commandSpec is what a command accepts after its name, as Envoy's
// CommandSyntaxChecker flags.
type commandSpec struct {
	kind     kind
	lengthOK bool
	// parseArgs reads the parameters, "" when there are none; nil for a
	// command that takes none.
	parseArgs func(seg *segment, arg string) error
}

// AllCommands lists every command this package evaluates, in the order
// errors list them.
var AllCommands = []string{
	"DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_REMOTE_PORT",
	"DOWNSTREAM_LOCAL_ADDRESS", "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_LOCAL_PORT",
	"PROTOCOL", "REQUESTED_SERVER_NAME", "UPSTREAM_REMOTE_ADDRESS", "HOSTNAME", "START_TIME",
	"REQ", "DYNAMIC_METADATA", "FILTER_STATE",
}

var commands = map[string]commandSpec{
	"DOWNSTREAM_REMOTE_ADDRESS":              {kind: kindRemoteAddress},
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": {kind: kindRemoteAddressNoPort},
	"DOWNSTREAM_REMOTE_PORT":                 {kind: kindRemotePort},
	"DOWNSTREAM_LOCAL_ADDRESS":               {kind: kindLocalAddress},
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":  {kind: kindLocalAddressNoPort},
	"DOWNSTREAM_LOCAL_PORT":                  {kind: kindLocalPort},
	"PROTOCOL":                               {kind: kindProtocol},
	"REQUESTED_SERVER_NAME":                  {kind: kindServerName},
	"UPSTREAM_REMOTE_ADDRESS":                {kind: kindUpstreamAddress},
	"HOSTNAME":                               {kind: kindHostname},
	"START_TIME":                             {kind: kindStartTime, parseArgs: parseStartTime},
	"REQ":                                    {kind: kindRequestHeader, lengthOK: true, parseArgs: parseReq},
	"DYNAMIC_METADATA":                       {kind: kindDynamicMetadata, lengthOK: true, parseArgs: parseMetadata},
	"FILTER_STATE":                           {kind: kindFilterState, lengthOK: true, parseArgs: parseFilterState},
}

// commandKinds maps a name to its kind, for Uses.
var commandKinds = func() map[string]kind {
	m := make(map[string]kind, len(commands))
	for n, c := range commands {
		m[n] = c.kind
	}
	return m
}()

// newSegment checks cmd against the command's syntax and the caller's
// command set.
func newSegment(cmd command, allowed []string) (segment, error) {
	spec, known := commands[cmd.name]
	if allowed == nil {
		allowed = AllCommands
	}
	if !known || !contains(allowed, cmd.name) {
		return segment{}, fmt.Errorf("unsupported command %s (supported: %s)", cmd.name, strings.Join(allowed, ", "))
	}
	switch {
	case spec.parseArgs == nil && cmd.hasArg:
		return segment{}, fmt.Errorf("command %s does not take parameters", cmd.name)
	case !spec.lengthOK && cmd.maxLen >= 0:
		return segment{}, fmt.Errorf("command %s does not take a length", cmd.name)
	}
	seg := segment{kind: spec.kind, maxLen: cmd.maxLen}
	if spec.kind == kindHostname {
		// Resolved once, as Envoy's HOSTNAME formatter does; a failure
		// leaves the value absent.
		if h, err := os.Hostname(); err == nil {
			seg.text = h
		}
	}
	if spec.parseArgs != nil {
		if err := spec.parseArgs(&seg, cmd.arg); err != nil {
			return segment{}, err
		}
	}
	return seg, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseReq reads REQ's "main?alt".
func parseReq(seg *segment, arg string) error {
	if arg == "" {
		return errors.New("command REQ requires a header name")
	}
	mainName, altName, hasAlt := strings.Cut(arg, "?")
	if strings.Contains(altName, "?") {
		return fmt.Errorf("more than 1 alternative header specified in %q", arg)
	}
	if mainName == "" || (hasAlt && altName == "") {
		return fmt.Errorf("empty header name in %q", arg)
	}
	seg.main, seg.hasAlt = newHeaderName(mainName), hasAlt
	if hasAlt {
		seg.alt = newHeaderName(altName)
	}
	return nil
}

// parseMetadata reads DYNAMIC_METADATA's "namespace:key:...".
func parseMetadata(seg *segment, arg string) error {
	parts := strings.Split(arg, ":")
	if parts[0] == "" {
		return errors.New("command DYNAMIC_METADATA requires a metadata namespace")
	}
	seg.text, seg.path = parts[0], parts[1:]
	return nil
}

// parseFilterState checks FILTER_STATE's "key[:PLAIN|TYPED|FIELD:name]",
// as Envoy's FilterStateFormatter does.
func parseFilterState(seg *segment, arg string) error {
	key, rest, _ := strings.Cut(arg, ":")
	if key == "" {
		return errors.New("invalid filter state configuration, key cannot be empty")
	}
	if rest == "" {
		return nil
	}
	mode, field, _ := strings.Cut(rest, ":")
	switch mode {
	case "PLAIN", "TYPED":
		return nil
	case "FIELD":
		if field == "" {
			return errors.New("invalid filter state configuration, field name cannot be empty")
		}
		return nil
	}
	return errors.New("invalid filter state serialize type, only support PLAIN/TYPED/FIELD")
}

// parseStartTime accepts START_TIME without a format only.
func parseStartTime(seg *segment, arg string) error {
	if arg != "" {
		return fmt.Errorf("command START_TIME with a format (%q) is not supported", arg)
	}
	return nil
}
