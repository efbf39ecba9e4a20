#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 20) each, after seeding the corpora from
# the demo library (real encoded files) and the project's manifests and templates.
# Crashes land in fuzz/artifacts/TARGET/; the run fails on the first one.
#   fuzz/run.sh 300            # five minutes per target, while developing
#   fuzz/run.sh 20 template    # one target
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-20}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(format_flac format_mp3 format_ogg format_mp4 format_riff template manifest snapshot owner)
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: no nightly toolchain (cargo-fuzz needs it); skipped" >&2
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet

seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
python3 ../examples/demo/make_library.py "$seeds/lib" >/dev/null
mkdir -p corpus/{format_flac,format_mp3,format_ogg,format_mp4,format_riff,template,manifest,snapshot,owner}
find "$seeds/lib" -name '*.flac' -exec cp {} corpus/format_flac/ \;
find "$seeds/lib" -name '*.mp3' -exec cp {} corpus/format_mp3/ \;
find "$seeds/lib" \( -name '*.ogg' -o -name '*.opus' \) -exec cp {} corpus/format_ogg/ \;
python3 ../tests/scripts/mp4_fixtures.py "$seeds/mp4" >/dev/null
cp "$seeds"/mp4/*.m4? corpus/format_mp4/
python3 ../tests/scripts/ogg_fixtures.py "$seeds/ogg" >/dev/null
cp "$seeds"/ogg/*.oga "$seeds"/ogg/*.spx corpus/format_ogg/
python3 ../tests/scripts/riff_fixtures.py "$seeds/riff" >/dev/null
# WAV/AIFF seeds cut short: the chunk structure matters, not seconds of samples.
for f in "$seeds"/riff/*; do head -c 65536 "$f" > "corpus/format_riff/$(basename "$f")"; done
i=0
while IFS= read -r t; do
    i=$((i + 1))
    printf '%s\ntitle=Song\nartist=A/B\ntrack=3/12\ndisc=1\nalbum=..\n' "$t" > "corpus/template/seed$i"
done <<'TEMPLATES'
${albumartist|artist|"Unknown Artist"}/${album|dirname|"Unknown Album"}/[$disc-][$track ]${title|filename}
$albumartist/$album/[$disc-]$track $title
%lower{$artist}/%left{$album,3}/%pad{$track,4} %title{$title}
${genre|"Unknown"}/$artist - $title
%if{$disc,CD$disc/}%ifdef{album,$album,none}/%first{$artist} %right{$title,5}
\$$$ %% [x[$y]z] ${a|b|"c"}
TEMPLATES
cat > corpus/manifest/seed1 <<'TOML'
state_dir = "state"
mode = "synthesis"
template = "$albumartist/$album/$track $title"
sync_interval = "15m"
prune_limit = 0.5
[cache]
max_size = "2 GiB"
[[origin]]
name = "main"
kind = "local"
root = "lib"
[format.mp3]
id3v2_version = "2.3"
TOML
cat > corpus/manifest/seed2 <<'TOML'
state_dir = "/tmp/s"
[[view]]
name = "By Artist"
template = "$artist/$title"
[[view]]
name = "By Genre"
template = "$genre/$title"
[[origin]]
name = "s3"
kind = "s3"
bucket = "music"
endpoint = "http://127.0.0.1:9000"
TOML
# A snapshot body: no view roots, no nodes; and one with a root and a file.
printf '\0\0\0\0\0\0\0\0\1\0\0\0\1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0' > corpus/snapshot/seed1
printf 'MUSEFSOW\1\0\0\0' > corpus/owner/seed1

for t in "${targets[@]}"; do
    echo "fuzz: $t for ${secs}s" >&2
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 -max_len=262144 2>"$seeds/$t.log" || {
        # (A build error matches none of these: its last lines are shown instead.)
        { grep -v '^\s*\[' "$seeds/$t.log" | grep -E 'panicked|ERROR|SUMMARY|assertion|left|right|Reproduce|cargo fuzz run' \
            || tail -n 20 "$seeds/$t.log"; } | cut -c1-300 | head -20 >&2 || true
        echo "fuzz: $t FAILED; the input (if it got as far as running) is in fuzz/artifacts/$t/" >&2
        exit 1
    }
    grep -E '^Done|#[0-9]+.*DONE' "$seeds/$t.log" | tail -1 >&2 || true
done
