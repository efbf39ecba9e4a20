#!/usr/bin/env bash
# Saving tags through a writable mount vs on a local file (issue 17), per editor.
# One library of 30-second tracks (FLAC, MP3, Ogg Vorbis, Opus, M4A, WAV) made by the
# real encoders; each editor saves a served file (its title changed, or a 1.9 MB
# picture added: the whole file shifts) and the same edit is made on a local copy of
# the served file, in the same run, R times each (median). Prints per editor: what it
# did at the syscall level (strace: opens for writing, O_TRUNC, ftruncate, files
# created beside it, renames, bytes written), the median save time on the local copy
# and through the mount, and their ratio (mount / local; 1.00 = as fast as local).
#   bench/editors.sh [R]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}
. bench/common.sh editors
mkdir -p "$W/lib" "$W/local"
sox -n -r 44100 -c 2 -b 16 "$W/tone.wav" synth 30 sine 440 sine 660 2>/dev/null
flac -s -f -T ARTIST=Ann -T ALBUM=Alpha -T TITLE=One -T TRACKNUMBER=1 "$W/tone.wav" -o "$W/lib/a.flac"
lame --quiet -b 192 --tt Two --ta Ann --tl Alpha --tn 2 "$W/tone.wav" "$W/lib/b.mp3"
oggenc -Q -t Three -a Ann -l Alpha -N 3 "$W/tone.wav" -o "$W/lib/c.ogg"
opusenc --quiet --title Four --artist Ann --album Alpha --tracknumber 4 "$W/tone.wav" "$W/lib/d.opus"
ffmpeg -v error -i "$W/tone.wav" -c:a aac -metadata title=Five -metadata artist=Ann -metadata album=Alpha \
  -metadata track=5 "$W/lib/e.m4a"
ffmpeg -v error -i "$W/tone.wav" -metadata title=Six -metadata artist=Ann -metadata album=Alpha \
  -metadata track=6 "$W/lib/f.wav"
ffmpeg -v error -y -f lavfi -i "color=c=gray:s=1600x1200,noise=alls=100:allf=t" -frames:v 1 -q:v 1 "$W/big.jpg"
bench_library_mount 'mode = "synthesis"
writable = true
sync_interval = "off"
template = "$track"
[format.mp3]
id3v2_version = "2.3"'

# name | served file (the template names files by track number) | command (FILE and
# @RUN@, the run number, substituted)
EDITORS=(
  "mutagen-flac-title|01.flac|python3 tests/scripts/mutagen_save.py small FILE Title-@RUN@"
  "mutagen-flac-picture|01.flac|python3 tests/scripts/mutagen_save.py picture FILE $W/big.jpg Album-@RUN@"
  "metaflac-set-tag|01.flac|metaflac --set-tag=COMMENT=run-@RUN@ FILE"
  "metaflac-picture|01.flac|metaflac --remove --block-type=PICTURE --dont-use-padding FILE && metaflac --import-picture-from=$W/big.jpg FILE"
  "mutagen-mp3-v24|02.mp3|python3 tests/scripts/mutagen_save.py small FILE Title-@RUN@"
  "mutagen-mp3-picture|02.mp3|python3 tests/scripts/mutagen_save.py picture FILE $W/big.jpg Album-@RUN@ --id3v23"
  "id3v2|02.mp3|id3v2 --TCOM run-@RUN@ FILE"
  "eyeD3|02.mp3|eyeD3 -Q --comment run-@RUN@ FILE"
  "vorbiscomment-w|03.ogg|vorbiscomment -w -t TRACKNUMBER=3 -t ARTIST=Ann -t ALBUM=Alpha -t TITLE=Title-@RUN@ FILE"
  "mutagen-ogg-picture|03.ogg|python3 tests/scripts/mutagen_save.py picture FILE $W/big.jpg Album-@RUN@"
  "mutagen-opus-title|04.opus|python3 tests/scripts/mutagen_save.py small FILE Title-@RUN@"
  "AtomicParsley|05.m4a|AtomicParsley FILE --comment run-@RUN@ --overWrite"
  "mutagen-m4a-picture|05.m4a|python3 tests/scripts/mutagen_save.py picture FILE $W/big.jpg Album-@RUN@"
  "mutagen-wav-title|06.wav|python3 tests/scripts/mutagen_save.py small FILE Title-@RUN@"
)

# Seconds one command takes (the command's own output discarded).
timed() {
  local t0 t1
  t0=$EPOCHREALTIME
  bash -c "$1" >/dev/null 2>&1 || echo "FAILED: $1" >&2
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

for entry in "${EDITORS[@]}"; do
  IFS='|' read -r name file cmd <<<"$entry"
  served=$MNT/$file
  local_copy=$W/local/$file
  # What the editor does at the syscall level, on the served file.
  c=${cmd//FILE/\"$served\"}
  size=$(stat -c %s "$served")
  strace -f -qq -o "$W/trace" -e trace=openat,creat,rename,renameat,renameat2,ftruncate,truncate,write,pwrite64,writev,copy_file_range,sendfile,unlink,unlinkat \
    bash -c "${c//@RUN@/0}" >/dev/null 2>&1 || true
  summary=$(python3 - "$W/trace" "$served" "$size" <<'PY'
import os, re, sys
trace, target, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
dirname = target.rsplit("/", 1)[0]
fds, written, opened, created, renames, truncs, o_trunc = {}, {}, 0, 0, 0, 0, 0
for line in open(trace):
    m = re.search(r'openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+)[^)]*\) = (\d+)', line)
    if m:
        path, flags, fd = m.group(1), m.group(2), m.group(3)
        pid = line.split()[0]
        if "O_WRONLY" in flags or "O_RDWR" in flags:
            if os.path.basename(path) == os.path.basename(target):
                opened += 1
                o_trunc += "O_TRUNC" in flags
                fds[(pid, fd)] = "target"
            elif os.path.dirname(os.path.abspath(path)) == dirname:
                created += 1
                fds[(pid, fd)] = "beside"
        continue
    m = re.search(r'^(\d+)\s+(?:write|pwrite64|writev)\((\d+), .*\) = (\d+)', line) or \
        re.search(r'^(\d+)\s+(?:copy_file_range|sendfile)\(\d+, (?:NULL, )?(\d+).*\) = (\d+)', line)
    if m and (m.group(1), m.group(2)) in fds:
        written[fds[(m.group(1), m.group(2))]] = written.get(fds[(m.group(1), m.group(2))], 0) + int(m.group(3))
        continue
    if re.search(r'rename(at2?)?\(', line) and dirname in line and "= 0" in line:
        renames += 1
    if "ftruncate(" in line or re.search(r'\btruncate\(', line):
        truncs += 1
# In place: some bytes of the file rewritten where they are; a full rewrite: the file
# truncated or (nearly) every byte written again; temp+rename: a new file renamed over it.
full = o_trunc or written.get("target", 0) >= 0.9 * size
kind = "temp+rename" if renames else ("full rewrite" if full else "in place")
print(f"{kind:<12} opens_w={opened} o_trunc={o_trunc} ftruncate={truncs} created_beside={created} "
      f"renames={renames} written_target={written.get('target', 0)} written_beside={written.get('beside', 0)}")
PY
)
  local_t=()
  mount_t=()
  for ((i = 1; i <= R; i++)); do
    cp "$served" "$local_copy"   # the served file as it is now, as a local file
    c=${cmd//FILE/\"$local_copy\"}
    local_t+=("$(timed "${c//@RUN@/$i}")")
    c=${cmd//FILE/\"$served\"}
    mount_t+=("$(timed "${c//@RUN@/$i}")")
  done
  python3 - "$name" "$summary" "${local_t[*]}" "${mount_t[*]}" <<'PY'
import statistics, sys
name, summary, lt, mt = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
l, m = statistics.median(map(float, lt)), statistics.median(map(float, mt))
print(f"save_{name:<22} {summary}  local_ms={l * 1e3:7.1f} mount_ms={m * 1e3:7.1f} ratio={m / l:5.2f}")
PY
done
refused=$(grep -c "refused a save" "$W/mount.log" || true)
saved=$(grep -c "saved through the mount" "$W/mount.log" || true)
echo "saves_stored=$saved refused=$refused (every save above is expected to be stored: refused=0)"
