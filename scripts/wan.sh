#!/usr/bin/env bash
# wan.sh: emulate a wide-area network on a real Linux host with tc, from the same RTT
# matrix the in-process emulator uses (workloads/matrices/*.csv).
#
#   wan.sh apply --matrix FILE --site SITE --dev DEV --peers FILE [--jitter MS] [--rate RATE] [--dry-run]
#   wan.sh clear --dev DEV [--dry-run]
#   wan.sh show  --dev DEV
#
# apply installs, on DEV's egress, an HTB root qdisc with one class per peer host, a netem
# qdisc under each class delaying packets by RTT/2 between this host's site and the peer's
# site (so a round trip costs the full RTT once both ends have applied their side), and a
# u32 filter steering packets to the class by destination IP. Peers at this host's own
# site get no delay. Unmatched traffic goes to the default class, undelayed.
#
# The peers file has one "SITE ADDRESS" pair per line ('#' starts a comment); ADDRESS is an
# IPv4 or IPv6 address (no port). Run apply on every host, each with its own --site.
#
# Idempotent: apply first removes whatever root qdisc DEV has, then installs the whole
# tree, so running it twice leaves the same state; clear succeeds when nothing is
# installed. --dry-run prints the exact commands instead of running them (and needs
# neither root nor tc); the dry run is what scripts/scripts_test.go checks.
set -euo pipefail

usage() {
	echo "usage:" >&2
	sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

die() {
	echo "wan.sh: $*" >&2
	exit 1
}

action=${1:-}
[ -n "$action" ] || usage
shift
matrix="" site="" dev="" peers="" jitter="" rate="10gbit" dry_run=0
while [ $# -gt 0 ]; do
	case "$1" in
	--matrix) matrix=${2:?--matrix needs a file}; shift 2 ;;
	--site) site=${2:?--site needs a site}; shift 2 ;;
	--dev) dev=${2:?--dev needs a device}; shift 2 ;;
	--peers) peers=${2:?--peers needs a file}; shift 2 ;;
	--jitter) jitter=${2:?--jitter needs milliseconds}; shift 2 ;;
	--rate) rate=${2:?--rate needs a rate like 10gbit}; shift 2 ;;
	--dry-run) dry_run=1; shift ;;
	-h | --help) usage ;;
	*) die "unknown argument: $1" ;;
	esac
done

# run prints the command (dry run) or runs it.
run() {
	if [ "$dry_run" = 1 ]; then
		echo "$*"
	else
		"$@"
	fi
}

# run_may_fail is run for commands whose failure is expected and harmless (deleting a
# qdisc that is not there).
run_may_fail() {
	if [ "$dry_run" = 1 ]; then
		echo "$* || true"
	else
		"$@" 2>/dev/null || true
	fi
}

# rtt_ms prints the RTT in milliseconds between sites $1 and $2 from the matrix CSV.
rtt_ms() {
	awk -F, -v a="$1" -v b="$2" '
		/^[[:space:]]*#/ || /^[[:space:]]*$/ { next }
		!header { for (i = 2; i <= NF; i++) { gsub(/[[:space:]]/, "", $i); col[$i] = i }; header = 1; next }
		{ gsub(/[[:space:]]/, "", $1) }
		$1 == a && (b in col) { v = $(col[b]); gsub(/[[:space:]]/, "", v); print v; found = 1; exit }
		END { if (!found) exit 1 }
	' "$matrix"
}

[ -n "$dev" ] || die "--dev is required"
case "$dev" in
*[!A-Za-z0-9_.@-]*) die "bad device name: $dev" ;;
esac
if [ "$dry_run" = 0 ] && [ "$action" != show ]; then
	command -v tc >/dev/null 2>&1 || die "tc not found (install iproute2)"
	[ "$(id -u)" = 0 ] || die "apply and clear need root (or run with --dry-run)"
fi

case "$action" in
show)
	command -v tc >/dev/null 2>&1 || die "tc not found (install iproute2)"
	tc qdisc show dev "$dev"
	tc class show dev "$dev"
	tc filter show dev "$dev"
	;;
clear)
	run_may_fail tc qdisc del dev "$dev" root
	;;
apply)
	[ -n "$matrix" ] || die "--matrix is required"
	[ -n "$site" ] || die "--site is required"
	[ -n "$peers" ] || die "--peers is required"
	[ -r "$matrix" ] || die "cannot read matrix $matrix"
	[ -r "$peers" ] || die "cannot read peers $peers"
	rtt_ms "$site" "$site" >/dev/null || die "site $site is not in $matrix"
	# Validate the whole peers file before touching the device.
	lines=()
	while read -r peer_site addr rest; do
		case "$peer_site" in "" | "#"*) continue ;; esac
		[ -n "$addr" ] || die "peers: line for $peer_site has no address"
		[ -z "$rest" ] || case "$rest" in "#"*) ;; *) die "peers: extra fields after $peer_site $addr" ;; esac
		case "$addr" in
		*[!0-9A-Fa-f.:]*) die "peers: $addr is not an IP address (no host names, no ports)" ;;
		esac
		rtt_ms "$site" "$peer_site" >/dev/null || die "peers: site $peer_site is not in $matrix"
		lines+=("$peer_site $addr")
	done <"$peers"
	[ "${#lines[@]}" -gt 0 ] || die "peers: no peers in $peers"

	run_may_fail tc qdisc del dev "$dev" root
	run tc qdisc add dev "$dev" root handle 1: htb default 1
	run tc class add dev "$dev" parent 1: classid 1:1 htb rate "$rate"
	n=10
	for line in "${lines[@]}"; do
		read -r peer_site addr <<<"$line"
		[ "$peer_site" != "$site" ] || continue
		rtt=$(rtt_ms "$site" "$peer_site")
		delay=$(awk -v r="$rtt" 'BEGIN { printf "%gms", r / 2 }')
		netem=(netem delay "$delay")
		if [ -n "$jitter" ]; then
			netem+=("${jitter}ms" distribution normal)
		fi
		# A WAN link holds RTT x rate worth of packets; netem's default limit (1000) would
		# drop them under load.
		netem+=(limit 100000)
		proto=ip match=ip mask=32
		case "$addr" in *:*) proto=ipv6 match=ip6 mask=128 ;; esac
		run tc class add dev "$dev" parent 1: classid "1:$n" htb rate "$rate"
		run tc qdisc add dev "$dev" parent "1:$n" handle "$n:" "${netem[@]}"
		run tc filter add dev "$dev" protocol "$proto" parent 1: prio 1 u32 match "$match" dst "$addr/$mask" flowid "1:$n"
		n=$((n + 1))
	done
	;;
*)
	usage
	;;
esac
