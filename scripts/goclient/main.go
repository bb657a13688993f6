// The benchmark's grpc-go client for SendEvent (scripts/bench.mjs, row "SendEvent, grpc-go clients"): the kind of
// client the proof of concept's Fluent Bit plugin is, which issue #13's first measurement used. `-clients`
// connections, each sending client streams of `-batch` events one at a time until `-total` events (over all
// clients) were answered SUCCESS. The events are the benchmark's own, already encoded (`-events`: each api.Event
// as a 4-byte big-endian length and its bytes), so the client spends its CPU on gRPC, not on encoding. Prints one
// JSON line: events acknowledged, failed streams by status, seconds, and this process's CPU-seconds.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec sends and receives message bytes as they are (the events are encoded already).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return v.([]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "goclient: "+format+"\n", a...)
	os.Exit(2)
}

func main() {
	addr := flag.String("addr", "", "host:port of the ingester")
	ca := flag.String("ca", "", "PEM file of the CA that signed the ingester's certificate")
	token := flag.String("token", "", "the JWT")
	eventsFile := flag.String("events", "", "the events: each a 4-byte big-endian length and its api.Event bytes")
	clients := flag.Int("clients", 4, "connections, each one stream at a time")
	total := flag.Int("total", 100000, "events to have acknowledged, over all clients")
	batch := flag.Int("batch", 500, "events per stream")
	flag.Parse()
	encoding.RegisterCodec(rawCodec{})

	data, err := os.ReadFile(*eventsFile)
	if err != nil {
		fail("cannot read -events: %v", err)
	}
	var pool [][]byte
	for i := 0; i+4 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[i:]))
		if i+4+n > len(data) {
			fail("-events is truncated")
		}
		pool = append(pool, data[i+4:i+4+n])
		i += 4 + n
	}
	if len(pool) == 0 || *clients < 1 || *batch < 1 {
		fail("need events, -clients >= 1 and -batch >= 1")
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		fail("cannot read -ca: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail("-ca holds no certificate")
	}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost"})
	desc := &grpc.StreamDesc{StreamName: "SendEvent", ClientStreams: true}
	per := (*total + *clients - 1) / *clients

	var mu sync.Mutex
	acked := 0
	failures := map[string]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds),
				grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
			if err != nil {
				fail("cannot connect: %v", err)
			}
			defer conn.Close()
			mine, failed := 0, 0
			for k := 0; mine < per && failed <= 20; k++ {
				ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+*token)
				ok, code := sendStream(ctx, conn, desc, pool, k*(*batch), *batch)
				if ok {
					mine += *batch
				} else {
					failed++
					mu.Lock()
					failures[code]++
					mu.Unlock()
				}
			}
			mu.Lock()
			acked += mine
			mu.Unlock()
		}()
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	out, _ := json.Marshal(map[string]any{"acked": acked, "failures": failures, "seconds": seconds, "cpuSeconds": cpu})
	fmt.Println(string(out))
}

// sendStream sends one client stream of `n` events from `pool` (from index `from`) and reads its EResponse: true when
// it says SUCCESS (field 1 absent or 0), else false and the gRPC status (or FAILURE).
func sendStream(ctx context.Context, conn *grpc.ClientConn, desc *grpc.StreamDesc, pool [][]byte, from, n int) (bool, string) {
	s, err := conn.NewStream(ctx, desc, "/api.EventService/SendEvent")
	if err != nil {
		return false, status.Code(err).String()
	}
	for i := 0; i < n; i++ {
		if err := s.SendMsg(pool[(from+i)%len(pool)]); err != nil {
			break // the status comes with RecvMsg
		}
	}
	_ = s.CloseSend()
	var resp []byte
	if err := s.RecvMsg(&resp); err != nil {
		return false, status.Code(err).String()
	}
	if len(resp) == 0 || (len(resp) == 2 && resp[0] == 0x08 && resp[1] == 0) {
		return true, ""
	}
	return false, "FAILURE"
}
