#!/usr/bin/env bash
# musefs benchmarks: figures and ratios against baselines measured in the same run.
#   bench/run.sh [N_FILES]   (default 10000)
# Needs the tools of examples/demo/setup.sh and FUSE. Prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release --workspace -q
cargo build --release -p musefs --examples -q
BIN=$PWD/target/release/musefs
W=$(mktemp -d /tmp/musefs-bench.XXXXXX)
MNT=$W/mnt
PID=""
cleanup() {
  if grep -q " $MNT fuse" /proc/mounts; then fusermount3 -u -z "$MNT" || true; fi
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "== scan: $N files (copies of real encoded files, distinct tags), warm page cache"
python3 examples/demo/make_library.py "$W/seed" >/dev/null
python3 - "$W/seed" "$W/lib" "$N" <<'PY'
import os, shutil, sys
from mutagen import File
seed, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
srcs = sorted(os.path.join(d, f) for d, _, fs in os.walk(seed) for f in fs)
for i in range(n):
    s = srcs[i % len(srcs)]
    d = os.path.join(out, f"artist{i // 500}", f"album{i // 20}")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"{i}{os.path.splitext(s)[1]}")
    shutil.copyfile(s, p)
    f = File(p, easy=True)
    if f.tags is None:
        f.add_tags()
    f["title"] = f"Title {i}"
    f["artist"] = f"Artist {i // 500}"
    f.save()
PY
cat > "$W/m.toml" <<TOML
state_dir = "$W/state"
[[origin]]
name = "bench"
kind = "local"
root = "$W/lib"
TOML
find "$W/lib" -type f -exec cat {} + >/dev/null   # warm the page cache
t0=$(date +%s.%N); find "$W/lib" -type f -print0 | xargs -0 -n 200 head -q -c 65536 >/dev/null; t1=$(date +%s.%N)
out=$("$BIN" scan --manifest "$W/m.toml" 2>/dev/null); t2=$(date +%s.%N)
"$BIN" scan --manifest "$W/m.toml" >/dev/null 2>&1; t3=$(date +%s.%N)
python3 - "$N" "$t0" "$t1" "$t2" "$t3" "$out" <<'PY'
import sys
n, t0, t1, t2, t3 = int(sys.argv[1]), *map(float, sys.argv[2:6])
base, scan, rescan = t1 - t0, t2 - t1, t3 - t2
print(f"scan_full files={n} seconds={scan:.2f} files_per_s={n/scan:.0f}  ({sys.argv[6]})")
print(f"scan_baseline head-64KiB-of-every-file seconds={base:.2f} files_per_s={n/base:.0f} ratio_scan_vs_baseline={base/scan:.2f}")
print(f"scan_incremental (nothing changed) seconds={rescan:.3f} files_per_s={n/rescan:.0f}")
PY

echo "== tree build from the catalog"
target/release/examples/bench_tree 100000 2>/dev/null | tail -1

echo "== sequential read of a large file, warm cache: through the mount vs direct"
mkdir -p "$W/big" "$MNT"
sox -n -r 44100 -b 16 -c 2 "$W/big.wav" synth 1200 sine 440 vol 0.3 2>/dev/null
flac -s -0 -o "$W/big/big.flac" "$W/big.wav" && rm "$W/big.wav"
python3 -c "from mutagen.flac import FLAC; f=FLAC('$W/big/big.flac'); f['title']='Big'; f['albumartist']='B'; f['album']='B'; f['tracknumber']='1'; f.save()"
cat > "$W/b.toml" <<TOML
state_dir = "$W/bstate"
[[origin]]
name = "big"
kind = "local"
root = "$W/big"
TOML
"$BIN" scan --manifest "$W/b.toml" >/dev/null 2>&1
SIZE=$(stat -c %s "$W/big/big.flac")
readspeed() { # file -> MB/s of the best of 3 warm reads
  local best=0
  for _ in 1 2 3; do
    local s e; s=$(date +%s.%N); dd if="$1" of=/dev/null bs=1M 2>/dev/null; e=$(date +%s.%N)
    best=$(python3 -c "print(max($best, $SIZE/1e6/($e-$s)))")
  done
  echo "$best"
}
direct=$(readspeed "$W/big/big.flac")
for mode in kernel daemon; do
  args=(); [ $mode = daemon ] && args=(--no-kernel-passthrough)
  "$BIN" mount --manifest "$W/b.toml" "${args[@]}" "$MNT" 2>"$W/mount.log" & PID=$!
  for _ in $(seq 100); do grep -q " $MNT fuse" /proc/mounts && break; sleep 0.1; done
  f="$MNT/B/B/01 Big.flac"
  dd if="$f" of=/dev/null bs=1M 2>/dev/null   # first read warms the mount's cache
  m=$(readspeed "$f")
  python3 -c "print('read_$mode size_mb=%.0f direct_mb_s=%.0f mount_mb_s=%.0f ratio=%.2f' % ($SIZE/1e6, $direct, $m, $m/$direct))"
  kill -TERM $PID; wait $PID || true; PID=""
done
