package credentials

import "strings"

// MaxUsernameLen is the longest accepted username (an RFC 5321 local part).
const MaxUsernameLen = 64

// usernameRule is the message for every malformed username; it never echoes
// the submitted value.
const usernameRule = "The username must be 1-64 characters of letters, digits, '.', '_', '+' or '-', start and end with a letter or digit, and not contain '..'."

// NormalizeUsername checks a username against the rules and returns it
// lowercased. ok is false when the username breaks a rule. The rules also keep
// ':', '#', whitespace and newlines out of the colon-separated password files
// that SMTP servers read.
func NormalizeUsername(s string) (string, bool) {
	if len(s) == 0 || len(s) > MaxUsernameLen {
		return "", false
	}
	if !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isAlnum(c), c == '_', c == '+', c == '-':
		case c == '.':
			if s[i+1] == '.' { // s never ends with '.', so i+1 is in range
				return "", false
			}
		default:
			return "", false
		}
	}
	return strings.ToLower(s), true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
