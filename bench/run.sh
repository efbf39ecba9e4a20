#!/usr/bin/env bash
# musefs benchmarks: figures and ratios against baselines measured in the same run.
#   bench/run.sh [N_FILES]   (default 10000)
# Needs the tools of examples/demo/setup.sh and FUSE. Prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
cargo build --release --workspace -q
cargo build --release -p musefs-core --examples -q
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

echo "== synthesis: sequential read of the large file (second read, page cache kept) vs direct"
MUSEFS_MODE=synthesis "$BIN" mount --manifest "$W/b.toml" "$MNT" 2>"$W/mount.log" & PID=$!
for _ in $(seq 100); do grep -q " $MNT fuse" /proc/mounts && break; sleep 0.1; done
f="$MNT/B/B/01 Big.flac"
SIZE=$(stat -c %s "$f")
dd if="$f" of=/dev/null bs=1M 2>/dev/null
m=$(readspeed "$f")
python3 -c "print('read_synthesis size_mb=%.0f direct_mb_s=%.0f mount_mb_s=%.0f ratio=%.2f' % ($SIZE/1e6, $direct, $m, $m/$direct))"
kill -TERM $PID; wait $PID || true; PID=""

echo "== synthesis: time to first byte (open + 4 KiB pread + close) over $N files, header cache warm"
MUSEFS_MODE=synthesis "$BIN" mount --manifest "$W/m.toml" "$MNT" 2>"$W/mount.log" & PID=$!
for _ in $(seq 100); do grep -q " $MNT fuse" /proc/mounts && break; sleep 0.1; done
python3 - "$MNT" "$W/lib" <<'PY'
import os, sys, time
mnt, lib = sys.argv[1], sys.argv[2]
def files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if not f.startswith("cover."))
def forget(paths):
    # Drop the kernel's cached pages of the served files only (the next reads must go
    # through musefs), keeping the catalog, the originals and musefs's header cache warm.
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
def ttfb(paths):
    out = []
    for p in paths:
        t = time.perf_counter()
        fd = os.open(p, os.O_RDONLY)
        os.pread(fd, 4096, 0)
        os.close(fd)
        out.append(time.perf_counter() - t)
    out.sort()
    return out
served, orig = files(mnt), files(lib)
cold = ttfb(served)            # builds every header once (header cache cold)
forget(served)                 # the kernel's page cache must not answer the next pass
warm = ttfb(served)
ttfb(orig)
base = ttfb(orig)              # originals, warm
q = lambda v, p: v[min(len(v) - 1, int(len(v) * p))] * 1000
print(f"ttfb_synthesis files={len(served)} cold_p50_ms={q(cold,.5):.3f} cold_p99_ms={q(cold,.99):.3f} "
      f"warm_p50_ms={q(warm,.5):.3f} warm_p99_ms={q(warm,.99):.3f}")
print(f"ttfb_baseline open+pread-of-originals-warm p50_ms={q(base,.5):.3f} p99_ms={q(base,.99):.3f} "
      f"ratio_warm_p99_vs_direct={q(warm,.99)/max(q(base,.99),1e-9):.1f}")
PY
kill -TERM $PID; wait $PID || true; PID=""
