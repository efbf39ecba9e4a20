#!/usr/bin/env bash
# How soon a running mount shows an edit (issue 18: < 50 ms, no polling cost when idle).
# The demo library in synthesis mode, the mount's catalog poll set to an hour (so only
# the wake-up socket can bring an edit in); R times: `musefs tag set` renames a track,
# and the clock runs until the new name is in the mount. Prints the median and worst
# of (a) the command's exit to the name showing, (b) the command's start to it, and the
# command alone; and the mount's CPU time over 10 idle seconds (the cost of waiting).
#   bench/edits.sh [R]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-20}
. bench/common.sh edits
python3 examples/demo/make_library.py "$W/lib" >/dev/null
bench_library_mount 'mode = "synthesis"
refresh_interval_ms = 3600000
sync_interval = "off"
watch = false
template = "$albumartist/$album/$title"'
python3 - "$BIN" "$W/m.toml" "$MNT" "$R" "$PID" <<'PY'
import os, statistics, subprocess, sys, time
bin_, manifest, mnt, runs, pid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
out = subprocess.run([bin_, "ls", "--manifest", manifest], capture_output=True, text=True, check=True).stdout
path = next(l for l in out.splitlines() if l.endswith(".flac"))
after_exit, total, command = [], [], []
for i in range(runs):
    title = f"Edit {i}"
    new = os.path.join(os.path.dirname(path), title + ".flac")
    t0 = time.perf_counter()
    subprocess.run([bin_, "tag", "set", "--manifest", manifest, path, f"title={title}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t1 = time.perf_counter()
    while not os.path.exists(os.path.join(mnt, new)):
        if time.perf_counter() - t1 > 10:
            sys.exit(f"the edit did not show within 10 s: {new}")
        time.sleep(0.0005)
    t2 = time.perf_counter()
    after_exit.append(t2 - t1); total.append(t2 - t0); command.append(t1 - t0)
    path = new
c0 = cpu(); time.sleep(10); idle = cpu() - c0
ms = lambda xs: f"median_ms={statistics.median(xs) * 1e3:.1f} max_ms={max(xs) * 1e3:.1f}"
print(f"edit_visible_after_command runs={runs} {ms(after_exit)} target_ms=50")
print(f"edit_visible_from_command_start {ms(total)}")
print(f"edit_command_alone {ms(command)}")
print(f"mount_idle_cpu seconds=10 cpu_s={idle:.3f} share={idle / 10:.4f}")
PY
