#!/usr/bin/env bash
# The main job: build everything, start a Julato server on the embedded store,
# deploy the example functions, feed a month of real flights through `planes`,
# and keep serving until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

listen="${JULATO_LISTEN:-127.0.0.1:7700}"
data="${JULATO_DEMO_DATA:-target/demo-data}"
export JULATO_URL="http://${listen}"

make --no-print-directory functions
cargo build --release -p julato-cli
julato=target/release/julato

if curl -fsS "$JULATO_URL/healthz" >/dev/null 2>&1; then
  echo "something already serves at $JULATO_URL; stop it or set JULATO_LISTEN" >&2
  exit 1
fi

# The demo folder is scratch: each run starts from an empty log.
rm -rf "$data"
"$julato" serve --data "$data" --listen "$listen" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null; wait "$server" 2>/dev/null' INT TERM EXIT

up=false
for _ in $(seq 1 300); do
  if ! kill -0 "$server" 2>/dev/null; then echo "the server exited early" >&2; exit 1; fi
  if curl -fsS "$JULATO_URL/healthz" >/dev/null 2>&1; then up=true; break; fi
  sleep 0.1
done
if ! $up; then echo "the server did not come up at $JULATO_URL" >&2; exit 1; fi

for f in counter planes account airports; do
  "$julato" deploy "$f" "target/functions/$f.wasm"
done
"$julato" send counter/hello Say '{"text": "hello"}'
"$julato" ingest planes data/flights-2013-01.csv --key-column tailnum --type Flight
# A transfer as one transaction, and what the first flight (seq 2) caused.
"$julato" send account/alice Deposit '{"amount": 100}'
echo '[{"function": "account", "key": "alice", "type": "Withdraw", "data": {"amount": 30}},
       {"function": "account", "key": "bob", "type": "Deposit", "data": {"amount": 30}}]' |
  "$julato" tx -
"$julato" graph 2 --effects

cat <<TIPS

Julato is serving at $JULATO_URL (data in $data). Try, in another terminal:

  export JULATO_URL=$JULATO_URL
  $julato state planes/N14228                   # one plane after January
  $julato history planes/N14228 --limit 5       # the events that built it
  $julato state planes/N14228 --version 1       # the same plane after its first flight
  $julato state airports/EWR                    # departures and arrivals, fed by planes' emitted events
  $julato graph 2 --effects --dot               # the first flight and the events it emitted, as Graphviz
  $julato read account/alice account/bob        # two processes at one consistent cut
  $julato dead-letters                          # emitted events their target refused
  $julato checkpoint                            # a consistent cut of every process
  $julato processes planes --limit 10           # planes seen so far
  $julato send counter/hello Say '{"text": "again"}'
  $julato send account/alice Withdraw '{"amount": 500}'   # rejected: overdraft
  curl -s $JULATO_URL/v1/functions/counter/processes/hello
  curl -s $JULATO_URL/v1/log?limit=3

Ctrl-C stops the server.
TIPS
wait "$server"
