#!/usr/bin/env bash
# Scan throughput by format: N copies of one real file per format (made by the same
# encoders and taggers as the tests), each format its own library and catalog, scanned
# with a warm page cache. Prints files/s per format and its ratio to FLAC measured in
# the same run (1.00 = as fast as FLAC; issue 15's bar: M4A >= 0.5). The ratio is of
# the scan's own time (what `musefs scan` reports: listing, probing, reading, writing
# the catalog); the wall time adds the process start, plugin loading and the tree.
# FLAC, the baseline, is measured first and again last; the faster of the two counts.
#   bench/formats.sh [N]   (default 2000)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000}
cargo build --release --workspace -q
BIN=$PWD/target/release/musefs
W=$(mktemp -d /tmp/musefs-bench-formats.XXXXXX)
trap 'rm -rf "$W"' EXIT
python3 examples/demo/make_library.py "$W/seed/demo" >/dev/null
python3 tests/scripts/mp4_fixtures.py "$W/seed/mp4" >/dev/null
python3 tests/scripts/riff_fixtures.py "$W/seed/riff" >/dev/null
python3 tests/scripts/ogg_fixtures.py "$W/seed/ogg" >/dev/null
FORMATS="flac:demo/alpha/plain.flac mp3:demo/beta/mp3s/v24.mp3 ogg-vorbis:demo/ogg/vorbis.ogg
opus:demo/ogg/opus.opus m4a-aac:mp4/aac.m4a m4a-aac-faststart:mp4/aac-faststart.m4a
m4a-alac:mp4/alac.m4a m4b:mp4/book.m4b wav-id3:riff/id3.wav wav-info:riff/info.wav
aiff:riff/id3.aiff ogg-flac:ogg/flac.oga speex:ogg/speech.spx flac-again:demo/alpha/plain.flac"
for entry in $FORMATS; do
  name=${entry%%:*}
  src=$W/seed/${entry#*:}
  ext=${src##*.}
  lib=$W/lib/$name
  for ((i = 0; i < N; i++)); do
    d=$lib/a$((i / 100))
    [ -d "$d" ] || mkdir -p "$d"
    cp "$src" "$d/$i.$ext"
  done
  cat > "$W/$name.toml" <<TOML
state_dir = "$W/state-$name"
[[origin]]
name = "bench"
kind = "local"
root = "$lib"
TOML
  find "$lib" -type f -exec cat {} + >/dev/null   # warm the page cache
  rm -rf "$W/state-$name"
  t0=$(date +%s.%N)
  out=$("$BIN" scan --manifest "$W/$name.toml" 2>/dev/null | head -1)
  t1=$(date +%s.%N)
  python3 - "$name" "$N" "$t0" "$t1" "$W/flac_s" "$(stat -c %s "$src")" "$out" <<'PY'
import os, re, sys
name, n, t0, t1, flac_file, size, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6]), sys.argv[7]
m = re.search(r" in ([0-9.]+)(ms|s|µs)$", out)
scan = float(m.group(1)) / {"ms": 1e3, "s": 1.0, "µs": 1e6}[m.group(2)]
if name.startswith("flac"):
    best = min(scan, float(open(flac_file).read())) if os.path.exists(flac_file) else scan
    open(flac_file, "w").write(str(best))
flac = float(open(flac_file).read())
print(f"scan_{name:<18} files={n} bytes_each={size:<8} scan_s={scan:6.3f} files_per_s={n / scan:7.0f} "
      f"wall_s={t1 - t0:5.2f} ratio_vs_flac={flac / scan:5.2f}")
PY
  rm -rf "$lib"
done
