#!/usr/bin/env bash
# The tree at scale (issue 18), one run over a synthetic catalog of TRACKS tracks
# (passthrough mode, empty origin files):
#  1. the first mount without a tree snapshot: from exec until it serves;
#  2. directory walks through the mount vs the same tree of empty files on the local disk,
#     and (when `bindfs` is installed) vs that local tree through bindfs, a plain FUSE
#     passthrough filesystem (what any FUSE mount costs here): `ls -R` (names only:
#     descends by d_type) and `find -type f -newer` (stats every file, as a media
#     server's scan does), each twice (first: nothing in the kernel's caches; again:
#     right after). Prints seconds, the ratios, and the kernel requests the mount's walk
#     cost, by operation (`musefs_fuse_requests_total`, counted by the mount).
#   bench/walks.sh [TRACKS]   (default 100000; 1000000 for the issue's figures)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000}
. bench/common.sh walks
cargo build --release -p musefs-core --examples -q
mkdir -p "$W/empty"
target/release/examples/synth_catalog "$W/s" "$N" >/dev/null 2>&1
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$W/m.toml" <<TOML
state_dir = "$W/s"
template = "\$albumartist/\$album/\$track \$title"
sync_interval = "off"
watch = false
metrics_addr = "127.0.0.1:$PORT"
[[origin]]
name = "bench"
kind = "local"
root = "$W/empty"
TOML
"$BIN" ls --manifest "$W/m.toml" > "$W/paths"
python3 - "$W/paths" "$W/local" <<'PY'
import os, sys
made = set()
for line in open(sys.argv[1]):
    p = os.path.join(sys.argv[2], line.rstrip("\n"))
    d = os.path.dirname(p)
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    open(p, "w").close()
PY
touch -d "2000-01-01" "$W/ref"
rm -f "$W/s/tree.snapshot"
sync; echo 3 > /proc/sys/vm/drop_caches
T0=$(date +%s.%N)
bench_mount "$W/m.toml"
T1=$(date +%s.%N)
echo "first_mount tracks=$N seconds=$(python3 -c "print(f'{$T1 - $T0:.2f}')") (no tree snapshot; catalog from disk)"
BINDFS=
if command -v bindfs >/dev/null; then
  BINDFS=$W/bindfs; mkdir -p "$BINDFS"
  bindfs -o ro "$W/local" "$BINDFS"
  trap 'fusermount -u -z "$BINDFS" 2>/dev/null; bench_cleanup' EXIT
fi
python3 - "$W" "$MNT" "$PORT" "$N" "$BINDFS" <<'PY'
import re, subprocess, sys, time, urllib.request
w, mnt, port, n, bindfs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def requests():
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r'musefs_fuse_requests_total\{op="(\w+)"\} (\S+)', page)}
def walk(cmd, root):
    t = time.perf_counter()
    subprocess.run(cmd(root), stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t
walks = {"ls_R": lambda r: ["ls", "-R", r], "find_newer": lambda r: ["find", r, "-type", "f", "-newer", f"{w}/ref"]}
def fresh():
    # A fresh kernel view: every entry and attribute forgotten.
    subprocess.run(["sh", "-c", "sync; echo 2 > /proc/sys/vm/drop_caches"], check=False)
for name, cmd in walks.items():
    walk(cmd, f"{w}/local")
    local = min(walk(cmd, f"{w}/local") for _ in range(3))
    ref = {}
    if bindfs:
        for run in ("first", "again"):
            if run == "first":
                fresh()
            ref[run] = walk(cmd, bindfs)
    for run in ("first", "again"):
        if run == "first":
            fresh()
        before = requests()
        s = walk(cmd, mnt)
        time.sleep(0.2)  # releases are asynchronous
        after = requests()
        ops = " ".join(f"{k}={after[k] - before.get(k, 0):.0f}" for k in sorted(after) if after[k] > before.get(k, 0))
        total = sum(after.values()) - sum(before.values())
        vs_fuse = f" bindfs_s={ref[run]:.3f} vs_bindfs={s / ref[run]:.2f}" if ref else ""
        print(f"{name}_{run} tracks={n} mount_s={s:.3f} local_s={local:.3f} ratio={s / local:.2f}{vs_fuse} "
              f"requests={total:.0f} ({ops})")
PY
