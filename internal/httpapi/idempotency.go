package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"

	"github.com/smtpcreds/smtpcreds/internal/idempotency"
)

// stored is a response of a request with an Idempotency-Key, sent as its
// bytes: the first time as the service stored them, and on a replay as
// they were stored (byte for byte, so the encoding is the generated
// code's: json.Encoder, which ends with a newline).
type stored struct {
	r        idempotency.Response
	replayed bool
	noStore  bool // the body holds a secret
}

func (s stored) visit(w http.ResponseWriter) error {
	w.Header().Set("Content-Type", "application/json")
	if s.noStore {
		w.Header().Set("Cache-Control", noStore)
	}
	if s.replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.WriteHeader(s.r.Status)
	_, err := w.Write(s.r.Body)
	return err
}

func (s stored) VisitCreateCredentialResponse(w http.ResponseWriter) error        { return s.visit(w) }
func (s stored) VisitResetCredentialPasswordResponse(w http.ResponseWriter) error { return s.visit(w) }
func (s stored) VisitCreateDomainResponse(w http.ResponseWriter) error            { return s.visit(w) }

// encoded is the response of status with body as the generated code sends it.
func encoded(status int, body any) (idempotency.Response, error) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(body); err != nil {
		return idempotency.Response{}, err
	}
	return idempotency.Response{Status: status, Body: buf.Bytes()}, nil
}
