#!/usr/bin/env bash
# musefs benchmarks for persistent state (issue 5), one run, absolute figures and ratios:
#   1. mount time and RSS from synthetic catalogs of SIZES tracks: the first mount
#      (tree rendered from the catalog) and a remount (tree snapshot); RSS per track
#      over an empty mount's;
#   2. `ls -R` of the whole mounted tree vs the same tree of empty files on local disk;
#   3. delta sync of 1% changed files in a library of SYNC_N real FLAC files: `musefs scan`
#      (the same code the mount's background sync runs), and live, through a mount
#      watching the origin: from the writes until every change shows in the tree.
#
#   bench/state.sh                      # SIZES="10000 100000 1000000" SYNC_N=100000
#   SIZES="10000" SYNC_N=5000 bench/state.sh
# Needs FUSE, flac, metaflac and sox (examples/demo/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 100000 1000000"}
SYNC_N=${SYNC_N:-100000}
cargo build --release --workspace -q
cargo build --release -p musefs-core --examples -q
BIN=$PWD/target/release/musefs
SYNTH=$PWD/target/release/examples/synth_catalog
W=$(mktemp -d /tmp/musefs-state-bench.XXXXXX)
MNT=$W/mnt
mkdir -p "$MNT" "$W/empty"
cleanup() {
  if grep -q " $MNT fuse" /proc/mounts; then fusermount3 -u -z "$MNT" || true; fi
  pkill -f -- "--manifest $W/" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

manifest() { # state_dir origin_root watch -> manifest path
  cat > "$1.toml" <<TOML
state_dir = "$1"
template = "\$albumartist/\$album/\$track \$title"
sync_interval = "off"
watch = $3
[[origin]]
name = "bench"
kind = "local"
root = "$2"
TOML
  echo "$1.toml"
}

# mountstat MANIFEST [ls] -> "seconds rss_kib [ls_first_s ls_second_s rss_after_ls_kib]"
# Mounts, times exec-to-serving (the mount root lists), reads the RSS, optionally times
# `ls -R` twice, then unmounts with SIGTERM.
mountstat() {
  python3 - "$BIN" "$1" "$MNT" "${2:-}" <<'PY'
import os, subprocess, sys, time
bin_, manifest, mnt, do_ls = sys.argv[1:5]
parent = os.stat(os.path.dirname(mnt)).st_dev
log = open(manifest + ".mount.log", "a")
t0 = time.perf_counter()
p = subprocess.Popen([bin_, "mount", "--manifest", manifest, mnt], stderr=log, stdout=log)
while True:
    if p.poll() is not None:
        sys.exit(f"mount exited with {p.returncode}; see {manifest}.mount.log")
    try:
        if os.stat(mnt).st_dev != parent:
            os.listdir(mnt)
            break
    except OSError:
        pass
    time.sleep(0.002)
t1 = time.perf_counter()
def rss():
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
out = [f"{t1 - t0:.3f}", str(rss())]
if do_ls:
    for _ in range(2):
        s = time.perf_counter()
        subprocess.run(["ls", "-R", mnt], stdout=subprocess.DEVNULL, check=True)
        out.append(f"{time.perf_counter() - s:.3f}")
    out.append(str(rss()))
p.terminate()
p.wait(timeout=120)
print(" ".join(out))
PY
}

echo "== mount time and RSS from the catalog (no scan at mount; sync off)"
m0=$(manifest "$W/s0" "$W/empty" false)
"$SYNTH" "$W/s0" 0 2>/dev/null
read -r _ rss0 < <(mountstat "$m0")
echo "mount_empty rss_kib=$rss0"
for n in $SIZES; do
  "$SYNTH" "$W/s$n" "$n" 2>&1 | sed 's/^/  /'
  m=$(manifest "$W/s$n" "$W/empty" false)
  read -r t_build rss_build < <(mountstat "$m")
  [ -f "$W/s$n/tree.snapshot" ] || { echo "no tree snapshot written" >&2; exit 1; }
  read -r t_snap rss_snap ls1 ls2 rss_ls < <(mountstat "$m" ls)
  # The same tree as empty files on the local disk (dentries warm: just created).
  "$BIN" ls --manifest "$m" > "$W/paths" 2>/dev/null
  python3 - "$W/paths" "$W/local$n" <<'PY'
import os, sys
root = sys.argv[2]
made = set()
for line in open(sys.argv[1]):
    p = os.path.join(root, line.rstrip("\n"))
    d = os.path.dirname(p)
    if d not in made:
        os.makedirs(d, exist_ok=True)
        made.add(d)
    open(p, "w").close()
PY
  ls -R "$W/local$n" >/dev/null
  s=$(date +%s.%N); ls -R "$W/local$n" >/dev/null; e=$(date +%s.%N)
  python3 - "$n" "$t_build" "$rss_build" "$t_snap" "$rss_snap" "$ls1" "$ls2" "$rss_ls" "$rss0" "$s" "$e" \
    "$(stat -c %s "$W/s$n/tree.snapshot")" <<'PY'
import sys
n = int(sys.argv[1])
t_build, rss_build, t_snap, rss_snap, ls1, ls2, rss_ls, rss0, s, e, snap = map(float, sys.argv[2:13])
local = e - s
per = lambda r: (r - rss0) * 1024 / n
print(f"mount tracks={n} first_mount_s={t_build:.3f} (tree rendered) remount_s={t_snap:.3f} (snapshot, "
      f"{snap/1e6:.1f} MB) target={'0.5' if n <= 100000 else '2'}s")
print(f"rss tracks={n} after_mount_kib={rss_snap:.0f} after_ls_R_kib={rss_ls:.0f} "
      f"per_track_bytes={per(rss_snap):.0f} per_track_after_ls_bytes={per(rss_ls):.0f} (target < 1024)")
print(f"ls_R tracks={n} mount_first_s={ls1:.3f} mount_again_s={ls2:.3f} local_empty_files_s={local:.3f} "
      f"ratio_first={ls1/local:.2f} ratio_again={ls2/local:.2f} (mount/local, lower is better)")
PY
  rm -rf "$W/local$n" "$W/s$n"
done

echo "== delta sync: 1% of $SYNC_N real FLAC files changed"
sox -n -r 8000 -b 16 -c 1 "$W/t.wav" synth 0.02 sine 440 2>/dev/null
flac -s -0 --no-padding -o "$W/t.flac" "$W/t.wav"
metaflac --remove-all-tags --dont-use-padding "$W/t.flac"
metaflac --dont-use-padding --set-tag="TITLE=Title 0000000" --set-tag="ALBUM=Album 00000" \
  --set-tag="ALBUMARTIST=Artist 0000" --set-tag="ARTIST=Artist 0000" --set-tag="TRACKNUMBER=00" "$W/t.flac"
python3 - "$W/t.flac" "$W/lib" "$SYNC_N" <<'PY'
import os, sys
seed, root, n = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
for i in range(n):
    artist, album, track = i // 1000, i // 10, i % 10 + 1
    b = (seed.replace(b"Title 0000000", b"Title %07d" % i).replace(b"Album 00000", b"Album %05d" % album)
             .replace(b"Artist 0000", b"Artist %04d" % artist).replace(b"TRACKNUMBER=00", b"TRACKNUMBER=%02d" % track))
    d = os.path.join(root, f"artist{artist}", f"album{album}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i}.flac"), "wb") as f:
        f.write(b)
PY
flac -t -s "$W/lib/artist0/album0/0.flac"
ms=$(manifest "$W/sync" "$W/lib" true)
timed() { local s e; s=$(date +%s.%N); "$@" >"$W/out" 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e-$s:.3f}')"; }
t_full=$(timed "$BIN" scan --manifest "$ms")
grep -q "added $SYNC_N " "$W/out" || { cat "$W/out"; exit 1; }
t_none=$(timed "$BIN" scan --manifest "$ms")
change() { # WORD -> rewrite every 100th file's title to WORD (same length), new mtime
  python3 - "$W/lib" "$SYNC_N" "$1" <<'PY'
import os, re, sys
root, n, word = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
for i in range(0, n, 100):
    p = os.path.join(root, f"artist{i // 1000}", f"album{i // 10}", f"{i}.flac")
    b = open(p, "rb").read()
    b2 = re.sub(rb"TITLE=\w{5} ", b"TITLE=" + word + b" ", b, count=1)
    assert b2 != b, p
    with open(p, "wb") as f:
        f.write(b2)
PY
}
change Retag
t_delta=$(timed "$BIN" scan --manifest "$ms")
grep -q "updated $((SYNC_N / 100)) " "$W/out" || { cat "$W/out"; exit 1; }
python3 - "$SYNC_N" "$t_full" "$t_none" "$t_delta" <<'PY'
import sys
n, full, none, delta = int(sys.argv[1]), *map(float, sys.argv[2:5])
print(f"sync files={n} full_scan_s={full:.2f} nothing_changed_s={none:.3f} delta_1pct_s={delta:.3f} "
      f"ratio_delta_vs_full={delta/full:.3f}")
PY
# Live: a mount watching the origin; the clock runs from the first write until every
# changed file shows under its new name in the mounted tree.
python3 - "$BIN" "$ms" "$MNT" "$W/lib" "$SYNC_N" <<'PY'
import os, re, subprocess, sys, time
bin_, manifest, mnt, root, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
parent = os.stat(os.path.dirname(mnt)).st_dev
log = open(manifest + ".live.log", "w")
p = subprocess.Popen([bin_, "mount", "--manifest", manifest, mnt], stderr=log, stdout=log)
try:
    while os.stat(mnt).st_dev == parent:
        if p.poll() is not None:
            sys.exit("mount died")
        time.sleep(0.01)
    time.sleep(1.5)  # the mount's own first sync (nothing to do) settles
    want = []
    t0 = time.perf_counter()
    for i in range(0, n, 100):
        rel = os.path.join(f"artist{i // 1000}", f"album{i // 10}", f"{i}.flac")
        b = open(os.path.join(root, rel), "rb").read()
        b = re.sub(rb"TITLE=Retag ", b"TITLE=Again ", b, count=1)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(b)
        want.append(os.path.join(mnt, f"Artist {i // 1000:04d}", f"Album {i // 10:05d}",
                                 f"{i % 10 + 1:02d} Again {i:07d}.flac"))
    t_written = time.perf_counter()
    pending = want
    while pending:
        if time.perf_counter() - t0 > 300:
            sys.exit(f"live sync: {len(pending)} change(s) still missing after 300 s")
        pending = [w for w in pending if not os.path.exists(w)]
        time.sleep(0.05)
    t1 = time.perf_counter()
    print(f"sync_live files={n} changed={len(want)} writes_s={t_written - t0:.3f} "
          f"writes_to_visible_s={t1 - t0:.3f} (includes the {0.7:.1f} s debounce)")
finally:
    p.terminate()
    p.wait(timeout=60)
PY
