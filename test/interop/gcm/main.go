// The proof of concept's AES-GCM code path (key = UTF-8 bytes of the EncryptionKey string,
// message = hex(nonce || ciphertext || tag) from gcm.Seal(nonce, nonce, plaintext, nil)),
// used by test/crypto-go.it.test.ts to check interoperability in both directions.
//
//	go run . seal <key> <plaintext>   prints the hex message
//	go run . open <key> <hex>         prints the plaintext
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
)

func gcmFor(key string) cipher.AEAD {
	block, err := aes.NewCipher([]byte(key))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return gcm
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: seal|open <key> <text>")
		os.Exit(2)
	}
	gcm := gcmFor(os.Args[2])
	switch os.Args[1] {
	case "seal":
		nonce := make([]byte, gcm.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			os.Exit(1)
		}
		fmt.Print(hex.EncodeToString(gcm.Seal(nonce, nonce, []byte(os.Args[3]), nil)))
	case "open":
		data, err := hex.DecodeString(os.Args[3])
		if err != nil || len(data) < gcm.NonceSize() {
			fmt.Fprintln(os.Stderr, "bad hex")
			os.Exit(1)
		}
		plain, err := gcm.Open(nil, data[:gcm.NonceSize()], data[gcm.NonceSize():], nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(string(plain))
	default:
		os.Exit(2)
	}
}
