module spillway/interop/gcm

go 1.21
