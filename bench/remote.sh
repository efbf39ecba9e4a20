#!/usr/bin/env bash
# Remote-origin benchmark (issue 4), one run, ratios measured in the same run:
#  1. cold sequential read of a ~200 MB FLAC on S3 (moto on loopback) through musefs,
#     `rclone mount` and `s3fs` (whichever are installed);
#  2. warm read from the chunk cache vs a direct read of a local copy (page cache dropped
#     before each);
#  3. peak Dirty (from /proc/meminfo) during a cold prefetch of ~1 GB of files, with and
#     without write-behind.
# Needs root (mounts, drop_caches), python3 with moto[server] + boto3, sox, flac, fuse3;
# optional: rclone, s3fs. Usage: bench/remote.sh [MB_BIG=200] [MB_PREFETCH=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
BIG=${1:-200}; PRE=${2:-1024}
W=$(mktemp -d /tmp/musefs-bench-remote.XXXXXX)
PIDS=(); MNTS=()
cleanup() {
  for m in "${MNTS[@]}"; do fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
cargo build --release --workspace -q
BIN=target/release/musefs
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
python3 -m moto.server -H 127.0.0.1 -p "$PORT" >"$W/moto.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
EP=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret

mkdir -p "$W/lib/big" "$W/lib/pre"
# Half-scale white noise: ~0.19 MB/s of 24-bit/96 kHz stereo FLAC.
secs=$(( BIG * 1000 / 195 ))
sox -V1 -n -r 96000 -b 24 -c 2 "$W/lib/big/big.flac" synth "$secs" whitenoise vol 0.5
n=$(( PRE / 100 )); [ "$n" -ge 1 ] || n=1
for i in $(seq "$n"); do   # distinct noise per file: nothing deduplicates
  sox -V1 -n -r 96000 -b 24 -c 2 "$W/lib/pre/p$i.flac" synth 512 whitenoise vol 0.5
  metaflac --set-tag="TITLE=p$i" "$W/lib/pre/p$i.flac"
done
python3 tests/scripts/s3.py put "$EP" music big "$W/lib/big" >/dev/null
python3 tests/scripts/s3.py put "$EP" music pre "$W/lib/pre" >/dev/null
size=$(stat -c %s "$W/lib/big/big.flac")
echo "big file: $((size / 1048576)) MiB; prefetch set: $n file(s), $(( $(du -sb "$W/lib/pre" | cut -f1) / 1048576 )) MiB"

manifest() { # $1 dir, $2 prefix, $3 write_behind
  mkdir -p "$1"
  cat >"$1/m.toml" <<EOT
state_dir = "$1/state"
template = "\$title"
[cache]
write_behind = $3
[[origin]]
name = "s3"
kind = "s3"
bucket = "music"
prefix = "$2"
endpoint = "$EP"
allow_http = true
EOT
  "$BIN" scan --manifest "$1/m.toml" >/dev/null
}
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
rate() { # file → MB/s of a sequential read
  local t0 t1; t0=$(date +%s.%N); dd if="$1" of=/dev/null bs=1M status=none; t1=$(date +%s.%N)
  python3 -c "print(f'{$size/1e6/($t1-$t0):.1f}')"
}
mnt() { mkdir -p "$1"; MNTS+=("$1"); }
waitmnt() { for _ in $(seq 200); do grep -q " $1 " /proc/mounts && return; sleep 0.1; done; echo "mount $1 failed" >&2; exit 1; }

# 1. Cold reads.
manifest "$W/m1" big true
mnt "$W/mnt1"; "$BIN" mount --manifest "$W/m1/m.toml" "$W/mnt1" 2>"$W/mount1.log" & PIDS+=($!); waitmnt "$W/mnt1"
F=$(find "$W/mnt1" -name '*.flac' | head -1)
drop; musefs_cold=$(rate "$F")
echo "cold read  musefs:       $musefs_cold MB/s"
if command -v rclone >/dev/null; then
  mnt "$W/rc"
  env -u AWS_CA_BUNDLE rclone mount ":s3,provider=Other,env_auth=true,endpoint='$EP':music/big" "$W/rc" \
      --read-only --vfs-cache-mode off --daemon-timeout 10s >"$W/rclone.log" 2>&1 & PIDS+=($!); waitmnt "$W/rc"
  drop; rclone_cold=$(rate "$W/rc/big.flac")
  echo "cold read  rclone mount: $rclone_cold MB/s  -> musefs/rclone = $(python3 -c "print(f'{$musefs_cold/$rclone_cold:.2f}')")x"
else echo "rclone not installed: skipped"; fi
if command -v s3fs >/dev/null; then
  mnt "$W/s3fs"; echo "bench:bench-secret" >"$W/passwd"; chmod 600 "$W/passwd"
  s3fs music:/big "$W/s3fs" -o url="$EP" -o use_path_request_style -o passwd_file="$W/passwd" -o ro
  waitmnt "$W/s3fs"
  drop; s3fs_cold=$(rate "$W/s3fs/big.flac")
  echo "cold read  s3fs:         $s3fs_cold MB/s  -> musefs/s3fs = $(python3 -c "print(f'{$musefs_cold/$s3fs_cold:.2f}')")x"
else echo "s3fs not installed: skipped"; fi

# 2. Warm: a fresh mount on the filled cache vs the local copy.
fusermount3 -u "$W/mnt1"; sleep 0.5
"$BIN" mount --manifest "$W/m1/m.toml" "$W/mnt1" 2>"$W/mount2.log" & PIDS+=($!); waitmnt "$W/mnt1"
# Five interleaved pairs (the local disk's speed wanders between runs); medians compared.
warms=(); locals=()
for _ in 1 2 3 4 5; do
  drop; warms+=("$(rate "$F")")
  drop; locals+=("$(rate "$W/lib/big/big.flac")")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
warm=$(median "${warms[@]}"); local_rate=$(median "${locals[@]}")
echo "warm read  musefs cache: ${warms[*]} MB/s; local copy: ${locals[*]} MB/s"
echo "warm read  medians: musefs $warm MB/s, local $local_rate MB/s -> $(python3 -c "print(f'{$warm/$local_rate:.2f}')")x"
fusermount3 -u "$W/mnt1"; sleep 0.5
grep -h 'chunk cache:' "$W/mount2.log" | tail -1 | sed 's/^.*chunk cache:/second mount: /'

# 3. A cold prefetch with and without write-behind: throughput and peak Dirty, three
#    interleaved runs of each (a fresh cache every time); medians compared.
declare -A rates peaks
for rep in 1 2 3; do
  for wb in true false; do
    rm -rf "$W/p-$wb"
    manifest "$W/p-$wb" pre "$wb"
    drop
    peak=0
    "$BIN" cache prefetch --manifest "$W/p-$wb/m.toml" >"$W/pre-$wb.out" & pf=$!
    while kill -0 "$pf" 2>/dev/null; do
      d=$(awk '/^Dirty:/ {print $2}' /proc/meminfo); [ "$d" -gt "$peak" ] && peak=$d; sleep 0.05
    done
    wait "$pf"
    rate=$(sed -n 's/.*(\([0-9.]*\) MiB\/s).*/\1/p' "$W/pre-$wb.out")
    rates[$wb]="${rates[$wb]:-} $rate"; peaks[$wb]="${peaks[$wb]:-} $((peak / 1024))"
    echo "prefetch write_behind=$wb run $rep: peak Dirty $((peak / 1024)) MiB; $(cat "$W/pre-$wb.out")"
  done
done
python3 - "${rates[true]}" "${rates[false]}" "${peaks[true]}" "${peaks[false]}" <<'PY'
import statistics, sys
wb, nowb = [list(map(float, a.split())) for a in sys.argv[1:3]]
pwb, pnowb = [list(map(int, a.split())) for a in sys.argv[3:5]]
m, n = statistics.median(wb), statistics.median(nowb)
print(f"prefetch medians: write-behind {m:.1f} MiB/s (peak Dirty max {max(pwb)} MiB), "
      f"without {n:.1f} MiB/s (peak Dirty max {max(pnowb)} MiB) -> {m / n:.2f}x")
PY
