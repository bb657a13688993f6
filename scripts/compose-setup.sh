#!/bin/sh
# compose.yaml's one-shot `setup` service: development certificates (valid for the host name `ingester`), a JWT
# secret, the demo tenants file and the agent's token, in /run/spillway (a volume), each only where missing.
set -eu
dir=/run/spillway
mkdir -p "$dir"
cd /app/dist/programs
[ -f "$dir/certs/server.crt" ] || node ingester.js certs --dir "$dir/certs" --host ingester --host localhost --host 127.0.0.1
[ -f "$dir/jwt.secret" ] || (umask 077 && openssl rand -base64 48 > "$dir/jwt.secret")
[ -f "$dir/tenants.json" ] || cp /app/config/tenants.example.json "$dir/tenants.json"
SPILLWAY_JWT_SECRET_FILE="$dir/jwt.secret" node ingester.js access-token --access-key "$ACCESS_KEY" --expiry 86400 > "$dir/agent.token"
echo "setup done: $dir"
