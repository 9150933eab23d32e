package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStalledRequestBodyClosed: the API server had no read deadline past the
// headers. An unauthenticated client announcing a body and sending none
// held a connection and a goroutine for good (the 401 waits to drain the
// body before it is written), so any peer could exhaust the server's file
// descriptors.
func TestStalledRequestBodyClosed(t *testing.T) {
	old := bodyReadIdle
	bodyReadIdle = time.Second
	defer func() { bodyReadIdle = old }()
	dir := t.TempDir()
	ctx := context.Background()
	res, err := Init(ctx, InitOptions{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Start(ctx, Config{DataDir: dir, QUICAddr: "127.0.0.1:0", APIAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx)

	// A request whose body arrives is served as before, also when its
	// handler ends after the deadline the body's reads set.
	tok, err := os.ReadFile(res.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodPost, "https://"+s.APIAddr().String()+"/api/v1/users",
			strings.NewReader(fmt.Sprintf(`{"name":"analyst%d","role":"analyst"}`, i)))
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create user: %s", resp.Status)
		}
		time.Sleep(1500 * time.Millisecond) // the same connection, past bodyReadIdle
	}
	c, err := tls.Dial("tcp", s.APIAddr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.Copy(io.Discard, bufio.NewReader(c))
	if err != nil || time.Since(start) > 8*time.Second {
		t.Fatalf("a request whose body stalls still holds its connection after %s (%v)", time.Since(start).Round(time.Millisecond), err)
	}
}
