#!/usr/bin/env bash
# cluster.sh: start, stop or inspect Parliament replicas on remote hosts over ssh, from the
# same cluster file every replica reads (see 'parliament config').
#
#   cluster.sh start|stop|status --config FILE [--binary PATH] [--dir DIR] [--user USER]
#              [--ssh-opts "OPTS"] [--wan MATRIX --dev DEV] [--dry-run]
#
# start copies the binary and the cluster file to DIR on every host (once per host), then
# starts 'parliament replica --config DIR/cluster.yaml --id N' under nohup, logging to
# DIR/replica-N.log and recording the PID in DIR/replica-N.pid. With --wan it also copies
# scripts/wan.sh, the matrix and a generated peers file and applies the matrix on DEV of
# each host (as root, through sudo; a host takes the site of its first replica) before
# starting the replicas, so real hosts in one data centre see the same WAN as the
# in-process emulator. A replica's /metrics address comes from the cluster file's
# "metrics" field.
# stop kills the replicas (and clears the WAN emulation with --wan); status shows whether
# each replica's process is alive.
#
# The host of a replica is its address without the port. --ssh-opts is given to both ssh
# and scp, so use -o forms (-o Port=2222, -o IdentityFile=...). --dry-run prints the exact ssh and
# scp commands instead of running them; scripts/scripts_test.go checks that output.
set -euo pipefail

usage() {
	echo "usage:" >&2
	sed -n '5,6p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

die() {
	echo "cluster.sh: $*" >&2
	exit 1
}

action=${1:-}
[ -n "$action" ] || usage
shift
config="" binary="parliament" dir="parliament" user="" ssh_opts="-o BatchMode=yes" wan="" dev="" dry_run=0
while [ $# -gt 0 ]; do
	case "$1" in
	--config) config=${2:?--config needs a file}; shift 2 ;;
	--binary) binary=${2:?--binary needs a path}; shift 2 ;;
	--dir) dir=${2:?--dir needs a directory}; shift 2 ;;
	--user) user=${2:?--user needs a name}; shift 2 ;;
	--ssh-opts) ssh_opts=${2?--ssh-opts needs options}; shift 2 ;;
	--wan) wan=${2:?--wan needs a matrix file}; shift 2 ;;
	--dev) dev=${2:?--dev needs a device}; shift 2 ;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage ;;
	*) die "unknown argument: $1" ;;
	esac
done
case "$action" in start | stop | status) ;; *) usage ;; esac
[ -n "$config" ] || die "--config is required"
[ -r "$config" ] || die "cannot read $config"
if [ -n "$wan" ] && [ -z "$dev" ]; then
	die "--wan needs --dev (the network device on the hosts)"
fi
here=$(dirname "$0")

# run prints the command (dry run) or runs it.
run() {
	if [ "$dry_run" = 1 ]; then
		echo "$*"
	else
		"$@"
	fi
}

# replicas prints "ID ADDRESS SITE" for every replica of the cluster file. It reads the
# block-style YAML that 'parliament config' writes (one "- id:" item per replica, address
# and site keys in any order).
replicas() {
	awk '
		function flush() { if (id != "") print id, addr, site; id = addr = site = "" }
		function val(s) { sub(/^[^:]*:[[:space:]]*/, "", s); sub(/[[:space:]]+#.*$/, "", s); gsub(/["'\'']/, "", s); return s }
		/^replicas:/ { inrep = 1; next }
		inrep && /^[^[:space:]-]/ { flush(); inrep = 0 }
		!inrep { next }
		/^[[:space:]]*-[[:space:]]/ { flush(); sub(/-[[:space:]]*/, "") }
		/^[[:space:]]*id:/ { id = val($0) }
		/^[[:space:]]*address:/ { addr = val($0) }
		/^[[:space:]]*site:/ { site = val($0) }
		END { flush() }
	' "$config"
}

host_of() {
	local a=$1
	case "$a" in
	\[*\]:*) a=${a#[}; a=${a%%]:*} ;; # [v6]:port
	*) a=${a%:*} ;;
	esac
	echo "$a"
}

target() {
	if [ -n "$user" ]; then echo "$user@$1"; else echo "$1"; fi
}

mapfile -t reps < <(replicas)
[ "${#reps[@]}" -gt 0 ] || die "no replicas found in $config"

# Distinct hosts in cluster-file order, each with the site of its first replica.
hosts=()
host_sites=()
for r in "${reps[@]}"; do
	read -r _ addr site <<<"$r"
	h=$(host_of "$addr")
	seen=0
	for x in "${hosts[@]+"${hosts[@]}"}"; do [ "$x" != "$h" ] || seen=1; done
	if [ "$seen" = 0 ]; then
		hosts+=("$h")
		host_sites+=("$site")
	fi
done

# ssh_opts is a list of options: split it on purpose.
# shellcheck disable=SC2206
sshv=($ssh_opts)

case "$action" in
start)
	peers_file=""
	if [ -n "$wan" ]; then
		peers_file=$(mktemp)
		trap 'rm -f "$peers_file"' EXIT
		for i in "${!hosts[@]}"; do
			echo "${host_sites[$i]} ${hosts[$i]}" >>"$peers_file"
		done
		[ "$dry_run" = 0 ] || sed 's/^/# PEERS: /' "$peers_file"
	fi
	for i in "${!hosts[@]}"; do
		h=${hosts[$i]}
		t=$(target "$h")
		run ssh "${sshv[@]}" "$t" "mkdir -p $dir"
		run scp "${sshv[@]}" "$binary" "$config" "$t:$dir/"
		if [ -n "$wan" ]; then
			run scp "${sshv[@]}" "$here/wan.sh" "$wan" "$t:$dir/"
			if [ "$dry_run" = 1 ]; then
				echo "scp ${sshv[*]} PEERS $t:$dir/peers.txt"
			else
				scp "${sshv[@]}" "$peers_file" "$t:$dir/peers.txt"
			fi
			run ssh "${sshv[@]}" "$t" "cd $dir && sudo bash wan.sh apply --matrix $(basename "$wan") --site ${host_sites[$i]} --dev $dev --peers peers.txt"
		fi
	done
	for r in "${reps[@]}"; do
		read -r id addr _ <<<"$r"
		t=$(target "$(host_of "$addr")")
		run ssh "${sshv[@]}" "$t" "cd $dir || exit 1; nohup ./$(basename "$binary") replica --config $(basename "$config") --id $id >replica-$id.log 2>&1 </dev/null & echo \$! >replica-$id.pid"
	done
	;;
stop)
	for r in "${reps[@]}"; do
		read -r id addr _ <<<"$r"
		t=$(target "$(host_of "$addr")")
		run ssh "${sshv[@]}" "$t" "cd $dir && [ -f replica-$id.pid ] && kill \$(cat replica-$id.pid) && rm -f replica-$id.pid || true"
	done
	if [ -n "$wan" ]; then
		for h in "${hosts[@]}"; do
			run ssh "${sshv[@]}" "$(target "$h")" "cd $dir && sudo bash wan.sh clear --dev $dev"
		done
	fi
	;;
status)
	for r in "${reps[@]}"; do
		read -r id addr site <<<"$r"
		t=$(target "$(host_of "$addr")")
		run ssh "${sshv[@]}" "$t" "cd $dir && if [ -f replica-$id.pid ] && kill -0 \$(cat replica-$id.pid) 2>/dev/null; then echo 'replica $id ($site) running'; else echo 'replica $id ($site) stopped'; fi"
	done
	;;
esac
