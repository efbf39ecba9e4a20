#!/usr/bin/env bash
# Serving at the limit (issue 18): every figure of the issue's table in one run, each with
# its ratio and target, from the scripts that measure them (see each for the method):
#   bench/walks.sh TRACKS  the first mount without a snapshot; `ls -R` and `find -newer`
#                          vs the local disk (and a bindfs view of it, the FUSE reference)
#   bench/remote.sh        warm reads from the chunk cache vs a local copy; a 1 GB
#                          prefetch with and without write-behind (throughput, peak Dirty)
#   bench/edits.sh         `musefs tag set` until the mount shows the change; idle CPU
# The whole output of each script goes to the work folder's logs; the table at the end.
#   bench/limits.sh [TRACKS]   (default 1000000)
# Needs root (mounts, drop_caches), FUSE, moto (pip), sox and flac; bindfs optional.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
LOG=$(mktemp -d /tmp/musefs-bench-limits.XXXXXX)
echo "logs in $LOG"
bash bench/walks.sh "$N" >"$LOG/walks.log" 2>&1 || { tail -20 "$LOG/walks.log"; exit 1; }
bash bench/remote.sh 200 1024 >"$LOG/remote.log" 2>&1 || { tail -20 "$LOG/remote.log"; exit 1; }
bash bench/edits.sh 20 >"$LOG/edits.log" 2>&1 || { tail -20 "$LOG/edits.log"; exit 1; }
python3 - "$LOG" <<'PY'
import re, sys
log = sys.argv[1]
text = {k: open(f"{log}/{k}.log").read() for k in ("walks", "remote", "edits")}
def grab(name, pattern):
    m = re.search(pattern, text[name])
    return m.groups() if m else None
rows = []
for walk in ("ls_R", "find_newer"):
    for run in ("first", "again"):
        g = grab("walks", rf"{walk}_{run} tracks=(\d+) mount_s=(\S+) local_s=(\S+) ratio=(\S+)(?: bindfs_s=\S+ vs_bindfs=(\S+))?")
        if g:
            ref = f", {g[4]}x bindfs" if g[4] else ""
            target = {"ls_R_first": "<= 3x", "ls_R_again": "<= 1.5x"}.get(f"{walk}_{run}", "-")
            rows.append((f"{walk.replace('_', ' ')} {run} ({int(g[0]):,} tracks)", f"{g[1]} s vs {g[2]} s local",
                         f"{g[3]}x local{ref}", target))
g = grab("remote", r"warm read  medians: musefs (\S+) MB/s, local (\S+) MB/s -> (\S+)x")
if g:
    rows.append(("warm read, chunk cache vs local copy", f"{g[0]} vs {g[1]} MB/s", f"{g[2]}x", ">= 0.9x"))
g = grab("remote", r"prefetch medians: write-behind (\S+) MiB/s \(peak Dirty max (\d+) MiB\), without (\S+) MiB/s \(peak Dirty max (\d+) MiB\) -> (\S+)x")
if g:
    rows.append(("1 GB prefetch, write-behind vs not", f"{g[0]} vs {g[2]} MiB/s; Dirty {g[1]} vs {g[3]} MiB",
                 f"{g[4]}x", ">= 0.9x, Dirty <= 64 MiB"))
g = grab("edits", r"edit_visible_after_command runs=\d+ median_ms=(\S+) max_ms=(\S+)")
i = grab("edits", r"mount_idle_cpu seconds=10 cpu_s=\S+ share=(\S+)")
if g:
    rows.append(("`tag set` until the mount shows it", f"median {g[0]} ms, max {g[1]} ms",
                 f"idle CPU {float(i[0]) * 100:.2f}%" if i else "-", "< 50 ms"))
g = grab("walks", r"first_mount tracks=(\d+) seconds=(\S+)")
if g:
    rows.append((f"first mount, no snapshot ({int(g[0]):,} tracks, catalog not cached)", f"{g[1]} s", "-", "< 3 s"))
w = [max(len(r[k]) for r in rows) for k in range(4)]
print(f"{'figure':<{w[0]}}  {'measured':<{w[1]}}  {'ratio':<{w[2]}}  target")
for r in rows:
    print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")
PY
