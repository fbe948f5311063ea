package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is one fixed-duration run of API creates.
type loadResult struct {
	Concurrency int
	Duration    time.Duration
	Requests    int
	Errors      int
	FirstError  string
	RPS         float64
	P50, P95    time.Duration
	P99         time.Duration
	CPUPer1000  float64 // server CPU seconds per 1000 requests
	PeakRSSMB   float64
}

func newClient(conc int) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        conc * 2,
			MaxIdleConnsPerHost: conc * 2,
			IdleConnTimeout:     time.Minute,
		},
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(p * float64(len(d)-1))
	return d[i]
}

// runCreates creates credentials with unique usernames at concurrency conc
// for dur through the full stack and measures the server process.
func (e *env) runCreates(ctx context.Context, prefix string, conc int, dur time.Duration) (loadResult, error) {
	client := newClient(conc)
	pid := e.srv.Process.Pid
	cpu0, err := procCPU(pid)
	if err != nil {
		return loadResult{}, err
	}
	var seq atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var errs int
	var firstErr string
	stop := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			localErrs := 0
			var le string
			for time.Now().Before(stop) && ctx.Err() == nil {
				n := seq.Add(1)
				body := fmt.Appendf(nil, `{"username":"%s%d"}`, prefix, n)
				t0 := time.Now()
				status, msg, err := e.do(ctx, client, http.MethodPost, e.createURL(n), body)
				d := time.Since(t0)
				if err != nil || status != http.StatusCreated {
					localErrs++
					if le == "" {
						le = fmt.Sprintf("status %d %v %s", status, err, msg)
					}
					continue
				}
				local = append(local, d)
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += localErrs
			if firstErr == "" {
				firstErr = le
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := procCPU(pid)
	hwm, _ := procHWM(pid)
	r := loadResult{
		Concurrency: conc, Duration: elapsed, Requests: len(lat) + errs, Errors: errs, FirstError: firstErr,
		RPS: float64(len(lat)) / elapsed.Seconds(),
		P50: percentile(lat, .50), P95: percentile(lat, .95), P99: percentile(lat, .99),
		PeakRSSMB: hwm,
	}
	if r.Requests > 0 {
		r.CPUPer1000 = (cpu1 - cpu0) / float64(r.Requests) * 1000
	}
	return r, nil
}

// do sends one authenticated request and drains the response.
func (e *env) do(ctx context.Context, client *http.Client, method, url string, body []byte) (int, string, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, "", err
	}
	req.SetBasicAuth(e.account, e.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	msg := ""
	if resp.StatusCode >= 300 {
		msg = string(b)
		if len(msg) > 300 {
			msg = msg[:300]
		}
	}
	return resp.StatusCode, msg, nil
}

// getJSON sends an authenticated GET and decodes the body into v.
func (e *env) getJSON(ctx context.Context, client *http.Client, url string, v any) (int, error) {
	return e.sendJSON(ctx, client, http.MethodGet, url, nil, v)
}

// sendJSON sends an authenticated request with a JSON body (if any) and
// decodes the response body into v (nil: discarded).
func (e *env) sendJSON(ctx context.Context, client *http.Client, method, url string, body []byte, v any) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(e.account, e.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if v == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, err
	}
	return resp.StatusCode, json.NewDecoder(resp.Body).Decode(v)
}
