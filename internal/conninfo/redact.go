package conninfo

import (
	"regexp"
	"strings"
	"sync"
)

// secrets holds every password the process has parsed, so that Redact can
// scrub them from any text, whatever produced it (server errors can echo
// connection strings back).
var secrets struct {
	sync.RWMutex
	values []string
}

// Register adds a secret that Redact must remove from output. Empty and very
// short values are ignored: masking every "a" would ruin output and protect
// nothing.
func Register(secret string) {
	if len(secret) < 3 {
		return
	}
	secrets.Lock()
	defer secrets.Unlock()
	for _, s := range secrets.values {
		if s == secret {
			return
		}
	}
	secrets.values = append(secrets.values, secret)
}

var (
	urlPassword = regexp.MustCompile(`(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@`)
	kvPassword  = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)
)

// Mask replaces a password wherever it appears.
const Mask = "xxxxx"

// Redact removes passwords from text: those in URLs and password= settings,
// and every registered secret.
func Redact(text string) string {
	text = urlPassword.ReplaceAllString(text, "${1}"+Mask+"@")
	text = kvPassword.ReplaceAllString(text, "${1}"+Mask)
	secrets.RLock()
	defer secrets.RUnlock()
	for _, s := range secrets.values {
		text = strings.ReplaceAll(text, s, Mask)
	}
	return text
}
